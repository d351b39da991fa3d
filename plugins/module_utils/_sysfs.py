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

import os
import re

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, Refused
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciAddressError, PciDevice


class SysfsError(Refused):
    """The sysfs tree cannot be read (missing root, no bus/pci, unreadable device), or a value that must not reach it."""


class SysfsWriteFailed(ChangeFailed):
    """A write to sysfs failed, or the kernel did not do what the write asked."""


_O_DIR = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_CLOEXEC', 0)
_O_FILE = os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0)


def _read_at(dir_fd: int, name: str) -> str | None:
    """Content of a sysfs attribute relative to an open device directory, stripped; None when absent."""
    try:
        fd = os.open(name, _O_FILE, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode('ascii', 'replace').strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _link_name_at(dir_fd: int, name: str) -> str | None:
    """Last component of a symlink's target (``driver`` -> ``vfio-pci``), None when absent."""
    try:
        return os.path.basename(os.readlink(name, dir_fd=dir_fd))
    except OSError:
        return None


def _list_at(dir_fd: int, name: str) -> list[str]:
    """Entries of a subdirectory, sorted; empty when absent."""
    try:
        fd = os.open(name, _O_DIR, dir_fd=dir_fd)
    except OSError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding='ascii', errors='replace') as handle:
            return handle.read().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _hex_id(text: str | None, width: int) -> str | None:
    """Normalise a hex id to ``width`` lowercase digits ('0x8086', '8086'; '20000' for a class)."""
    if not text:
        return None
    try:
        number = int(text, 16)
    except ValueError:
        return None
    return text.lower() if len(text) == width and text.isalnum() else f'{number:0{width}x}'


def _split_ids(value: str | None) -> tuple[str | None, str | None]:
    """'8086:1572' (uevent's PCI_ID and PCI_SUBSYS_ID) -> ('8086', '1572')."""
    if not value:
        return None, None
    first, sep, second = value.partition(':')
    if not sep:
        return None, None
    return _hex_id(first, 4), _hex_id(second, 4)


def _parse_uevent(text: str) -> dict[str, str]:
    values = {}
    for line in text.split('\n'):
        key, sep, value = line.partition('=')
        if sep:
            values[key] = value
    return values


# The kernel writes a PCI device's uevent in this order (drivers/pci/pci-driver.c, pci_uevent), with
# the ids in upper-case hex and DRIVER= first when a driver is bound (drivers/base/core.c).
_UEVENT_RE = re.compile(
    r'(?:DRIVER=([^\n]*)\n)?PCI_CLASS=([0-9A-Fa-f]{1,6})\nPCI_ID=([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})\n'
    r'PCI_SUBSYS_ID=([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})\n'
)


def _uevent_fields(text: str) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None]:
    """(driver, class_id, vendor_id, product_id, subsystem_vendor_id, subsystem_product_id) from uevent text."""
    match = _UEVENT_RE.match(text)
    if match:
        driver, pci_class, vendor, product, sub_vendor, sub_product = match.groups()
        return driver or None, pci_class.lower().zfill(6), vendor.lower(), product.lower(), sub_vendor.lower(), sub_product.lower()
    # Any other layout: read it key by key.
    uevent = _parse_uevent(text)
    vendor_id, product_id = _split_ids(uevent.get('PCI_ID'))
    subsystem_vendor_id, subsystem_product_id = _split_ids(uevent.get('PCI_SUBSYS_ID'))
    return (uevent.get('DRIVER') or None, _hex_id(uevent.get('PCI_CLASS'), 6), vendor_id, product_id,
            subsystem_vendor_id, subsystem_product_id)


def _read_link_status(dir_fd: int) -> dict[str, object]:
    # The kernel answers current_link_* and max_link_width by reading the device's PCIe capability
    # registers (config space), which can wake a device from D3cold: only read on request.
    speed = _read_at(dir_fd, 'current_link_speed')
    if speed is None:
        return {}
    return {
        'speed': speed,
        'width': _int(_read_at(dir_fd, 'current_link_width')),
        'max_speed': _read_at(dir_fd, 'max_link_speed'),
        'max_width': _int(_read_at(dir_fd, 'max_link_width')),
    }


