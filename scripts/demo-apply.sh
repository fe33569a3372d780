#!/usr/bin/env bash
# Applies a real four-step bundle to a sandbox root and rolls it back, through a running server and
# agent: a file, a sshd_config line, an upgrade of a test package from 1.0-1 to 1.0-2 with
# dpkg --root, and an account lock. Prints the plan, the journal and the outcome the agent reports
# after each phase. Everything lives in one temporary directory; nothing outside it changes.
# Needs dpkg-deb and dpkg.
set -euo pipefail

cd "$(dirname "$0")/.."
http_listen=${TIDEGATE_HTTP_LISTEN:-127.0.0.1:8741}
mqtt_listen=${TIDEGATE_MQTT_LISTEN:-127.0.0.1:1885}
work=${TIDEGATE_DEMO_DIR:-$(mktemp -d -t tidegate-apply.XXXXXX)}
mkdir -p "$work"

for tool in dpkg dpkg-deb dpkg-query; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
for address in "$http_listen" "$mqtt_listen"; do
  if (exec 3<>"/dev/tcp/${address%:*}/${address##*:}") 2>/dev/null; then
    echo "error: $address is already in use; set TIDEGATE_HTTP_LISTEN or TIDEGATE_MQTT_LISTEN to a free address" >&2
    exit 1
  fi
done

echo "==> building tidegate-server, tidegate and tidegate-agent"
cargo build --quiet -p tidegate-server -p tidegate-agent
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target/debug
T=$bin/tidegate

echo "==> keys and trust root in $work/keys"
mkdir -p "$work/keys"
(
  cd "$work/keys"
  for role in root security ot; do "$T" keys generate --role "$role" --out "$role.key" >/dev/null; done
  "$T" root new --out root.json >/dev/null
  "$T" root add-key root.json --key root.key --key security.key --key ot.key >/dev/null
  for role in root security ot; do "$T" root set-threshold root.json --role "$role" --count 1 >/dev/null; done
  "$T" root sign root.json --key root.key >/dev/null
  "$T" root export root.json --out root.tgrt >/dev/null
)

echo "==> sandbox root $work/root: accounts, sshd_config, motd, hello-tg 1.0-1 installed"
root=$work/root
mkdir -p "$root/etc/ssh" "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" \
  "$root/var/lib/dpkg/triggers" "$root/var/cache/apt/archives"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n' >"$root/etc/passwd"
printf 'root:x:0:\nalice:x:1000:\nshadow:x:42:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\nalice:$y$j9T$salt$hash:19800:0:99999:7:::\n' >"$root/etc/shadow"
chmod 0640 "$root/etc/shadow"
printf 'Port 22\nPasswordAuthentication yes\n' >"$root/etc/ssh/sshd_config"
printf 'welcome\n' >"$root/etc/motd"
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
dpkg --root="$root" --force-not-root --force-script-chrootless -i "$work/debs/hello-tg_1.0-1_all.deb" >/dev/null

echo "==> bundle $work/bundle.tgbd"
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
"$T" bundle new --out "$work/bundle.tgbd" --id demo-hardening --stream demo --sequence 1 \
  --not-before "$(date -u -d @$((now - 3600)) +%Y-%m-%dT%H:%M:%SZ)" \
  --expires "$(date -u -d @$((now + 86400)) +%Y-%m-%dT%H:%M:%SZ)" \
  --steps "$work/steps.json" --payload "motd=$work/motd" \
  --payload "hello-tg_1.0-2_all.deb=$work/debs/hello-tg_1.0-2_all.deb" >/dev/null
"$T" bundle sign "$work/bundle.tgbd" --key "$work/keys/security.key" >/dev/null
hash=$("$T" bundle inspect --json "$work/bundle.tgbd" | sed -n 's/.*"bundle_hash": *"\([0-9a-f]*\)".*/\1/p')

echo
echo "==> tidegate-agent plan: what the bundle would change (nothing changes)"
"$bin/tidegate-agent" plan "$work/bundle.tgbd" --root "$root"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/tidegate-server" --db "$work/tidegate.db" --http-listen "$http_listen" \
  --mqtt-listen "$mqtt_listen" --trust-root "$work/keys/root.tgrt" 2>"$work/server.log" &
pids+=($!)
cat >"$work/agent.toml" <<TOML
root_dir = "$root"
state_dir = "$work/agent"
trust_root_file = "$work/keys/root.tgrt"

[mqtt]
broker_url = "mqtt://$mqtt_listen"

[reports]
interval_seconds = 2

# This demonstration applies at once; scripts/demo.sh shows a bundle waiting for its window.
[windows]
require_schedule = false

# A demonstration machine need not run a time service that marks the kernel clock synchronised.
[clock]
require_os_synchronised = false
TOML
"$bin/tidegate-agent" run --config "$work/agent.toml" 2>"$work/agent.log" &
pids+=($!)
export TIDEGATE_SERVER="http://$http_listen"

# Waits until `tidegate fleet show` prints a bundle line matching $1.
wait_for_outcome() {
  for _ in $(seq 1 150); do
    if "$T" fleet show "$agent_id" 2>/dev/null | grep -q "demo-hardening .*$1"; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: timed out waiting for '$1'; logs:" >&2
  tail -n 20 "$work/server.log" "$work/agent.log" >&2
  exit 1
}

for _ in $(seq 1 150); do
  agent_id=$("$T" fleet list --json 2>/dev/null | tr -d ' \n' |
    sed -n 's/.*"agent_id":"\([0-9a-f]*\)".*"last_report_unix_s":[0-9].*/\1/p' || true)
  [[ -n $agent_id ]] && break
  sleep 0.2
done
[[ -n ${agent_id:-} ]] || { echo "error: the agent never reported; see $work/agent.log" >&2; exit 1; }

echo
echo "==> tidegate bundle publish: the agent verifies and applies it at once"
"$T" bundle publish "$work/bundle.tgbd"
wait_for_outcome ") applied"
"$T" fleet show "$agent_id" | sed -n '/^Bundles/,/^$/p'
echo
echo "sandbox now: $(head -n1 "$root/etc/motd"); $(grep PasswordAuthentication "$root/etc/ssh/sshd_config"); $(grep '^alice' "$root/etc/shadow" | cut -d: -f1,2)"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f 'package: ${Package} ${Version} ${Status}\n' hello-tg

echo
echo "==> the agent's journal ($work/agent/journal)"
"$bin/tidegate-agent" journal --state-dir "$work/agent"

echo
echo "==> tidegate bundle rollback: the agent reverts it from the journal"
"$T" bundle rollback "$hash" --agent "$agent_id"
wait_for_outcome "rolled-back"
"$T" fleet show "$agent_id" | sed -n '/^Bundles/,/^$/p'
echo
echo "sandbox now: $(head -n1 "$root/etc/motd"); $(grep PasswordAuthentication "$root/etc/ssh/sshd_config"); $(grep '^alice' "$root/etc/shadow" | cut -d: -f1,2)"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f 'package: ${Package} ${Version} ${Status}\n' hello-tg
echo
"$bin/tidegate-agent" journal --state-dir "$work/agent"
echo
echo "Data and logs are in $work."
