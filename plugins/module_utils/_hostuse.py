# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""What the host itself is using, by PCI device: the devices a whitelist must not take.

A device is in use by the host when one of its network interfaces (or the bond or bridge it is
enslaved to) has an address or carries a default route, when it holds a mounted filesystem or
active swap (directly, or under device-mapper / md), or when it is the boot VGA device.

Network facts come from a small reader object, so tests give fixed facts instead of patching
files; the default one asks the kernel (ioctl, /proc/net).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from typing import Collection

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import HostUse, PciAddress, PciAddressError

_SIOCGIFADDR = 0x8915
_IPV6_SCOPE_GLOBAL = '00'


def pci_address_in_path(path: str) -> PciAddress | None:
    """The PCI function a sysfs device path belongs to: its last component that is a PCI address.

    ``/sys/devices/pci0000:00/0000:00:03.0/virtio3/net/eth0`` -> 0000:00:03.0 (a netdev may sit
    below an intermediate device such as virtioN; a disk below nvme/nvme0/nvme0n1).
    """
    found = None
    for part in path.split('/'):
        if part.count(':') >= 2 and '.' in part:
            try:
                found = PciAddress.parse(part)
            except PciAddressError:
                continue
    return found


class KernelNetFacts:
    """Addresses and default routes of network interfaces, as the running kernel reports them.

    One object answers for one reading of the host: /proc/net/if_inet6 is read once, at the first question.
    """

    def __init__(self, proc_root: str = '/proc') -> None:
        self.proc_root = proc_root
        self._ipv6: dict[str, list[str]] | None = None

    def addresses(self, ifname: str) -> list[str]:
        """The IPv4 address (SIOCGIFADDR) and global IPv6 addresses of an interface."""
        found = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                data = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack('256s', ifname[:15].encode()))
                found.append(socket.inet_ntoa(data[20:24]))
            except OSError:
                pass   # no IPv4 address (EADDRNOTAVAIL), or no such interface
        if self._ipv6 is None:
            # if_inet6: address, ifindex, prefix length, scope, flags, name. Link-local (scope 20)
            # addresses exist on every interface that is up: they do not mean the host relies on it.
            self._ipv6 = {}
            for fields in self._table('net/if_inet6'):
                if len(fields) == 6 and fields[3] == _IPV6_SCOPE_GLOBAL:
                    self._ipv6.setdefault(fields[5], []).append(str(ipaddress.IPv6Address(int(fields[0], 16))))
        return found + self._ipv6.get(ifname, [])

    def default_route_interfaces(self) -> set[str]:
        interfaces = set()
        for fields in self._table('net/route')[1:]:
            # Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            if len(fields) >= 8 and fields[1] == '00000000' and fields[7] == '00000000':
                interfaces.add(fields[0])
        for fields in self._table('net/ipv6_route'):
            # destination, prefix length, source, source length, next hop, metric, refcnt, use, flags, iface
            if len(fields) == 10 and fields[0] == '0' * 32 and fields[1] == '00' and fields[9] != 'lo':
                interfaces.add(fields[9])
        return interfaces

    def _table(self, name: str) -> list[list[str]]:
        try:
            with open(os.path.join(self.proc_root, name), encoding='ascii', errors='replace') as handle:
                return [line.split() for line in handle]
        except OSError:
            return []


