#!/usr/bin/env bash
# The whole tidegate loop on this machine, with the embedded defaults: tidegate-server with its own
# MQTT broker and SQLite file, and two agents.
#
#  1. An agent reads this host's real package databases (read only; it pins no trust root, so it
#     takes no bundle) and the fleet table shows what it found.
#  2. A second agent looks after a sandbox root in the working directory (tier demo-sandbox): a
#     few files, two accounts and a test package installed with dpkg --root.
#  3. Security signs a four-step bundle with two keys (the tier needs two); OT signs a maintenance
#     window for the tier that opens a little later (30 s; TIDEGATE_DEMO_WINDOW_DELAY_SECONDS).
#  4. IT starts a rollout. The agent keeps the bundle waiting until the window opens, then applies
#     it; the journal shows each step. Then IT rolls it back and the sandbox is as before.
#
# Server and agents keep running until Ctrl-C, for the web console at http://127.0.0.1:8740/;
# with --once the script stops after the rollback. Nothing outside the working directory changes.
set -euo pipefail

cd "$(dirname "$0")/.."
once=false
[[ "${1:-}" == "--once" ]] && once=true

http_listen=${TIDEGATE_HTTP_LISTEN:-127.0.0.1:8740}
mqtt_listen=${TIDEGATE_MQTT_LISTEN:-127.0.0.1:1884}
work=${TIDEGATE_DEMO_DIR:-$(mktemp -d -t tidegate-demo.XXXXXX)}
window_delay=${TIDEGATE_DEMO_WINDOW_DELAY_SECONDS:-30}
tier=demo-sandbox
mkdir -p "$work"

for tool in dpkg dpkg-deb dpkg-query; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install dpkg)" >&2; exit 1; }
done
for address in "$http_listen" "$mqtt_listen"; do
  if (exec 3<>"/dev/tcp/${address%:*}/${address##*:}") 2>/dev/null; then
    echo "error: $address is already in use; set TIDEGATE_HTTP_LISTEN or TIDEGATE_MQTT_LISTEN to a free address" >&2
    exit 1
  fi
done

step() { echo; echo "==> $*"; }

step "building tidegate-server, tidegate and tidegate-agent"
cargo build --quiet -p tidegate-server -p tidegate-agent
# Cargo reports the target directory it uses, which follows CARGO_TARGET_DIR and build.target-dir.
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target/debug
T=$bin/tidegate

step "keys and trust root in $work/keys: one root key, two security keys, one OT key"
mkdir -p "$work/keys"
(
  cd "$work/keys"
  for name in root security-1 security-2 ot; do
    "$T" keys generate --role "${name%-*}" --out "$name.key" >/dev/null
  done
  "$T" root new --out root.json >/dev/null
  "$T" root add-key root.json --key root.key --key security-1.key --key security-2.key --key ot.key >/dev/null
  for role in root security ot; do "$T" root set-threshold root.json --role "$role" --count 1 >/dev/null; done
  "$T" root set-threshold root.json --role security --count 2 --tier "$tier" >/dev/null
  "$T" root sign root.json --key root.key >/dev/null
  "$T" root export root.json --out root.tgrt >/dev/null
)
echo "tier $tier needs two security signatures; every other tier needs one"

step "sandbox root $work/root: accounts, sshd_config, motd, hello-tg 1.0-1 installed"
root=$work/root
mkdir -p "$root/etc/ssh" "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
  "$root/var/lib/dpkg/triggers" "$root/var/cache/apt/archives" "$root/var/log"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n' >"$root/etc/passwd"
printf 'root:x:0:\nalice:x:1000:\nshadow:x:42:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\nalice:$y$j9T$salt$hash:19800:0:99999:7:::\n' >"$root/etc/shadow"
chmod 0640 "$root/etc/shadow"
printf 'Port 22\nPasswordAuthentication yes\n' >"$root/etc/ssh/sshd_config"
printf 'welcome\n' >"$root/etc/motd"
printf 'PRETTY_NAME="tidegate sandbox"\nNAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n' >"$root/etc/os-release"
build_deb() {
  local version=$1 tree=$work/debs/hello-tg-$1
  mkdir -p "$tree/DEBIAN" "$tree/usr/share/hello-tg"
  printf 'Package: hello-tg\nVersion: %s\nArchitecture: all\nMaintainer: demo <demo@example.org>\nDescription: tidegate demo package\n' \
    "$version" >"$tree/DEBIAN/control"
  printf 'hello from %s\n' "$version" >"$tree/usr/share/hello-tg/greeting"
  dpkg-deb --build --root-owner-group -Zgzip "$tree" "$work/debs/hello-tg_${version}_all.deb" >/dev/null
}
build_deb 1.0-1
build_deb 1.0-2
dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-not-root --force-script-chrootless \
  -i "$work/debs/hello-tg_1.0-1_all.deb" >/dev/null
