#!/usr/bin/env bash
# Builds the tidegate-agent binary as a static, stripped release build for the Linux musl targets
# and checks that each result is statically linked.
#
# Usage: cross/build.sh [TARGET...]
#   TARGET defaults to x86_64-unknown-linux-musl and aarch64-unknown-linux-musl.
#
# Environment:
#   CROSS_TARGET_DIR  cargo target directory for these builds (default: target/cross in the
#                     repository). It is kept apart from target/ so the host build is untouched.
#
# C code in dependencies (ring) is compiled with clang for the target and archived with llvm-ar.
# Linking uses rust-lld from the Rust toolchain, or ld.lld from Debian's lld package when the
# toolchain has no rust-lld. The script installs only missing rustup targets. For missing Debian
# packages it prints their names and exits with status 1.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

readonly PACKAGE=tidegate-agent
readonly BINARY=tidegate-agent
readonly DEFAULT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
target_dir=${CROSS_TARGET_DIR:-$repo_root/target/cross}

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("${DEFAULT_TARGETS[@]}")
fi

# Finds llvm-ar on PATH or in a versioned LLVM directory (Debian's llvm-NN packages).
find_llvm_ar() {
    local candidate
    if candidate=$(command -v llvm-ar); then
        echo "$candidate"
        return 0
    fi
    for candidate in /usr/lib/llvm-*/bin/llvm-ar; do
        if [[ -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Finds the linker: the toolchain's rust-lld first, then Debian's ld.lld. rustc looks up rust-lld
# in its own sysroot, so the bare name is enough.
find_linker() {
    local host sysroot
    host=$(rustc -vV | sed -n 's/^host: //p')
    sysroot=$(rustc --print sysroot)
    if [[ -x $sysroot/lib/rustlib/$host/bin/rust-lld ]]; then
        echo rust-lld
        return 0
    fi
    command -v ld.lld
}

missing_packages=()
command -v clang >/dev/null || missing_packages+=(clang)
llvm_ar=$(find_llvm_ar) || missing_packages+=(llvm)
linker=$(find_linker) || missing_packages+=(lld)
command -v readelf >/dev/null || missing_packages+=(binutils)
command -v file >/dev/null || missing_packages+=(file)
if [[ ${#missing_packages[@]} -gt 0 ]]; then
    echo "error: missing build tools. Install the Debian packages with:" >&2
    echo "  apt-get install -y ${missing_packages[*]}" >&2
    exit 1
fi

if command -v rustup >/dev/null; then
    installed_targets=$(rustup target list --installed)
    for target in "${targets[@]}"; do
        if ! grep -qx "$target" <<<"$installed_targets"; then
            echo "Adding Rust target $target with rustup"
            rustup target add "$target"
        fi
    done
else
    echo "warning: rustup not found, so the standard libraries of ${targets[*]} must already be installed" >&2
fi

# Prints the size of a binary and fails unless its ELF machine matches the target and readelf shows
# no program interpreter and no shared-library dependencies.
check_binary() {
    local target=$1 binary=$2 size machine expected_machine=""
    size=$(stat -c %s "$binary")
    echo "$target: $binary"
    echo "  size: $size bytes ($(awk -v bytes="$size" 'BEGIN { printf "%.2f", bytes / 1048576 }') MiB)"
    echo "  file: $(file -b "$binary")"

    machine=$(readelf -hW "$binary" | sed -n 's/^ *Machine: *//p')
    case $target in
        x86_64-*) expected_machine="Advanced Micro Devices X86-64" ;;
        aarch64-*) expected_machine="AArch64" ;;
    esac
    if [[ -n $expected_machine && $machine != "$expected_machine" ]]; then
        echo "error: $binary is built for machine '$machine', expected '$expected_machine'" >&2
        return 1
    fi

    if readelf -lW "$binary" | grep -q 'INTERP'; then
        echo "error: $binary has a program interpreter (INTERP), so it is dynamically linked" >&2
        return 1
    fi
    if readelf -dW "$binary" | grep -q '(NEEDED)'; then
        echo "error: $binary needs shared libraries:" >&2
        readelf -dW "$binary" | grep '(NEEDED)' >&2
        return 1
    fi
    echo "  linking: static (no INTERP, no NEEDED)"
}

for target in "${targets[@]}"; do
    # cargo and the cc crate read per-target variables named after the triple, in upper case
    # for cargo and with underscores for cc.
    triple_upper=$(tr 'a-z-' 'A-Z_' <<<"$target")
    triple_lower=$(tr '-' '_' <<<"$target")

    echo "Building $PACKAGE for $target (release) in $target_dir"
    start=$SECONDS
    env \
        "CARGO_TARGET_DIR=$target_dir" \
        "CARGO_TARGET_${triple_upper}_LINKER=$linker" \
        "CC_${triple_lower}=clang" \
        "AR_${triple_lower}=$llvm_ar" \
        cargo build --release --package "$PACKAGE" --bin "$BINARY" --target "$target"
    echo "Built $target in $((SECONDS - start)) s"

    check_binary "$target" "$target_dir/$target/release/$BINARY"
done
