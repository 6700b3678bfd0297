#!/usr/bin/env bash
# Turns the base root filesystem (build-base.sh) into the appliance's disk image: installs the
# llama-orch packages with dpkg inside the tree, adds the image's configs (overlay/), the test
# model, enables the units, records a manifest of every package version, and writes an ext4
# image with mkfs.ext4 -d (no loop mount needed). The kernel and initrd are copied next to it
# for QEMU's -kernel/-initrd.
#
# usage: build-image.sh BASE_DIR OUT_DIR MODEL_FILE DEB...
set -euo pipefail
base=$1 out=$2 model=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
root="$out.root"
rm -rf "$root" "$out"
mkdir -p "$out"
cp -a "$base" "$root"

mkdir -p "$root/tmp/debs"
debs=()
for deb in "$@"; do
    cp "$deb" "$root/tmp/debs/"
    debs+=("/tmp/debs/$(basename "$deb")")
done
# dpkg runs the maintainer scripts in the chroot: postinst enables the sockets (symlinks only,
# as no systemd runs there) and creates the llorch group with systemd-sysusers.
chroot "$root" /usr/bin/dpkg -i --force-confold "${debs[@]}"
rm -rf "$root/tmp/debs"

cp -a "$here/overlay/." "$root/"
install -D -m 0644 "$model" "$root/usr/share/llama-orch/models/$(basename "$model")"

systemctl --root="$root" enable \
    orchestratord.socket pool-managerd.socket \
    llorch-adapterd@mock0.socket llorch-adapterd@smol0.socket \
    prometheus.service systemd-networkd.service llorch-test-backdoor.service
# Boot must not wait for a network that only the host's forwarded ports use.
systemctl --root="$root" mask systemd-networkd-wait-online.service
mkdir -p "$root/var/log/journal"
# A root without a password cannot log in on the console; the image is reached through its
# API and, in tests only, the driver's shell.
echo "llorch-appliance" > "$root/etc/hostname"

chroot "$root" dpkg-query -W -f '${Package} ${Version} ${Architecture}\n' | sort > "$out/manifest.txt"
cp "$out/manifest.txt" "$root/usr/share/llama-orch/image-manifest.txt"

cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"
chmod 0644 "$out/vmlinuz" "$out/initrd.img"
# Fixed UUID and dates: the same inputs give the same filesystem layout.
E2FSPROGS_FAKE_TIME=1767225600 mkfs.ext4 -q -F -L llorch -U 5b1c0a6e-1d0f-4b7e-9a57-6c6c6f726368 \
    -E root_owner=0:0 -d "$root" "$out/disk.img" 3G
rm -rf "$root"