sandbox_state() {
  echo "sandbox: motd \"$(head -n1 "$root/etc/motd")\"; $(grep PasswordAuthentication "$root/etc/ssh/sshd_config");" \
    "alice's password field $(grep '^alice' "$root/etc/shadow" | cut -d: -f2 | cut -c1-4)...;" \
    "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package} ${Version} ${Status}' hello-tg)"
}
sandbox_state

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

token_file=$work/admin.token
step "starting tidegate-server (database $work/tidegate.db, HTTP $http_listen, MQTT $mqtt_listen)"
"$bin/tidegate-server" --db "$work/tidegate.db" --http-listen "$http_listen" --mqtt-listen "$mqtt_listen" \
  --trust-root "$work/keys/root.tgrt" --admin-token-file "$token_file" >"$work/server.log" 2>&1 &
pids+=($!)

cat >"$work/host-agent.toml" <<TOML
# Reads this host's package databases and reports them. It pins no trust root, so it takes no
# bundle: the demonstration changes nothing on this host.
root_dir = "/"
state_dir = "$work/host-agent"

[mqtt]
broker_url = "mqtt://$mqtt_listen"
TOML
cat >"$work/sandbox-agent.toml" <<TOML
root_dir = "$root"
state_dir = "$work/sandbox-agent"
tier = "$tier"
trust_root_file = "$work/keys/root.tgrt"

[mqtt]
broker_url = "mqtt://$mqtt_listen"

[reports]
interval_seconds = 2

# Bundles start only inside a window of a schedule that OT signed for the tier.
[windows]
require_schedule = true

# A demonstration machine need not run a time service that marks the kernel clock synchronised;
# keep this true on real hosts.
[clock]
require_os_synchronised = false
TOML
step "starting two agents: one reads / (tier default), one looks after the sandbox (tier $tier)"
"$bin/tidegate-agent" run --config "$work/host-agent.toml" 2>"$work/host-agent.log" &
pids+=($!)
"$bin/tidegate-agent" run --config "$work/sandbox-agent.toml" 2>"$work/sandbox-agent.log" &
pids+=($!)

export TIDEGATE_SERVER="http://$http_listen"
for _ in $(seq 1 150); do
  [[ -s $token_file ]] && break
  sleep 0.2
done
if [[ ! -s $token_file ]]; then
  echo "error: tidegate-server wrote no admin token to $token_file; logs:" >&2
  tail -n 20 "$work/server.log" >&2
  exit 1
fi
TIDEGATE_TOKEN=$(head -n 1 "$token_file")
export TIDEGATE_TOKEN

