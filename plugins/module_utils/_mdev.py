# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Mediated devices in sysfs: their parents and types, the mdevs that exist, NVIDIA's SR-IOV vGPU VFs.

The kernel's layout (``<root>`` is ``/sys``)::

    class/mdev_bus/<parent>                      -> the parent's device directory (a PCI function, or a
                                                    virtual device such as mtty's)
    <parent dir>/mdev_supported_types/<type>/    name, description, device_api, available_instances,
                                                    create (write a UUID), devices/<uuid>
    bus/mdev/devices/<uuid>                      -> <parent dir>/<uuid>, with mdev_type -> its type and
                                                    remove (write 1)
    bus/pci/devices/<VF>/nvidia/                 creatable_vgpu_types, current_vgpu_type (NVIDIA vGPU on
                                                    kernel 6.8 and later: one VF per vGPU)

As ``_sysfs``, only links' last components are used, so a fixture tree under any root reads the
same. Writes take parsed values only: a UUID, a type id the parent lists, an integer vGPU type.
"""

from __future__ import annotations

import os
import re

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    MDEV_TYPE_RE,
    Mdev,
    MdevParent,
    MdevType,
    PciAddress,
    PciAddressError,
    Vgpu,
    parse_uuid,
)


class MdevWriteFailed(ChangeFailed):
    """Creating or removing an mdev, or setting a vGPU type, failed; the message says what the kernel answered."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding='utf-8', errors='replace') as handle:
            return handle.read().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text, 10) if text is not None else None
    except ValueError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


_VGPU_LINE = re.compile(r'^\s*(\d+)\s*:\s*(.+?)\s*$')


def parse_creatable(text: str | None) -> dict[int, str]:
    """``creatable_vgpu_types``: a header line ``ID : vGPU Name``, then ``<id> : <name>`` per type."""
    types = {}
    for line in (text or '').splitlines():
        match = _VGPU_LINE.match(line)
        if match and int(match[1]) > 0:
            types[int(match[1])] = match[2]
    return types


class MdevSysfs:
    """The mdev side of one sysfs tree."""

    def __init__(self, root: str = '/sys') -> None:
        self.root = root

    def _parent_dir(self, name: str) -> str:
        return os.path.join(self.root, 'class', 'mdev_bus', name)

    def parents(self) -> list[MdevParent]:
        """Every mdev parent with its types, by name."""
        result = []
        for name in _listdir(os.path.join(self.root, 'class', 'mdev_bus')):
            try:
                address = PciAddress.parse(name)
            except PciAddressError:
                address = None
            types_dir = os.path.join(self._parent_dir(name), 'mdev_supported_types')
            types = []
            for type_id in _listdir(types_dir):
                if not MDEV_TYPE_RE.match(type_id):
                    continue
                base = os.path.join(types_dir, type_id)
                types.append(MdevType(type_id, _read(os.path.join(base, 'name')), _read(os.path.join(base, 'description')),
                                      _read(os.path.join(base, 'device_api')), _int(_read(os.path.join(base, 'available_instances')))))
            result.append(MdevParent(name, address, types))
        return result

    def mdevs(self) -> list[Mdev]:
        """Every mdev that exists, by UUID: its parent (the directory that holds it) and type."""
        devices = os.path.join(self.root, 'bus', 'mdev', 'devices')
        result = []
        for name in _listdir(devices):
            try:
                uuid = parse_uuid('mdev', name)
                target = os.readlink(os.path.join(devices, name))
            except (SpecError, OSError):
                continue
            parent = os.path.basename(os.path.dirname(target.rstrip('/')))
            try:
                type_id = os.path.basename(os.readlink(os.path.join(devices, name, 'mdev_type')))
            except OSError:
                type_id = None
            result.append(Mdev(uuid, parent, type_id))
        return result

    def vgpu(self, address: PciAddress) -> Vgpu | None:
        """An NVIDIA vGPU VF's types; None for any other device."""
        base = os.path.join(self.root, 'bus', 'pci', 'devices', str(address), 'nvidia')
        creatable = _read(os.path.join(base, 'creatable_vgpu_types'))
        current = _read(os.path.join(base, 'current_vgpu_type'))
        if creatable is None and current is None:
            return None
        number = _int(current)
        return Vgpu(parse_creatable(creatable), number if number else None)

    # -- writes ------------------------------------------------------------------------------------
    def _write(self, path: str, value: str, what: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | getattr(os, 'O_CLOEXEC', 0))   # O_TRUNC: nothing to sysfs, needed for a fixture file
        except OSError as exc:
            raise MdevWriteFailed(f'{what}: cannot open {path}: {exc.strerror}') from None
        try:
            os.write(fd, value.encode('ascii'))
        except OSError as exc:
            raise MdevWriteFailed(f'{what}: the kernel refused it: {exc.strerror}') from None
        finally:
            os.close(fd)

    def create(self, parent: str, type_id: str, uuid: str) -> None:
        """Create mdev ``uuid`` of ``type_id`` on ``parent`` (both as ``parents()`` lists them)."""
        uuid = parse_uuid('mdev', uuid)
        if '/' in parent or parent in ('.', '..') or not MDEV_TYPE_RE.match(type_id):
            raise MdevWriteFailed(f'mdev {uuid}: parent {parent!r} or type {type_id!r} is not one sysfs lists')
        self._write(os.path.join(self._parent_dir(parent), 'mdev_supported_types', type_id, 'create'), uuid,
                    f'create mdev {uuid} of type {type_id} on {parent}')

    def remove(self, uuid: str) -> None:
        uuid = parse_uuid('mdev', uuid)
        self._write(os.path.join(self.root, 'bus', 'mdev', 'devices', uuid, 'remove'), '1', f'remove mdev {uuid}')

    def exists(self, uuid: str) -> bool:
        return os.path.lexists(os.path.join(self.root, 'bus', 'mdev', 'devices', parse_uuid('mdev', uuid)))

    def set_vgpu_type(self, address: PciAddress, type_id: int) -> None:
        """Set an NVIDIA vGPU VF's type (0: none)."""
        if isinstance(type_id, bool) or not isinstance(type_id, int) or type_id < 0:
            raise MdevWriteFailed(f'{address}: vGPU type {type_id!r} is not a type number')
        self._write(os.path.join(self.root, 'bus', 'pci', 'devices', str(address), 'nvidia', 'current_vgpu_type'), str(type_id),
                    f'{address}: set vGPU type {type_id}')
