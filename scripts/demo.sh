#!/usr/bin/env bash
# Runs tidegate on this machine with its embedded defaults: tidegate-server with its own MQTT broker
# and SQLite file, and one agent reading this host's real package databases (read only). Prints the
# fleet table. Then, when dpkg-deb is installed and TIDEGATE_DEMO_APPLY is not 0, it runs
# scripts/demo-apply.sh, which applies a bundle to a sandbox root and rolls it back with a second
# server and agent of its own. The first server and agent keep running until Ctrl-C; with --once
# the script stops there.
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
bin=target/debug

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

server_args=(--db "$work_dir/tidegate.db" --http-listen "$http_listen" --mqtt-listen "$mqtt_listen")
[[ -n $trust_root ]] && server_args+=(--trust-root "$trust_root")
echo "==> starting tidegate-server (database $work_dir/tidegate.db, HTTP $http_listen, MQTT $mqtt_listen)"
"$bin/tidegate-server" "${server_args[@]}" 2>"$work_dir/server.log" &
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
echo "Logs and data are in $work_dir. Try:"
echo "  TIDEGATE_SERVER=$TIDEGATE_SERVER $bin/tidegate fleet show $(hostname)"
echo "  curl -s $TIDEGATE_SERVER/api/v1/agents"
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
