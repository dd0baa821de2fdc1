#!/usr/bin/env bash
# ensure-cross-tools.sh — make sure the AArch64 cross tools are installed.
#
# The runtime's AArch64 switch assembly (csrc/runtime/asm_arm64.S) is tested
# by cross-compiling the C selftest with aarch64-linux-gnu-gcc -static and
# running it under qemu-user (tests/runtime/test_cross_aarch64.py,
# test_asm_mutations.py).  Those tests fail under CI=true when the tools are
# missing, so CI (scripts/test.sh) runs this first.
#
# Idempotent and quiet when everything is there.  Otherwise, as root, it runs
# apt-get update and installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross
# and qemu-user; not as root it prints a loud message and exits 0 (the tests
# then skip, or fail under CI, saying the same).  Exits nonzero only if an
# install was attempted and the tools are still missing.
set -u

PACKAGES="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"

missing_tools() {   # prints what is missing, nothing when all is there
    local m=""
    if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
        m="$m aarch64-linux-gnu-gcc"
    else
        # -static needs the cross libc.a; without it gcc prints the bare name.
        local libc
        libc="$(aarch64-linux-gnu-gcc -print-file-name=libc.a 2>/dev/null)"
        case "$libc" in
            /*) [ -e "$libc" ] || m="$m libc.a(libc6-dev-arm64-cross)" ;;
            *) m="$m libc.a(libc6-dev-arm64-cross)" ;;
        esac
    fi
    if ! command -v qemu-aarch64 >/dev/null 2>&1 &&
       ! command -v qemu-aarch64-static >/dev/null 2>&1; then
        m="$m qemu-aarch64"
    fi
    echo "$m"
}

loud() {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!!! $*" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
}

missing="$(missing_tools)"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    loud "AArch64 cross tools missing:$missing. Not root, so not installing." \
         "Run as root: apt-get install $PACKAGES" \
         "(or rerun this script as root). The AArch64 runtime tests skip until then" \
         "(and fail under CI=true)."
    exit 0
fi

echo "ensure-cross-tools: missing:$missing; installing $PACKAGES" >&2
apt-get update || loud "apt-get update failed; trying the install anyway"
DEBIAN_FRONTEND=noninteractive apt-get install -y $PACKAGES

missing="$(missing_tools)"
if [ -n "$missing" ]; then
    loud "AArch64 cross tools still missing after apt-get install:$missing"
    exit 1
fi
echo "ensure-cross-tools: installed" >&2
exit 0
