#!/usr/bin/env bash
# Installs what ForkKit needs beyond the Swift toolchain, when it is missing:
# libmsgpack-dev (the MessagePack C library) and pkg-config; from PyPI with pip, the msgpack package
# for the test of a Python worker and pynvim (protocol/examples/interop_peer.py uses its generic
# MessagePack-RPC layer) for the interop tests, asking again with --break-system-packages on a
# Python that refuses pip installs (PEP 668); the tests that need them are skipped, saying so, where
# they cannot be installed. With --peers, also the peers that the benchmarks compare against: Perl's
# AnyEvent::Fork (libanyevent-fork-perl) and a C compiler. For the remote-worker tests and
# benchmark, OpenSSH's server and client (the tests start their own sshd on 127.0.0.1; nothing is
# configured system-wide).
set -euo pipefail

# pip_install MODULE PACKAGE: installs PACKAGE from PyPI when python3 cannot import MODULE.
pip_install() {
    command -v python3 >/dev/null || return 0
    python3 -c "import $1" 2>/dev/null && return 0
    echo "installing: $2 (PyPI)" >&2
    local output
    output=$(python3 -m pip install --quiet --root-user-action=ignore "$2" 2>&1) && return 0
    if [[ $output == *externally-managed-environment* ]]; then
        python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "$2" >&2 && return 0
    else
        printf '%s\n' "$output" >&2
    fi
    echo "could not install $2 from PyPI" >&2
}
pip_install msgpack msgpack
pip_install pynvim.msgpack_rpc pynvim

packages=()
pkg-config --exists msgpack 2>/dev/null || packages+=(libmsgpack-dev pkg-config)
[[ -x /usr/sbin/sshd && -x /usr/bin/ssh && -x /usr/bin/ssh-keygen ]] || packages+=(openssh-server openssh-client)
if [[ "${1:-}" == "--peers" ]]; then
    perl -MAnyEvent::Fork -e 1 2>/dev/null || packages+=(libanyevent-fork-perl)
    command -v cc >/dev/null || packages+=(gcc)
fi
((${#packages[@]})) || exit 0

echo "installing: ${packages[*]}" >&2
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
