#!/bin/sh
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Runs inside a lab hypervisor (tests/lab/lab.py --linux-guest): the kernel and initramfs of pcitest-linux, a nested
# guest that runs Linux (tests/lab/domains/pcitest-linux.xml). Its kernel is the hypervisor's own; its initramfs is
# the hypervisor's, with a second archive appended (at a 4-byte boundary) that holds /lab-init (the guest's init, given
# by rdinit=) and the drivers of the devices the lab hands it (e1000e, nvme) with their dependencies. /lab-init loads them, so that a
# device hot-plugged into the guest is probed and bound, and a hot-unplug goes through the driver's remove; then it
# copies the kernel's messages to the serial console, a file on the hypervisor the lab reads.
set -eu
kernel=$(uname -r)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/lab" /var/lib/libvirt/boot
for module in nvme e1000e; do modprobe --show-depends "$module"; done |
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > "$work/modules"
while read -r path; do
    cp "$path" "$work/root/lab/"
    echo "${path##*/}" >> "$work/root/lab/order"
done < "$work/modules"
cat > "$work/root/lab-init" <<'INIT'
#!/bin/sh
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# A module the emulated CPU cannot use (crct10dif-pclmul) fails to load: the generic one serves.
while read -r module; do insmod "/lab/$module" 2>/dev/null || true; done < /lab/order
echo "pcitest-linux: ready" > /dev/ttyS0
exec cat /dev/kmsg > /dev/ttyS0
INIT
chmod 755 "$work/root/lab-init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/lab.cpio"
# The kernel looks for an appended archive at a 4-byte boundary (it skips zeros up to it): the initramfs is padded.
initrd=/var/lib/libvirt/boot/pcitest-linux.initrd
cp "/boot/initrd.img-$kernel" "$initrd"
size=$(stat -c %s "$initrd")
head -c $(( (4 - size % 4) % 4 )) /dev/zero >> "$initrd"
cat "$work/lab.cpio" >> "$initrd"
cp "/boot/vmlinuz-$kernel" /var/lib/libvirt/boot/pcitest-linux.vmlinuz
echo "$kernel: $(wc -l < "$work/modules") modules"