class Sysfs:
    """A sysfs tree rooted at ``root`` (``/sys`` on a host, any directory for fixture trees).

    ``pcie_link`` also reads the PCIe link attributes, which the kernel takes from config space.
    """

    def __init__(self, root: str = '/sys', pcie_link: bool = False) -> None:
        self.root = root
        self.devices_dir = os.path.join(root, 'bus', 'pci', 'devices')
        self.pcie_link = pcie_link

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

    def numa_sockets(self) -> dict[int, int]:
        """NUMA node -> CPU socket (physical_package_id of the node's first CPU), for numa_policy socket.

        Nodes without CPUs (memory-only) and a tree without NUMA information give no entry.
        """
        nodes_dir = os.path.join(self.root, 'devices', 'system', 'node')
        sockets: dict[int, int] = {}
        try:
            names = os.listdir(nodes_dir)
        except OSError:
            return sockets
        for name in names:
            if not name.startswith('node') or not name[4:].isdigit():
                continue
            cpulist = _read_text(os.path.join(nodes_dir, name, 'cpulist'))
            first = re.match(r'^\s*(\d+)', cpulist or '')
            if first is None:
                continue
            package = _int(_read_text(os.path.join(self.root, 'devices', 'system', 'cpu', f'cpu{first[1]}', 'topology',
                                                   'physical_package_id')))
            if package is not None and package >= 0:
                sockets[int(name[4:])] = package
        return sockets

    def read_device(self, address: PciAddress) -> PciDevice:
        """Read one device. Raises SysfsError when it does not exist."""
        self.check()
        devices_fd = os.open(self.devices_dir, _O_DIR)
        try:
            device = self._read_at(devices_fd, address)
        finally:
            os.close(devices_fd)
        if device is None:
            raise SysfsError(f'PCI device {address} does not exist under {self.devices_dir}')
        return device

    def read_devices(self) -> list[PciDevice]:
        """Every device, sorted by address, with each PF's ``virtfns`` filled from its VFs' ``physfn``."""
        addresses = self.addresses()
        devices = []
        devices_fd = os.open(self.devices_dir, _O_DIR)
        try:
            for address in addresses:
                device = self._read_at(devices_fd, address)
                if device is not None:  # None: removed while we were reading (hot-unplug, VFs destroyed)
                    devices.append(device)
        finally:
            os.close(devices_fd)
        by_address = {device.address: device for device in devices}
        for device in devices:
            if device.physfn is not None and device.physfn in by_address:
                by_address[device.physfn].virtfns.append(device.address)
        return devices

    def _read_at(self, devices_fd: int, address: PciAddress) -> PciDevice | None:
        # One open of the device directory (through the kernel's bus/pci/devices link); every
        # attribute is then opened relative to it, without resolving the long path again.
        try:
            fd = os.open(str(address), _O_DIR, dir_fd=devices_fd)
        except OSError:
            return None
        try:
            return self._read_device_dir(fd, address)
        finally:
            os.close(fd)

    def _read_device_dir(self, fd: int, address: PciAddress) -> PciDevice | None:
        uevent_text = _read_at(fd, 'uevent')
        if uevent_text is None:
            return None
        driver, class_id, vendor_id, product_id, subsystem_vendor_id, subsystem_product_id = _uevent_fields(uevent_text + '\n')
        if vendor_id is None or product_id is None:
            # Not in uevent (very old kernels): the individual attributes.
            vendor_id = _hex_id(_read_at(fd, 'vendor'), 4) or 'ffff'
            product_id = _hex_id(_read_at(fd, 'device'), 4) or 'ffff'
        if class_id is None:
            class_id = _hex_id(_read_at(fd, 'class'), 6) or '000000'

        physfn = None
        physfn_name = _link_name_at(fd, 'physfn')
        if physfn_name:
            try:
                physfn = PciAddress.parse(physfn_name)
            except PciAddressError:
                physfn = None
        totalvfs = numvfs = None
        if physfn is None:
            totalvfs = _int(_read_at(fd, 'sriov_totalvfs'))
            if totalvfs is not None:
                numvfs = _int(_read_at(fd, 'sriov_numvfs'))

        numa_node = _int(_read_at(fd, 'numa_node'))
        return PciDevice(
            address=address,
            vendor_id=vendor_id,
            product_id=product_id,
            class_id=class_id,
            subsystem_vendor_id=subsystem_vendor_id,
            subsystem_product_id=subsystem_product_id,
            revision=_hex_id(_read_at(fd, 'revision'), 2),
            driver=driver,
            numa_node=numa_node if numa_node is not None and numa_node >= 0 else None,
            iommu_group=_int(_link_name_at(fd, 'iommu_group')),
            physfn=physfn,
            sriov_totalvfs=totalvfs,
            sriov_numvfs=numvfs,
            link=_read_link_status(fd) if self.pcie_link else {},
            netdevs=_list_at(fd, 'net') if class_id.startswith('02') else [],
        )


# -- the write side ---------------------------------------------------------------------------------

