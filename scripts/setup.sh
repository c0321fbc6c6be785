#!/usr/bin/env bash
# Installs what ForkKit needs beyond the Swift toolchain, when it is missing:
# libmsgpack-dev (the MessagePack C library) and pkg-config; for the test of a Python worker, the
# msgpack package from PyPI (the test is skipped, saying so, where it cannot be installed). With
# --peers, also the peers that the benchmarks compare against: Perl's AnyEvent::Fork
# (libanyevent-fork-perl) and a C compiler. For the remote-worker tests and benchmark, OpenSSH's
# server and client (the tests start their own sshd on 127.0.0.1; nothing is configured system-wide).
set -euo pipefail

if command -v python3 >/dev/null && ! python3 -c "import msgpack" 2>/dev/null; then
    echo "installing: msgpack (PyPI)" >&2
    python3 -m pip install --quiet --root-user-action=ignore msgpack >&2 || echo "could not install msgpack from PyPI" >&2
fi

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
