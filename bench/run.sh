#!/usr/bin/env bash
# Measures the agent against its budgets and prints a Markdown table of figures (not pass/fail).
# bench/README.md describes each figure.
#
# Usage: bench/run.sh
#
# Environment:
#   CROSS_TARGET_DIR    target directory of cross/build.sh (default: target/cross)
#   AGENT_BIN           agent binary for the host figures (default: the x86_64 musl build)
#   BENCH_RUNS          measured runs per CPU figure (default: 20)
#   BENCH_RUN_SECONDS   how long the agent reports before its memory is read (default: 12)
#
# Progress goes to stderr and the table to stdout. A figure whose agent subcommand is missing or
# fails is printed as n/a with the reason. Builds and agent runs have time limits, so the script
# ends by itself.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

readonly PACKAGE_COUNT=2000
# Installed packages for which the generated apt list offers a higher version.
readonly PENDING_UPDATE_COUNT=100
# Packages that are not installed, added to the mirror-sized apt list. With the installed ones the
# list contains about 63,400 packages, as Debian 12 main for amd64 did in December 2026.
readonly MIRROR_EXTRA_PACKAGES=61500
readonly REPORT_INTERVAL_SECONDS=1
readonly TARGETS=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
target_dir=${CROSS_TARGET_DIR:-$repo_root/target/cross}
host_binary=${AGENT_BIN:-$target_dir/x86_64-unknown-linux-musl/release/tidegate-agent}
runs=${BENCH_RUNS:-20}
run_seconds=${BENCH_RUN_SECONDS:-12}

work_dir=$(mktemp -d)
agent_pid=""
broker_pid=""

# Stops a background process that this script started, first politely, then with SIGKILL.
stop_process() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop_process "$agent_pid"
    stop_process "$broker_pid"
    rm -rf "$work_dir"
}
trap cleanup EXIT

log() {
    echo "bench: $*" >&2
}

table_rows=()
add_row() {
    table_rows+=("| $1 | $2 | $3 |")
}

format_mib() {
    awk -v bytes="$1" 'BEGIN { printf "%.2f MiB", bytes / 1048576 }'
}

# Adds a row with the binary size of each target, building the missing targets first.
measure_binary_sizes() {
    local target binary size budget
    for target in "${TARGETS[@]}"; do
        binary=$target_dir/$target/release/tidegate-agent
        if [[ ! -x $binary ]]; then
            log "building $target with cross/build.sh"
            timeout 1800 cross/build.sh "$target" >&2 || log "cross/build.sh $target failed"
        fi
        budget="none set"
        [[ $target == aarch64-* ]] && budget="≤ 3 MiB"
        if [[ -x $binary ]]; then
            size=$(stat -c %s "$binary")
            add_row "agent binary, release, static, stripped, $target" \
                "$size bytes ($(format_mib "$size"))" "$budget"
        else
            add_row "agent binary, release, static, stripped, $target" "n/a (build failed)" "$budget"
        fi
    done
}

# Writes a root with a generated dpkg status, an os-release, no pending reboot and, by LIST_KIND,
# no apt list (none), a list of the installed packages (installed) or a list the size of Debian 12
# main for amd64 (mirror).
make_generated_root() {
    local root=$1 list_kind=$2 list_file
    mkdir -p "$root/var/lib/dpkg" "$root/var/lib/apt/lists" "$root/etc"
    cp cross/fixture-root/etc/os-release "$root/etc/os-release"
    list_file=$root/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages
    case $list_kind in
        none)
            python3 bench/gen-dpkg-status.py "$PACKAGE_COUNT" >"$root/var/lib/dpkg/status"
            ;;
        installed)
            python3 bench/gen-dpkg-status.py "$PACKAGE_COUNT" --updates "$PENDING_UPDATE_COUNT" \
                --apt-list "$list_file" >"$root/var/lib/dpkg/status"
            ;;
        mirror)
            python3 bench/gen-dpkg-status.py "$PACKAGE_COUNT" --updates "$PENDING_UPDATE_COUNT" \
                --apt-list "$list_file" --not-installed "$MIRROR_EXTRA_PACKAGES" >"$root/var/lib/dpkg/status"
            ;;
    esac
}

