#!/usr/bin/env bash
# Builds the appliance's base root filesystem from Debian packages only: debootstrap of the
# pinned suite with the packages of packages.txt, then apt's caches dropped. No llama-orch
# bits: those are added by build-image.sh, so that a code change does not redo this (~8 min).
#
# usage: build-base.sh OUT_DIR SUITE MIRROR
set -euo pipefail
out=$1 suite=$2 mirror=$3
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(grep -v '^\s*#' "$here/packages.txt" | grep -v '^\s*$' | paste -sd, -)
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
debootstrap --variant=minbase --include="$pkgs" "$suite" "$out.tmp" "$mirror"
rm -rf "$out.tmp"/var/cache/apt/archives/*.deb "$out.tmp"/var/lib/apt/lists/*
rm -rf "$out"
mv "$out.tmp" "$out"