check_alive() {
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: a process stopped early; logs:" >&2
      tail -n 20 "$work"/*.log >&2
      exit 1
    fi
  done
}
# Waits until both agents have reported, and sets sandbox_agent to the sandbox agent's id.
for _ in $(seq 1 300); do
  check_alive
  fleet=$("$T" fleet list --json 2>/dev/null || true)
  reported=$(grep -o '"last_report_unix_s":[0-9]' <<<"$fleet" | wc -l || true)
  if [[ $reported -ge 2 ]]; then break; fi
  sleep 0.2
done
sandbox_agent=$(python3 -c 'import json,sys; print(next(a["agent_id"] for a in json.load(sys.stdin)["agents"] if a["tier"] == sys.argv[1]))' \
  "$tier" <<<"$("$T" fleet list --json)")
"$T" fleet assign "$sandbox_agent" --owner plant-it >/dev/null
echo
"$T" fleet list

step "security: a bundle for tier $tier, signed by two keys"
printf 'managed by tidegate\n' >"$work/motd"
cat >"$work/steps.json" <<'JSON'
[
  {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 420, "owner": "root", "group": "root"}},
  {"EnsureConfigLine": {"path": "etc/ssh/sshd_config", "match_prefix": "PasswordAuthentication",
                        "line": "PasswordAuthentication no"}},
  {"UpgradeDeb": {"package": "hello-tg", "version": "1.0-2", "payload": "hello-tg_1.0-2_all.deb"}},
  {"LockAccount": {"user": "alice"}}
]
JSON
now=$(date -u +%s)
"$T" bundle new --out "$work/bundle.tgbd" --id demo-hardening --stream demo --sequence 1 --tier "$tier" \
  --not-before "$(date -u -d @$((now - 3600)) +%Y-%m-%dT%H:%M:%SZ)" \
  --expires "$(date -u -d @$((now + 86400)) +%Y-%m-%dT%H:%M:%SZ)" \
  --steps "$work/steps.json" --payload "motd=$work/motd" \
  --payload "hello-tg_1.0-2_all.deb=$work/debs/hello-tg_1.0-2_all.deb" >/dev/null
"$T" bundle sign "$work/bundle.tgbd" --key "$work/keys/security-1.key" >/dev/null
"$T" bundle sign "$work/bundle.tgbd" --key "$work/keys/security-2.key" >/dev/null
hash=$("$T" bundle inspect --json "$work/bundle.tgbd" | sed -n 's/.*"bundle_hash": *"\([0-9a-f]*\)".*/\1/p')
echo "tidegate-agent plan, run against the sandbox (it changes nothing):"
"$bin/tidegate-agent" plan "$work/bundle.tgbd" --root "$root"
"$T" bundle publish "$work/bundle.tgbd" --publisher security@demo

window_start=$(( $(date -u +%s) + window_delay ))
window_end=$(( window_start + 3600 ))
step "OT: a maintenance window for tier $tier from $(date -u -d @$window_start +%H:%M:%S) UTC, for one hour"
"$T" windows new --out "$work/window.json" --tier "$tier" --zone Europe/Berlin >/dev/null
"$T" windows add-once "$work/window.json" --start "$(date -u -d @$window_start +%Y-%m-%dT%H:%M:%SZ)" \
  --end "$(date -u -d @$window_end +%Y-%m-%dT%H:%M:%SZ)" >/dev/null
"$T" windows sign "$work/window.json" --key "$work/keys/ot.key" >/dev/null
"$T" windows export "$work/window.json" --out "$work/window.tgws" >/dev/null
"$T" windows publish "$work/window.tgws"
"$T" windows list --tier "$tier" --days 1

step "IT: a rollout of demo-hardening; the agent keeps it waiting until the window opens"
"$T" rollout start demo-hardening --canary 1 --failure-threshold 1 --on-failure pause --grace 10m
# Waits until `tidegate fleet show` prints a demo-hardening line matching $1, for up to $2 seconds.
wait_for_outcome() {
  local deadline=$(( $(date -u +%s) + $2 ))
  while (( $(date -u +%s) < deadline )); do
    check_alive
    if "$T" fleet show "$sandbox_agent" 2>/dev/null | grep -q "demo-hardening .*$1"; then
      return 0
    fi
    sleep 0.5
  done
  echo "error: timed out waiting for '$1'; logs:" >&2
  tail -n 20 "$work/server.log" "$work/sandbox-agent.log" >&2
  exit 1
}
wait_for_outcome "waiting" 30
"$T" fleet show "$sandbox_agent" | grep -E "demo-hardening" | head -n 1
sandbox_state
echo "(unchanged: the window opens at $(date -u -d @$window_start +%H:%M:%S) UTC)"
wait_for_outcome ") applied" $(( window_delay + 60 ))
echo
"$T" rollout status
echo
"$T" fleet show "$sandbox_agent" | sed -n '/^Bundles/,/^$/p'
sandbox_state
echo
echo "the agent's journal ($work/sandbox-agent/journal):"
"$bin/tidegate-agent" journal --state-dir "$work/sandbox-agent"

step "IT: roll it back; the agent reverts every step from its journal and kept files"
"$T" bundle rollback "$hash" --agent "$sandbox_agent"
wait_for_outcome "rolled-back" 60
sandbox_state
echo
"$T" audit verify

echo
echo "Logs and data are in $work; the admin token is in $token_file."
echo "While the server runs (without --once), try:"
echo "  export TIDEGATE_SERVER=$TIDEGATE_SERVER TIDEGATE_TOKEN=\$(cat $token_file)"
echo "  $T fleet show ${sandbox_agent:0:12}"
echo "  $T audit export | tail -n 5"
echo "  open $TIDEGATE_SERVER/ in a browser for the web console (sign in with the admin token)"
if $once; then
  exit 0
fi
echo "Server and agents keep running; press Ctrl-C to stop them."
wait
