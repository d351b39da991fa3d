#!/usr/bin/env bash
# Start libvirtd (and virtlogd) when nothing answers at qemu:///system, also without systemd.
# Idempotent: does nothing when a daemon already answers. Needs root.
set -euo pipefail

uri=qemu:///system
answers() { virsh -c "$uri" uri >/dev/null 2>&1; }

if answers; then
    echo "libvirtd: already answering at $uri"
    exit 0
fi

# Debian's qemu driver runs guests as libvirt-qemu; libvirt-daemon-system would create it.
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent group kvm >/dev/null || groupadd --system kvm
getent passwd libvirt-qemu >/dev/null ||
    useradd --system -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
id -nG libvirt-qemu | grep -qw kvm || usermod -a -G kvm libvirt-qemu

# Without udev (containers, minimal VMs) /dev/kvm stays root-only: QEMU then cannot use KVM as
# libvirt-qemu, and libvirt re-probes QEMU's capabilities (half a minute) on every call. Apply
# what the distribution's udev rule does: group kvm, mode 0660.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi
getent group libvirt >/dev/null || groupadd --system libvirt
mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt

if [ -d /run/systemd/system ] && systemctl start libvirtd >/dev/null 2>&1; then
    echo "libvirtd: started with systemctl"
else
    pgrep -x virtlogd >/dev/null || virtlogd -d
    libvirtd -d || true   # fails harmlessly when a daemon holding its pid file is still starting
    echo "libvirtd: started as a daemon (no systemd)"
fi

for _ in $(seq 1 50); do
    if answers; then
        echo "libvirtd: answering at $uri"
        exit 0
    fi
    sleep 0.2
done
echo "libvirtd: started but does not answer at $uri after 10 s; see /var/log/libvirt" >&2
exit 1
