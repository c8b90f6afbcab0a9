#!/bin/sh
# Builds the Debian package with cargo-deb (release profile) and prints its path.
#
#   packaging/build-deb.sh          # CPU build:  target/debian/mvfa-studio_<version>-1_<arch>.deb
#   packaging/build-deb.sh cuda     # --features cuda: target/debian/mvfa-studio-cuda_<...>.deb
#
# Extra arguments after the variant go to `cargo deb` (e.g. `--locked`). Installs cargo-deb
# with `cargo install cargo-deb --locked` when it is missing. The binary is stripped (the
# release profile keeps line tables: 228 MB instead of 36 MB).
set -eu
cd "$(dirname "$0")/.."

variant=""
case "${1:-}" in
    cuda) variant=cuda; shift ;;
    cpu) shift ;;
    "" | -*) ;;
    *) echo "usage: $0 [cpu|cuda] [cargo-deb arguments...]" >&2; exit 2 ;;
esac

if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb not found: installing it (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked
fi

if [ -n "$variant" ]; then
    set -- --variant "$variant" "$@"
fi
# cargo-deb prints the path of the package it wrote (build output goes to stderr).
cargo deb --strip "$@"
