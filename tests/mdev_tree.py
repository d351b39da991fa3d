# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mediated-device parts of a fixture sysfs tree (written beside tests/sysfs_tree.py's PCI devices), as real files.

The kernel's layout: ``class/mdev_bus/<parent>`` links to the parent's device directory, which
holds ``mdev_supported_types/<type>/`` (``name``, ``description``, ``device_api``,
``available_instances``, ``create``, ``devices/``) and one directory per mdev, ``<uuid>/`` with an
``mdev_type`` link and ``remove``; ``bus/mdev/devices/<uuid>`` links to that directory. NVIDIA's
SR-IOV vGPU VFs have ``nvidia/creatable_vgpu_types`` and ``nvidia/current_vgpu_type``.

``KernelDouble`` plays the kernel's part for writes: a UUID written to ``create`` makes the mdev
and takes one instance, ``1`` written to ``remove`` removes it. No mdev driver can be loaded on
the test machines; the nested lab runs the kernel's own mtty sample driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def device_dir(root: Path, address: str) -> Path:
    """A PCI device's real directory in a tree sysfs_tree wrote."""
    return (root / 'bus' / 'pci' / 'devices' / address).resolve()


def virtual_parent(root: Path, name: str = 'mtty') -> Path:
    """A virtual parent's device directory, as the mtty sample driver makes it (``devices/virtual/mtty/mtty``)."""
    path = root / 'devices' / 'virtual' / name / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def mdev_parent(root: Path, parent_dir: Path, types: dict[str, dict[str, Any]]) -> None:
    """Make ``parent_dir`` an mdev parent with ``types``: type id -> {name, description, device_api, available_instances}."""
    for type_id, attrs in types.items():
        base = parent_dir / 'mdev_supported_types' / type_id
        (base / 'devices').mkdir(parents=True, exist_ok=True)
        for key in ('name', 'description', 'device_api', 'available_instances'):
            if attrs.get(key) is not None:
                (base / key).write_text(f'{attrs[key]}\n')
        (base / 'create').write_text('')
    _link(root / 'class' / 'mdev_bus' / parent_dir.name, parent_dir)


def mdev(root: Path, parent_dir: Path, type_id: str, uuid: str) -> None:
    """An existing mdev ``uuid`` of ``type_id`` on the parent at ``parent_dir``."""
    path = parent_dir / uuid
    path.mkdir()
    _link(path / 'mdev_type', parent_dir / 'mdev_supported_types' / type_id)
    (path / 'remove').write_text('')
    _link(root / 'bus' / 'mdev' / 'devices' / uuid, path)
    _link(parent_dir / 'mdev_supported_types' / type_id / 'devices' / uuid, path)


def nvidia_vgpu(root: Path, address: str, creatable: dict[int, str], current: int = 0) -> None:
    """NVIDIA's vGPU attributes on a VF (kernel 6.8 and later, nvidia's vfio variant driver)."""
    base = device_dir(root, address) / 'nvidia'
    base.mkdir(exist_ok=True)
    lines = ['ID    : vGPU Name'] + [f'{number:<6}: {name}' for number, name in creatable.items()]
    (base / 'creatable_vgpu_types').write_text('\n'.join(lines) + '\n')
    (base / 'current_vgpu_type').write_text(f'{current}\n')


class KernelDouble(MdevSysfs):
    """MdevSysfs whose writes do what the kernel would do to the fixture tree (no mdev driver runs here)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, str]] = []

    def _write(self, path: str, value: str, what: str) -> None:
        super()._write(path, value, what)          # the real write (the fixture's file), errors as on a host
        self.writes.append((os.path.relpath(path, self.root), value))
        target = Path(path)
        root = Path(self.root)
        if target.name == 'create':
            type_dir = target.parent
            parent_dir = type_dir.parent.parent.resolve()
            available = type_dir / 'available_instances'
            count = int(available.read_text())
            if count < 1:
                raise_write(what)
            available.write_text(f'{count - 1}\n')
            mdev(root, parent_dir, type_dir.name, value)
        elif target.name == 'remove':
            path_dir = target.parent.resolve()
            type_dir = Path(os.path.realpath(path_dir / 'mdev_type'))
            (type_dir / 'devices' / path_dir.name).unlink()
            available = type_dir / 'available_instances'
            available.write_text(f'{int(available.read_text()) + 1}\n')
            (root / 'bus' / 'mdev' / 'devices' / path_dir.name).unlink()
            for child in path_dir.iterdir():
                child.unlink()
            path_dir.rmdir()


def raise_write(what: str) -> None:
    from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevWriteFailed
    raise MdevWriteFailed(f'{what}: the kernel refused it: No space left on device')


def vgpu_server(root: Path) -> None:
    """A host with an NVIDIA L40S-like PF (kernel 6.8+ vGPU: SR-IOV) and two of its VFs on nvidia's vfio variant
    driver, each offering two vGPU types; VF 1 has one set."""
    from ansible_collections.passthrough.libvirt.tests import sysfs_tree
    pf = {'vendor_id': sysfs_tree.NVIDIA, 'class_code': 0x030200, 'revision': 0xA1, 'subsystem_vendor_id': sysfs_tree.NVIDIA,
          'subsystem_device_id': 0x1851, 'numa_node': 0, 'parent': '0000:00:01.0'}
    sysfs_tree.write_tree(root, [
        sysfs_tree._root_port('0000:00:01.0', 0, 1, 16),     # pylint: disable=protected-access
        sysfs_tree.FixtureDevice('0000:01:00.0', device_id=0x26B9, driver='nvidia', iommu_group=2, sriov_totalvfs=32, sriov_numvfs=2,
                                 **pf),
        sysfs_tree.FixtureDevice('0000:01:00.4', device_id=0x26B9, driver='nvidia-vgpu-vfio', iommu_group=3, physfn='0000:01:00.0',
                                 **pf),
        sysfs_tree.FixtureDevice('0000:01:00.5', device_id=0x26B9, driver='nvidia-vgpu-vfio', iommu_group=4, physfn='0000:01:00.0',
                                 **pf),
    ])
    types = {1155: 'NVIDIA L40S-4Q', 1156: 'NVIDIA L40S-8Q'}
    nvidia_vgpu(root, '0000:01:00.4', types)
    nvidia_vgpu(root, '0000:01:00.5', types, current=1156)
