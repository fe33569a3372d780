#!/usr/bin/env bash
# Runs the aarch64 build of tidegate-agent under qemu-user emulation and checks that it starts and
# reads the package inventory of cross/fixture-root correctly.
#
# Usage: cross/smoke.sh  (after cross/build.sh has built aarch64-unknown-linux-musl)
#
# Environment:
#   CROSS_TARGET_DIR  cargo target directory of cross/build.sh (default: target/cross)
#
# The fixture root contains a dpkg status with four packages (a multiarch pair of libssl3, a package
# with an epoch, one with a newer version in the apt list), one apt list, a pending reboot and an
# os-release. var/run is a symlink to ../run, as on Debian.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

readonly TARGET=aarch64-unknown-linux-musl
readonly FIXTURE_ROOT=cross/fixture-root
# Seconds an emulated run may take before `timeout` stops it.
readonly RUN_TIMEOUT_SECONDS=60
target_dir=${CROSS_TARGET_DIR:-$repo_root/target/cross}
binary=$target_dir/$TARGET/release/tidegate-agent

missing_packages=()
command -v qemu-aarch64-static >/dev/null || missing_packages+=(qemu-user-static)
command -v python3 >/dev/null || missing_packages+=(python3)
if [[ ${#missing_packages[@]} -gt 0 ]]; then
    echo "error: missing tools. Install the Debian packages with:" >&2
    echo "  apt-get install -y ${missing_packages[*]}" >&2
    exit 1
fi
if [[ ! -x $binary ]]; then
    echo "error: $binary not found. Build it first with: cross/build.sh $TARGET" >&2
    exit 1
fi

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

run_emulated() {
    timeout "$RUN_TIMEOUT_SECONDS" qemu-aarch64-static "$binary" "$@"
}

echo "smoke: $binary --version"
status=0
version_output=$(run_emulated --version 2>&1) || status=$?
if [[ $status -ne 0 ]]; then
    echo "error: --version exited with status $status. Its output: $version_output" >&2
    exit 1
fi
echo "  $version_output"
if [[ $version_output != "tidegate-agent "* ]]; then
    echo "error: --version printed '$version_output', expected it to start with 'tidegate-agent '" >&2
    exit 1
fi

echo "smoke: $binary inventory --root $FIXTURE_ROOT"
status=0
run_emulated inventory --root "$FIXTURE_ROOT" >"$work_dir/inventory.json" 2>"$work_dir/inventory.err" || status=$?
if [[ $status -ne 0 ]]; then
    echo "error: inventory exited with status $status. Its stderr:" >&2
    sed 's/^/  /' "$work_dir/inventory.err" >&2
    exit 1
fi

# Checks the inventory JSON against the fixture. Field and enum names are serde's defaults for the
# types in protocol/src/inventory.rs.
python3 - "$work_dir/inventory.json" <<'PYTHON'
import json
import sys

EXPECTED_PACKAGES = {
    ("dnsutils", "all"): "1:9.18.33-1~deb12u2",
    ("libssl3", "amd64"): "3.0.15-1~deb12u1",
    ("libssl3", "i386"): "3.0.15-1~deb12u1",
    ("tzdata", "all"): "2024a-0+deb12u1",
}
EXPECTED_PENDING = {("tzdata", "all"): ("2024a-0+deb12u1", "2025b-0+deb12u1")}
EXPECTED_REBOOT_PACKAGES = ["linux-image-6.1.0-31-amd64"]

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


with open(sys.argv[1], encoding="utf-8") as file:
    text = file.read()
try:
    inventory = json.loads(text)
except json.JSONDecodeError as error:
    sys.exit(f"error: inventory output is not one JSON object ({error}); output was:\n{text[:2000]}")

check(isinstance(inventory, dict), f"expected a JSON object, got {type(inventory).__name__}")
if failures:
    sys.exit(f"error: {failures[0]}")

packages = inventory.get("packages", [])
found = {(p.get("name"), p.get("arch")): p for p in packages}
check(len(packages) == len(EXPECTED_PACKAGES),
      f"expected {len(EXPECTED_PACKAGES)} package rows, got {len(packages)}: {sorted(found)}")
check(set(found) == set(EXPECTED_PACKAGES),
      f"package rows differ: missing {sorted(set(EXPECTED_PACKAGES) - set(found))}, "
      f"unexpected {sorted(set(found) - set(EXPECTED_PACKAGES))}")
for key, version in EXPECTED_PACKAGES.items():
    package = found.get(key)
    if package is None:
        continue
    check(package.get("ecosystem") == "Deb", f"{key}: ecosystem {package.get('ecosystem')!r}, expected 'Deb'")
    check(package.get("version") == version, f"{key}: version {package.get('version')!r}, expected {version!r}")
    check(package.get("state") == "Installed", f"{key}: state {package.get('state')!r}, expected 'Installed'")
    check(package.get("selection") == "Install",
          f"{key}: selection {package.get('selection')!r}, expected 'Install'")

pending = {(u.get("name"), u.get("arch")): u for u in inventory.get("pending_updates", [])}
check(set(pending) == set(EXPECTED_PENDING),
      f"pending updates {sorted(pending)}, expected {sorted(EXPECTED_PENDING)}")
for key, (installed, candidate) in EXPECTED_PENDING.items():
    update = pending.get(key)
    if update is None:
        continue
    check(update.get("installed_version") == installed,
          f"{key}: installed_version {update.get('installed_version')!r}, expected {installed!r}")
    check(update.get("candidate_version") == candidate,
          f"{key}: candidate_version {update.get('candidate_version')!r}, expected {candidate!r}")

check(isinstance(inventory.get("package_lists_updated_unix_s"), int),
      f"package_lists_updated_unix_s is {inventory.get('package_lists_updated_unix_s')!r}, "
      "expected the list file's modification time")

reboot = inventory.get("reboot", {})
check(reboot.get("required") is True, f"reboot.required is {reboot.get('required')!r}, expected true")
check(reboot.get("packages") == EXPECTED_REBOOT_PACKAGES,
      f"reboot.packages is {reboot.get('packages')!r}, expected {EXPECTED_REBOOT_PACKAGES!r}")

facts = inventory.get("facts", {})
check(facts.get("arch") in ("aarch64", "arm64"),
      f"facts.arch is {facts.get('arch')!r}, expected aarch64 or arm64 under qemu-aarch64")

if failures:
    print("error: the inventory of the fixture root is wrong:", file=sys.stderr)
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    print(f"output was:\n{text[:4000]}", file=sys.stderr)
    sys.exit(1)

print(f"  {len(packages)} packages, {len(pending)} pending update, reboot required, "
      f"facts.arch {facts.get('arch')}, {len(inventory.get('warnings', []))} warnings")
PYTHON

echo "smoke: passed"
