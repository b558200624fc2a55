#!/usr/bin/env bash
# Runs as root inside the VM: a Rust toolchain (stable + nightly with rust-src), then the
# project's own setup (Debian packages, bpf-linker built against LLVM 22).
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates build-essential git
if ! command -v rustup >/dev/null 2>&1 && [ ! -x /root/.cargo/bin/rustup ]; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain 1.95.0
fi
export PATH=/root/.cargo/bin:$PATH
rustup toolchain install nightly --profile minimal --component rust-src
# cgroup v2 must be mounted (it is on Debian 12) and bpffs is mounted by enforcer if needed.
cd /vagrant
cargo xtask setup