# Measures the CPU time of one `inventory` run below ROOT and adds a row with the median and range.
measure_inventory_cpu() {
    local label=$1 root=$2 output
    if output=$(python3 bench/cpu_time.py --runs "$runs" --timeout 30 --expect-json-key packages \
        -- "$host_binary" inventory --root "$root" 2>&1); then
        add_row "$label" "$(awk '{ printf "%s ms median (min %s, max %s, %s runs)", $2, $4, $6, $8 }' <<<"$output")" \
            "≤ 20 ms"
    else
        log "$label: $output"
        output=${output%%$'\n'*}
        add_row "$label" "n/a (${output//|/\\|})" "≤ 20 ms"
    fi
}

# Adds rows with the encoded sizes of a full report and of a one-change delta, as the agent's
# bench-wire subcommand prints them.
measure_wire_sizes() {
    local root=$1 output full delta
    output=$(timeout 60 "$host_binary" bench-wire --root "$root" 2>&1) || true
    full=$(awk '$1 == "full_report_bytes" { print $2 }' <<<"$output")
    delta=$(awk '$1 == "delta_one_change_bytes" { print $2 }' <<<"$output")
    if [[ -n $full ]]; then
        add_row "full report of $PACKAGE_COUNT packages on the wire" \
            "$full bytes ($(awk -v b="$full" 'BEGIN { printf "%.1f", b / 1024 }') KiB)" "≤ 40 KiB"
    else
        add_row "full report of $PACKAGE_COUNT packages on the wire" "n/a (bench-wire printed no full_report_bytes)" "≤ 40 KiB"
    fi
    if [[ -n $delta ]]; then
        add_row "delta report with one changed package on the wire" "$delta bytes" "≤ 512 bytes"
    else
        add_row "delta report with one changed package on the wire" "n/a (bench-wire printed no delta_one_change_bytes)" "≤ 512 bytes"
    fi
    [[ -n $full && -n $delta ]] || log "bench-wire output: ${output:0:500}"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to five seconds for a TCP listener on 127.0.0.1:PORT.
wait_for_port() {
    local port=$1
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Measures the resident memory of `tidegate-agent run` after it has reported for run_seconds to a
# private Mosquitto broker on a free loopback port, and adds a row.
measure_resident_memory() {
    local root=$1 description=$2 label mosquitto port state_dir rss_kib peak_kib reports status
    label="agent resident memory after ${run_seconds} s of reports every ${REPORT_INTERVAL_SECONDS} s, $description"

    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [[ ! -x $mosquitto ]]; then
        add_row "$label" "n/a (mosquitto not installed: apt-get install -y mosquitto)" "≤ 8 MiB"
        return 0
    fi

    port=$(free_port)
    cat >"$work_dir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
log_type all
EOF
    "$mosquitto" -c "$work_dir/mosquitto.conf" >"$work_dir/mosquitto.log" 2>&1 &
    broker_pid=$!
    if ! wait_for_port "$port"; then
        log "mosquitto did not listen on 127.0.0.1:$port. Its log:"
        sed 's/^/  /' "$work_dir/mosquitto.log" >&2
        add_row "$label" "n/a (mosquitto did not start)" "≤ 8 MiB"
        return 0
    fi

    state_dir=$(mktemp -d "$work_dir/state.XXXXXX")
    cat >"$work_dir/agent.toml" <<EOF
root_dir = "$root"
state_dir = "$state_dir"
[mqtt]
broker_url = "mqtt://127.0.0.1:$port"
[reports]
interval_seconds = $REPORT_INTERVAL_SECONDS
EOF
    log "running the agent for ${run_seconds} s against mosquitto on 127.0.0.1:$port"
    "$host_binary" run --config "$work_dir/agent.toml" >"$work_dir/agent.log" 2>&1 &
    agent_pid=$!
    sleep "$run_seconds"

    if ! kill -0 "$agent_pid" 2>/dev/null; then
        status=0
        wait "$agent_pid" || status=$?
        agent_pid=""
        log "agent run exited early with status $status. Its output:"
        head -n 20 "$work_dir/agent.log" | sed 's/^/  /' >&2
        add_row "$label" "n/a (run exited with status $status)" "≤ 8 MiB"
        stop_process "$broker_pid"
        broker_pid=""
        return 0
    fi

    rss_kib=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$agent_pid/status" 2>/dev/null || true)
    peak_kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$agent_pid/status" 2>/dev/null || true)
    stop_process "$agent_pid"
    agent_pid=""
    stop_process "$broker_pid"
    broker_pid=""
    if [[ -z $rss_kib || -z $peak_kib ]]; then
        add_row "$label" "n/a (the agent exited before its memory was read)" "≤ 8 MiB"
        return 0
    fi

    # Mosquitto logs every PUBLISH it receives at log_type debug, with the topic in quotes.
    reports=$(grep -c "Received PUBLISH from .*'tidegate/v1/agent/[^']*/report'" "$work_dir/mosquitto.log" || true)
    add_row "$label" \
        "$(format_mib $((rss_kib * 1024))) (peak $(format_mib $((peak_kib * 1024))), $reports reports received)" \
        "≤ 8 MiB"
}

log "host binary: $host_binary"
measure_binary_sizes

status_only_root=$work_dir/root-status-only
installed_list_root=$work_dir/root-installed-list
mirror_list_root=$work_dir/root-mirror-list
log "generating roots with $PACKAGE_COUNT dpkg packages"
make_generated_root "$status_only_root" none
make_generated_root "$installed_list_root" installed
make_generated_root "$mirror_list_root" mirror
installed_list_label="$PACKAGE_COUNT generated packages + apt list of them with $PENDING_UPDATE_COUNT updates"
mirror_list_label="$PACKAGE_COUNT generated packages + apt list of $((PACKAGE_COUNT + MIRROR_EXTRA_PACKAGES)) packages with $PENDING_UPDATE_COUNT updates"

if [[ -x $host_binary ]]; then
    host_package_count=$(grep -c '^Package:' /var/lib/dpkg/status 2>/dev/null || echo 0)
    # The agent reads plain, LZ4 and gzip lists; a one-shot run decompresses and scans them all.
    host_list_count=$(find /var/lib/apt/lists -maxdepth 1 \( -name '*_Packages' -o -name '*_Packages.lz4' -o -name '*_Packages.gz' \) 2>/dev/null | wc -l)
    log "measuring inventory CPU time ($runs runs each)"
    measure_inventory_cpu "inventory collection, this host (\`--root /\`, $host_package_count dpkg packages, $host_list_count apt lists, read in full)" /
    measure_inventory_cpu "inventory collection, $PACKAGE_COUNT generated packages, no apt list" "$status_only_root"
    measure_inventory_cpu "inventory collection, $installed_list_label" "$installed_list_root"
    measure_inventory_cpu "inventory collection, $mirror_list_label" "$mirror_list_root"
    measure_wire_sizes "$installed_list_root"
    measure_resident_memory "$installed_list_root" "$installed_list_label"
    measure_resident_memory "$mirror_list_root" "$mirror_list_label"
else
    log "no agent binary at $host_binary; the host figures are n/a"
    add_row "inventory collection of $PACKAGE_COUNT packages" "n/a (no agent binary)" "≤ 20 ms"
    add_row "full report of $PACKAGE_COUNT packages on the wire" "n/a (no agent binary)" "≤ 40 KiB"
    add_row "delta report with one changed package on the wire" "n/a (no agent binary)" "≤ 512 bytes"
    add_row "agent resident memory, $PACKAGE_COUNT packages" "n/a (no agent binary)" "≤ 8 MiB"
fi

echo "## tidegate agent benchmark"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo ' (with uncommitted changes)')"
echo "- host: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"
echo "- rustc: $(rustc --version 2>/dev/null || echo unknown)"
echo "- host binary: ${host_binary#"$repo_root"/}"
echo
echo "| figure | measured | budget |"
echo "| --- | --- | --- |"
printf '%s\n' "${table_rows[@]}"
