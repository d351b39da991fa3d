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
# A real mdev parent for the mediated-device steps: the kernel's sample driver mtty (a virtual serial-port
# parent, device_api vfio-pci). Debian builds CONFIG_VFIO_MDEV but none of the samples; their source is in
# linux-source-6.1. Built out of tree against the image's own kernel headers, installed under updates/,
# then the compiler and headers are purged so the image stays as it was plus one module.
kver=$(basename "$(ls -d "$rootfs"/lib/modules/*)")
# shellcheck disable=SC2016  # dpkg-query's own ${...} fields, not the shell's
kdeb=$(chroot "$rootfs" dpkg-query -W -f '${Version}' "linux-image-$kver")
echo "lab image: building the mtty sample driver for $kver ($kdeb)"
# shellcheck disable=SC2016
chroot "$rootfs" dpkg-query -W -f '${Package}\n' | sort >"$work/packages.before"
chroot "$rootfs" apt-get install -y -q --no-install-recommends "linux-headers-$kver" make >>"$work/mtty.log" 2>&1 ||
    { tail -20 "$work/mtty.log" >&2; echo "lab image: installing the kernel headers failed" >&2; exit 1; }
mkdir -p "$rootfs/tmp/mtty"
# linux-source-<major.minor> at the image kernel's exact version: the sample must match the kernel's API.
chroot "$rootfs" sh -c "cd /tmp && apt-get download -q linux-source-${kver%%.0-*}=$kdeb" >>"$work/mtty.log" 2>&1 ||
    { tail -20 "$work/mtty.log" >&2; echo "lab image: downloading linux-source-${kver%%.0-*}=$kdeb failed" >&2; exit 1; }
src_deb=$(ls "$rootfs"/tmp/linux-source-*.deb)
dpkg-deb --fsys-tarfile "$src_deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' |
    tar -xJO --wildcards '*/samples/vfio-mdev/mtty.c' >"$rootfs/tmp/mtty/mtty.c"
rm -f "$src_deb"
echo 'obj-m := mtty.o' >"$rootfs/tmp/mtty/Makefile"
chroot "$rootfs" make -C "/lib/modules/$kver/build" M=/tmp/mtty modules >>"$work/mtty.log" 2>&1 ||
    { tail -20 "$work/mtty.log" >&2; echo "lab image: building mtty failed" >&2; exit 1; }
install -D -m 0644 "$rootfs/tmp/mtty/mtty.ko" "$rootfs/lib/modules/$kver/updates/mtty.ko"
rm -rf "$rootfs/tmp/mtty"
# shellcheck disable=SC2016
chroot "$rootfs" dpkg-query -W -f '${Package}\n' | sort >"$work/packages.after"
# shellcheck disable=SC2046
chroot "$rootfs" apt-get purge -y -q $(comm -13 "$work/packages.before" "$work/packages.after") >>"$work/mtty.log" 2>&1
chroot "$rootfs" depmod -a "$kver"
# Boot time under TCG: an initramfs with only what mounts the root (virtio disk, ext4) unpacks in well under a
# second, where the default one (every storage and network driver, ~35 MiB) took about 7 s. e2scrub_reap has
# nothing to reap on a throwaway overlay and kept a CPU busy for over 30 s of each boot.
sed -i 's/^MODULES=.*/MODULES=list/' "$rootfs/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >>"$rootfs/etc/initramfs-tools/modules"
chroot "$rootfs" update-initramfs -u -k "$kver" >>"$work/initramfs.log" 2>&1 ||
    { tail -20 "$work/initramfs.log" >&2; echo "lab image: update-initramfs failed" >&2; exit 1; }
chroot "$rootfs" systemctl mask e2scrub_reap.service >/dev/null 2>&1
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