class HostUseReader:
    """Reads what the host uses from ``sysfs_root`` and ``proc_root``; ``net`` gives the network facts."""

    def __init__(self, sysfs_root: str = '/sys', proc_root: str = '/proc', net: KernelNetFacts | None = None) -> None:
        self.sysfs_root = sysfs_root
        self.proc_root = proc_root
        self._net = net   # None: the kernel's, asked afresh by every read()

    def read(self, only: Collection[PciAddress] | None = None) -> HostUse:
        """What the host uses; ``only`` (the devices a run could give to a guest) skips the facts of every other device."""
        use = HostUse()
        wanted = set(only) if only is not None else None
        if wanted is None or wanted:
            self._network(use, wanted, self._net or KernelNetFacts(self.proc_root))
            self._storage(use)
            self._boot_vga(use, wanted)
        return use

    # -- network ---------------------------------------------------------------------------------
    def _network(self, use: HostUse, wanted: set[PciAddress] | None, net) -> None:
        class_net = os.path.join(self.sysfs_root, 'class', 'net')
        try:
            interfaces = sorted(os.listdir(class_net))
        except OSError:
            return
        default_route = net.default_route_interfaces()
        for ifname in interfaces:
            # The kernel's link holds the device path (../../devices/pci0000:00/0000:00:03.0/virtio0/net/eth0):
            # its text names the PCI function, so nothing needs resolving.
            try:
                address = pci_address_in_path(os.readlink(os.path.join(class_net, ifname)))
            except OSError:
                address = pci_address_in_path(os.path.realpath(os.path.join(class_net, ifname)))
            if address is None or (wanted is not None and address not in wanted):
                continue   # virtual interface (lo, bridges, bonds), or a device no run could give away
            for name in self._upper_chain(class_net, ifname):
                via = '' if name == ifname else f' through {name}'
                addresses = net.addresses(name)
                if addresses:
                    use.add(address, f'network interface {ifname} has address {", ".join(addresses)}{via}')
                if name in default_route:
                    use.add(address, f'network interface {ifname} carries the default route{via}')

    @staticmethod
    def _upper_chain(class_net: str, ifname: str) -> list[str]:
        """The interface, then the bond or bridge it is enslaved to, and so on up."""
        chain = [ifname]
        while len(chain) < 8:
            try:
                master = os.path.basename(os.readlink(os.path.join(class_net, chain[-1], 'master')))
            except OSError:
                break
            if master in chain:
                break
            chain.append(master)
        return chain

    # -- storage ---------------------------------------------------------------------------------
    def _storage(self, use: HostUse) -> None:
        for device_number, what in self._mounted_block_devices():
            for address in self._pci_of_block(device_number, set()):
                use.add(address, what)

    def _mounted_block_devices(self) -> list[tuple[str, str]]:
        """(major:minor, 'holds mounted filesystem /boot (sda1)') for mounts and active swap."""
        found = []
        try:
            with open(os.path.join(self.proc_root, 'self', 'mountinfo'), encoding='utf-8', errors='replace') as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) > 4 and not fields[2].startswith('0:'):
                        source = line.split(' - ', 1)[1].split()[1] if ' - ' in line else fields[2]
                        found.append((fields[2], f'holds the mounted filesystem {fields[4]} ({source})'))
        except OSError:
            pass
        try:
            with open(os.path.join(self.proc_root, 'swaps'), encoding='utf-8', errors='replace') as handle:
                for line in list(handle)[1:]:
                    fields = line.split()
                    if fields and fields[1] == 'partition':
                        try:
                            rdev = os.stat(fields[0]).st_rdev
                        except OSError:
                            continue
                        found.append((f'{os.major(rdev)}:{os.minor(rdev)}', f'holds active swap {fields[0]}'))
        except OSError:
            pass
        return found

    def _pci_of_block(self, device_number: str, seen: set[str]) -> set[PciAddress]:
        """PCI devices under a block device; device-mapper and md devices are followed to their slaves."""
        if device_number in seen:
            return set()
        seen.add(device_number)
        path = os.path.join(self.sysfs_root, 'dev', 'block', device_number)
        real = os.path.realpath(path)
        address = pci_address_in_path(real)
        if address is not None:
            return {address}
        found: set[PciAddress] = set()
        slaves = os.path.join(real, 'slaves')
        try:
            names = os.listdir(slaves)
        except OSError:
            return found
        for name in names:
            try:
                with open(os.path.join(slaves, name, 'dev'), encoding='ascii') as handle:
                    found |= self._pci_of_block(handle.read().strip(), seen)
            except OSError:
                continue
        return found

    # -- display ---------------------------------------------------------------------------------
    def _boot_vga(self, use: HostUse, wanted: set[PciAddress] | None) -> None:
        devices = os.path.join(self.sysfs_root, 'bus', 'pci', 'devices')
        if wanted is not None:
            names = [str(address) for address in wanted]
        else:
            try:
                names = os.listdir(devices)
            except OSError:
                return
        for name in names:
            try:
                with open(os.path.join(devices, name, 'boot_vga'), encoding='ascii') as handle:
                    if handle.read().strip() == '1':
                        use.add(PciAddress.parse(name), 'is the boot VGA device (the console)')
            except (OSError, PciAddressError):
                continue
