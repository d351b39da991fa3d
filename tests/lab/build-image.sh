#!/usr/bin/env bash
# Build the lab hypervisor image: Debian bookworm with libvirt and QEMU, from Debian's mirror.
#
#   build-image.sh OUT_DIR PUBKEY_FILE
#
# Writes OUT_DIR/base.qcow2 (ext4 root filesystem, no partition table), OUT_DIR/vmlinuz and
# OUT_DIR/initrd.img. Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d) and qemu-img; no loop
# device. The caller caches OUT_DIR by a hash of this script and the key.
set -euo pipefail

out=$1
pubkey=$2
mirror=${LAB_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages=(
    systemd-sysv udev kmod dbus libpam-systemd       # libpam-systemd: polkitd needs a logind
    linux-image-amd64 initramfs-tools
    openssh-server python3 python3-libvirt python3-apt  # python3-apt: the package module (pci_host) on Debian
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
    pciutils iproute2 nvme-cli procps netbase
)

# Scratch on tmpfs when there is one: debootstrap writes tens of thousands of small files, which a
# busy disk makes several times slower. About 2 GiB while building, freed at the end.
scratch=${LAB_TMPDIR:-/dev/shm}
mkdir -p "$(dirname "$out")"
[ -d "$scratch" ] && [ -w "$scratch" ] || scratch=$(dirname "$out")
work=$(mktemp -d "$scratch/passthrough-lab-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "lab image: debootstrap $suite (${#packages[@]} packages) from $mirror"
include=$(IFS=,; echo "${packages[*]}")
debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; echo "lab image: debootstrap failed" >&2; exit 1; }

echo "lab image: configuring"
echo lab >"$rootfs/etc/hostname"            # each VM gets its own name with systemd.hostname=
echo '/dev/vda / ext4 defaults,noatime 0 1' >"$rootfs/etc/fstab"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$pubkey" "$rootfs/root/.ssh/authorized_keys"
# DHCP on the management NIC only (virtio): the e1000e NICs are devices under test and must stay
# without an address, like passthrough NICs on a real hypervisor.
cat >"$rootfs/etc/systemd/network/10-mgmt.network" <<'NET'
[Match]
Driver=virtio_net

[Network]
DHCP=yes
NET
echo vfio-pci >"$rootfs/etc/modules-load.d/vfio-pci.conf"
chroot "$rootfs" systemctl enable systemd-networkd ssh >/dev/null 2>&1
: >"$rootfs/etc/machine-id"
# Host keys are made at each VM's first boot, so the two VMs do not share them.
rm -f "$rootfs"/etc/ssh/ssh_host_*
install -d "$rootfs/etc/systemd/system/ssh.service.d"
cat >"$rootfs/etc/systemd/system/ssh.service.d/hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
chroot "$rootfs" apt-get clean

cp "$rootfs"/boot/vmlinuz-* "$work/vmlinuz"
cp "$rootfs"/boot/initrd.img-* "$work/initrd.img"

echo "lab image: writing the filesystem"
truncate -s 3G "$work/root.raw"
mkfs.ext4 -q -F -L labroot -d "$rootfs" "$work/root.raw"
qemu-img convert -c -O qcow2 "$work/root.raw" "$work/base.qcow2"

rm -rf "$out"
mkdir -p "$out"
mv "$work/base.qcow2" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "lab image: done ($(du -h "$out/base.qcow2" | cut -f1) base image)"
