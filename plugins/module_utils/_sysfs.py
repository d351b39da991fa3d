# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Read PCI devices from sysfs (``<sysfs_root>/bus/pci/devices/*``).

Only the kernel's cached attributes are read: never the ``config`` file (reading config space
can wake a device from D3cold or hang on a broken one) and never a subprocess. ``uevent``
carries ids, class, subsystem ids and the driver in a single read.

The kernel's links are relative (``bus/pci/devices/X -> ../../../devices/pci0000:00/.../X``,
``driver -> ../../../bus/pci/drivers/NAME``, ``physfn -> ../0000:3b:00.0``); we only ever need
the link's last component, so they are read with ``readlink`` and never resolved outside the
given root.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ansible_collections.passthrough.libvirt.plugins.module_utils._address import PciAddress, PciAddressError

BRIDGE_CLASS_PREFIXES = ('0604', '0609')  # PCI-to-PCI and semi-transparent bridges


class SysfsError(Exception):
    """The sysfs tree cannot be read (missing root, no bus/pci, unreadable device)."""


@dataclass
class SysfsDevice:
    """One PCI function as sysfs describes it. Ids are lowercase hex strings without ``0x``."""

    address: PciAddress
    vendor_id: str
    product_id: str
    class_id: str
    subsystem_vendor_id: str | None
    subsystem_product_id: str | None
    revision: str | None
    driver: str | None
    numa_node: int | None
    iommu_group: int | None
    physfn: PciAddress | None
    sriov_totalvfs: int | None
    sriov_numvfs: int | None
    link: dict[str, object] = field(default_factory=dict)
    netdevs: list[str] = field(default_factory=list)
    virtfns: list[PciAddress] = field(default_factory=list)

    @property
    def is_bridge(self) -> bool:
        return self.class_id.startswith(BRIDGE_CLASS_PREFIXES)

    @property
    def dev_type(self) -> str:
        """Nova's device type: ``type-VF`` (has a PF), ``type-PF`` (SR-IOV capable) or ``type-PCI``."""
        if self.physfn is not None:
            return 'type-VF'
        if self.sriov_totalvfs:
            return 'type-PF'
        return 'type-PCI'


def _read(path: str) -> str | None:
    """Content of a sysfs attribute, stripped; None when it does not exist or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode('ascii', 'replace').strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _link_name(path: str) -> str | None:
    """Last component of a symlink's target (``driver`` -> ``vfio-pci``), None when absent."""
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None or text == '':
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _hex_id(text: str | None, width: int) -> str | None:
    if not text:
        return None
    try:
        return f'{int(text, 16):0{width}x}'
    except ValueError:
        return None