_DRIVER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
_O_WRITE = os.O_WRONLY | getattr(os, 'O_CLOEXEC', 0)


def check_driver_name(where: str, name: object) -> str:
    """A driver name as the kernel spells them (vfio-pci, mlx5_core); anything else could reach a path."""
    if not isinstance(name, str) or not _DRIVER_NAME.match(name):
        raise SysfsError(f'{where}: {name!r} is not a kernel driver name (letters, digits, "_", "-", ".")')
    return name


class SysfsWriter:
    """Writes sysfs attributes: the one place the collection changes the kernel's PCI state.

    Tests substitute a double that records each write and plays the kernel's part on a fixture tree.
    """

    def write(self, path: str, value: str) -> None:
        try:
            fd = os.open(path, _O_WRITE)
        except OSError as exc:
            raise SysfsWriteFailed(f'cannot open {path} for writing: {exc.strerror}') from None
        try:
            os.write(fd, value.encode('ascii'))
        except OSError as exc:
            raise SysfsWriteFailed(f'writing {value.strip()!r} to {path} failed: {exc.strerror}') from None
        finally:
            os.close(fd)


class SysfsControl:
    """Binding devices to drivers and setting VF counts, with the kernel's own recipes."""

    def __init__(self, sysfs: Sysfs, writer: SysfsWriter | None = None) -> None:
        self.sysfs = sysfs
        self.writer = writer or SysfsWriter()

    def _path(self, address: PciAddress, attribute: str) -> str:
        # str(PciAddress) is only hex digits, ':' and '.': a safe path component.
        return os.path.join(self.sysfs.devices_dir, str(address), attribute)

    def driver(self, address: PciAddress) -> str | None:
        try:
            return os.path.basename(os.readlink(self._path(address, 'driver')))
        except OSError:
            return None

    def driver_override(self, address: PciAddress) -> str | None:
        try:
            with open(self._path(address, 'driver_override'), encoding='ascii') as handle:
                value = handle.read().strip()
        except OSError:
            return None
        return None if value in ('', '(null)') else value

    def bind(self, address: PciAddress, driver: str, keep_override: bool = True) -> bool:
        """Move the device to ``driver``: driver_override, unbind, drivers_probe, then check the driver link.

        With ``keep_override`` the override stays, so that the device goes back to ``driver`` after
        libvirt releases it (libvirt reprobes released devices). Returns False when nothing had to change.
        """
        check_driver_name('driver', driver)
        current = self.driver(address)
        if current == driver and (self.driver_override(address) == driver or not keep_override):
            return False
        self.writer.write(self._path(address, 'driver_override'), driver)
        if current is not None and current != driver:
            self.writer.write(self._path(address, 'driver/unbind'), str(address))
        if current != driver:
            self.writer.write(os.path.join(self.sysfs.root, 'bus', 'pci', 'drivers_probe'), str(address))
        if not keep_override:
            self.writer.write(self._path(address, 'driver_override'), '\n')
        bound = self.driver(address)
        if bound != driver:
            raise SysfsWriteFailed(f'{address}: bound to {bound or "no driver"} after probing, expected {driver} '
                                   f'(is the {driver} module loaded?)')
        return True

    def unbind(self, address: PciAddress) -> bool:
        """Leave the device without a driver and without an override. Returns False when it already was."""
        changed = False
        if self.driver_override(address) is not None:
            self.writer.write(self._path(address, 'driver_override'), '\n')
            changed = True
        if self.driver(address) is not None:
            self.writer.write(self._path(address, 'driver/unbind'), str(address))
            changed = True
        return changed

    def restore(self, address: PciAddress, original: str | None) -> bool:
        """Give the device back to the driver it had before (or to none), clearing the override."""
        if original is None:
            return self.unbind(address)
        return self.bind(address, original, keep_override=False)

    def set_numvfs(self, pf: PciAddress, count: int) -> bool:
        """Set a PF's VF count; the kernel refuses a change between two non-zero counts, so go through 0."""
        base = self.sysfs.read_device(pf)
        if base.sriov_totalvfs is None:
            raise SysfsError(f'{pf} is not an SR-IOV physical function (no sriov_totalvfs)')
        if not 0 <= count <= base.sriov_totalvfs:
            raise SysfsError(f'{pf}: {count} VFs asked, the device supports 0 to {base.sriov_totalvfs}')
        if base.sriov_numvfs == count:
            return False
        path = self._path(pf, 'sriov_numvfs')
        if base.sriov_numvfs and count:
            self.writer.write(path, '0')
        self.writer.write(path, str(count))
        return True
