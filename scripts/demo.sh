#!/usr/bin/env bash
# Runs tidegate on this machine with its embedded defaults: tidegate-server with its own MQTT broker
# and SQLite file, and one agent reading this host's real package databases (read only). Prints the
# fleet table. Then, when dpkg-deb is installed and TIDEGATE_DEMO_APPLY is not 0, it runs
# scripts/demo-apply.sh, which applies a bundle to a sandbox root and rolls it back with a second
# server and agent of its own. The first server and agent keep running until Ctrl-C; with --once
# the script stops there.
# The server's first admin token is kept in the working directory as admin.token (mode 0600).
set -euo pipefail

cd "$(dirname "$0")/.."
once=false
[[ "${1:-}" == "--once" ]] && once=true

http_listen=${TIDEGATE_HTTP_LISTEN:-127.0.0.1:8740}
mqtt_listen=${TIDEGATE_MQTT_LISTEN:-127.0.0.1:1884}
work_dir=${TIDEGATE_DEMO_DIR:-$(mktemp -d -t tidegate-demo.XXXXXX)}
trust_root=${TIDEGATE_TRUST_ROOT:-}
tier=${TIDEGATE_TIER:-default}
if [[ -n $trust_root && ! -f $trust_root ]]; then
  echo "error: TIDEGATE_TRUST_ROOT=$trust_root is not a file; export one with tidegate root export" >&2
  exit 1
fi
mkdir -p "$work_dir"

echo "==> building tidegate-server, tidegate and tidegate-agent"
cargo build --quiet -p tidegate-server -p tidegate-agent
# Cargo reports the target directory it uses, which follows CARGO_TARGET_DIR and build.target-dir.
target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
bin=$target_dir/debug

for address in "$http_listen" "$mqtt_listen"; do
  if (exec 3<>"/dev/tcp/${address%:*}/${address##*:}") 2>/dev/null; then
    echo "error: $address is already in use; set TIDEGATE_HTTP_LISTEN or TIDEGATE_MQTT_LISTEN to a free address" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token_file=$work_dir/admin.token
server_args=(--db "$work_dir/tidegate.db" --http-listen "$http_listen" --mqtt-listen "$mqtt_listen"
  --admin-token-file "$token_file")
[[ -n $trust_root ]] && server_args+=(--trust-root "$trust_root")
echo "==> starting tidegate-server (database $work_dir/tidegate.db, HTTP $http_listen, MQTT $mqtt_listen)"
"$bin/tidegate-server" "${server_args[@]}" >"$work_dir/server.log" 2>&1 &
pids+=($!)

cat >"$work_dir/agent.toml" <<TOML
root_dir = "/"
state_dir = "$work_dir/agent"
tier = "$tier"
trust_root_file = "$trust_root"

[mqtt]
broker_url = "mqtt://$mqtt_listen"
TOML
echo "==> starting tidegate-agent (reads / , state in $work_dir/agent)"
"$bin/tidegate-agent" run --config "$work_dir/agent.toml" 2>"$work_dir/agent.log" &
pids+=($!)

export TIDEGATE_SERVER="http://$http_listen"
# The server writes the token file on the first start of a database, before it listens.
for _ in $(seq 1 150); do
  [[ -s $token_file ]] && break
  sleep 0.2
done
if [[ ! -s $token_file ]]; then
  echo "error: tidegate-server wrote no admin token to $token_file; logs:" >&2
  tail -n 20 "$work_dir/server.log" >&2
  exit 1
fi
TIDEGATE_TOKEN=$(head -n 1 "$token_file")
export TIDEGATE_TOKEN
for _ in $(seq 1 150); do
  # The agent's status arrives before its first report; wait for the report.
  if "$bin/tidegate" fleet list --json 2>/dev/null | grep -q '"last_report_unix_s":[0-9]'; then
    break
  fi
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: a process stopped early; logs:" >&2
      tail -n 20 "$work_dir/server.log" "$work_dir/agent.log" >&2
      exit 1
    fi
  done
  sleep 0.2
done

echo
"$bin/tidegate" fleet list
echo
echo "Logs and data are in $work_dir; the admin token is in $token_file. Try:"
echo "  export TIDEGATE_SERVER=$TIDEGATE_SERVER TIDEGATE_TOKEN=\$(cat $token_file)"
echo "  $bin/tidegate fleet show $(hostname)"
echo "  $bin/tidegate audit verify"
echo "  curl -s -H \"Authorization: Bearer \$TIDEGATE_TOKEN\" $TIDEGATE_SERVER/api/v1/agents"
echo "  open $TIDEGATE_SERVER/ in a browser for the web console (sign in with the admin token)"
if [[ ${TIDEGATE_DEMO_APPLY:-1} != 0 ]] && command -v dpkg-deb >/dev/null; then
  echo
  echo "==> scripts/demo-apply.sh: a bundle applied to a sandbox root and rolled back"
  TIDEGATE_DEMO_DIR="$work_dir/apply" scripts/demo-apply.sh
fi
if $once; then
  exit 0
fi
echo "Server and agent keep running; press Ctrl-C to stop them."
wait