def _parse_uevent(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition('=')
        if sep:
            values[key] = value
    return values


def _split_ids(value: str | None) -> tuple[str | None, str | None]:
    if not value or ':' not in value:
        return None, None
    first, second = value.split(':', 1)
    return _hex_id(first, 4), _hex_id(second, 4)


_LINK_ATTRS = ('current_link_speed', 'current_link_width', 'max_link_speed', 'max_link_width')


class Sysfs:
    """A sysfs tree rooted at ``root`` (``/sys`` on a host, any directory for fixture trees)."""

    def __init__(self, root: str = '/sys') -> None:
        self.root = root
        self.devices_dir = os.path.join(root, 'bus', 'pci', 'devices')

    def check(self) -> None:
        """Fail with a clear message when the root or its PCI bus does not exist."""
        if not os.path.isdir(self.root):
            raise SysfsError(f'sysfs_root {self.root!r} does not exist or is not a directory')
        if not os.path.isdir(self.devices_dir):
            raise SysfsError(f'sysfs_root {self.root!r} has no bus/pci/devices directory: not a sysfs tree with a PCI bus')

    def addresses(self) -> list[PciAddress]:
        """Every PCI address listed under bus/pci/devices, sorted. Entries that are not addresses are skipped."""
        self.check()
        result = []
        for name in os.listdir(self.devices_dir):
            try:
                result.append(PciAddress.parse(name))
            except PciAddressError:
                continue
        result.sort()
        return result

    def device_path(self, address: PciAddress) -> str:
        # str(PciAddress) is made only of hex digits, ':' and '.', so it is a safe path component.
        return os.path.join(self.devices_dir, str(address))

    def exists(self, address: PciAddress) -> bool:
        return os.path.isdir(self.device_path(address))

    def read_device(self, address: PciAddress) -> SysfsDevice:
        """Read one device. Raises SysfsError when it does not exist."""
        base = self.device_path(address) + '/'
        uevent_text = _read(base + 'uevent')
        if uevent_text is None:
            raise SysfsError(f'PCI device {address} does not exist under {self.devices_dir}')
        uevent = _parse_uevent(uevent_text)
        vendor_id, product_id = _split_ids(uevent.get('PCI_ID'))
        if vendor_id is None or product_id is None:
            # Very old kernels: fall back to the individual attributes.
            vendor_id = _hex_id(_read(base + 'vendor'), 4) or 'ffff'
            product_id = _hex_id(_read(base + 'device'), 4) or 'ffff'
        subsystem_vendor_id, subsystem_product_id = _split_ids(uevent.get('PCI_SUBSYS_ID'))
        class_id = _hex_id(uevent.get('PCI_CLASS') or _read(base + 'class'), 6) or '000000'
        numa_node = _int(_read(base + 'numa_node'))

        physfn = None
        physfn_name = _link_name(base + 'physfn')
        if physfn_name:
            try:
                physfn = PciAddress.parse(physfn_name)
            except PciAddressError:
                physfn = None

        totalvfs = numvfs = None
        if physfn is None:
            totalvfs = _int(_read(base + 'sriov_totalvfs'))
            if totalvfs is not None:
                numvfs = _int(_read(base + 'sriov_numvfs'))

        link: dict[str, object] = {}
        speed = _read(base + 'current_link_speed')
        if speed is not None:
            link['speed'] = speed
            link['width'] = _int(_read(base + 'current_link_width'))
            link['max_speed'] = _read(base + 'max_link_speed')
            link['max_width'] = _int(_read(base + 'max_link_width'))

        netdevs: list[str] = []
        if class_id.startswith('02'):
            try:
                netdevs = sorted(os.listdir(base + 'net'))
            except OSError:
                netdevs = []

        group = _link_name(base + 'iommu_group')
        revision = _hex_id(_read(base + 'revision'), 2)
        return SysfsDevice(
            address=address,
            vendor_id=vendor_id,
            product_id=product_id,
            class_id=class_id,
            subsystem_vendor_id=subsystem_vendor_id,
            subsystem_product_id=subsystem_product_id,
            revision=revision,
            driver=uevent.get('DRIVER') or None,
            numa_node=numa_node if numa_node is not None and numa_node >= 0 else None,
            iommu_group=_int(group),
            physfn=physfn,
            sriov_totalvfs=totalvfs,
            sriov_numvfs=numvfs,
            link=link,
            netdevs=netdevs,
        )

    def read_devices(self) -> list[SysfsDevice]:
        """Every device, sorted by address, with each PF's ``virtfns`` filled from its VFs' ``physfn``."""
        devices = []
        for address in self.addresses():
            try:
                devices.append(self.read_device(address))
            except SysfsError:
                continue  # removed while we were reading (hot-unplug, VFs being destroyed)
        by_address = {device.address: device for device in devices}
        for device in devices:
            if device.physfn is not None and device.physfn in by_address:
                by_address[device.physfn].virtfns.append(device.address)
        return devices

    def iommu_group_members(self, group: int) -> list[PciAddress]:
        """Addresses in an IOMMU group, sorted; empty when the group does not exist."""
        path = os.path.join(self.root, 'kernel', 'iommu_groups', str(int(group)), 'devices')
        try:
            names = os.listdir(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return []
            raise SysfsError(f'cannot list IOMMU group {group} at {path}: {exc.strerror}') from exc
        members = []
        for name in names:
            try:
                members.append(PciAddress.parse(name))
            except PciAddressError:
                continue
        return sorted(members)

    def iommu_enabled(self) -> bool:
        """True when the kernel has IOMMU groups (the IOMMU is on)."""
        try:
            return bool(os.listdir(os.path.join(self.root, 'kernel', 'iommu_groups')))
        except OSError:
            return False
