# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A test double for the kernel's side of sysfs writes, on a fixture tree from sysfs_tree.

A fixture tree is made of real files, but nothing answers a write to them the way the kernel
does. This double records every write (path relative to the root, value) in order, and plays the
kernel's part for the attributes the collection writes:

- ``<dev>/driver_override``: stored as the kernel shows it ('(null)' when cleared);
- ``drivers/<name>/unbind`` (reached through ``<dev>/driver/unbind``): the device loses its driver;
- ``drivers_probe``: the device is bound to its override if set, else to the driver whose id
  table would claim it (``native_drivers``); only drivers that have a directory, as if loaded;
- ``<pf>/sriov_numvfs``: a change between two non-zero counts fails with EBUSY, as in the kernel.

The real recipe on a real kernel is exercised in the lab (`make lab`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import SysfsWriteFailed, SysfsWriter


class KernelDouble(SysfsWriter):
    """Records writes under ``root`` and applies their effect to the fixture tree."""

    def __init__(self, root: str | os.PathLike, native_drivers: dict[str, str] | None = None,
                 fail_on: tuple[str, str] | None = None) -> None:
        self.root = Path(root)
        self.native_drivers = dict(native_drivers or {})
        self.fail_on = fail_on   # (relative path, value) whose first write fails with EIO: an injected fault
        self.writes: list[tuple[str, str]] = []

    def _device_dir(self, address: str) -> Path:
        return (self.root / 'bus' / 'pci' / 'devices' / address).resolve()

    def _set_driver(self, address: str, driver: str | None) -> None:
        device = self._device_dir(address)
        link = device / 'driver'
        if link.is_symlink():
            old = Path(os.path.realpath(link))
            (old / address).unlink(missing_ok=True)
            link.unlink()
        lines = [line for line in (device / 'uevent').read_text().splitlines() if not line.startswith('DRIVER=')]
        if driver is not None:
            target = (self.root / 'bus' / 'pci' / 'drivers' / driver).resolve()
            link.symlink_to(os.path.relpath(target, device))
            (target / address).symlink_to(os.path.relpath(device, target))
            lines.insert(0, f'DRIVER={driver}')
        (device / 'uevent').write_text('\n'.join(lines) + '\n')

    def write(self, path: str, value: str) -> None:
        # Recorded as the kernel sees it: links resolved (driver/unbind is the driver's unbind file).
        relative = os.path.relpath(os.path.realpath(path), self.root.resolve())
        self.writes.append((relative, value))
        if self.fail_on == (relative, value):
            self.fail_on = None
            raise SysfsWriteFailed(f'writing {value.strip()!r} to {path} failed: {os.strerror(errno.EIO)}')
        name = os.path.basename(path)
        if name == 'driver_override':
            Path(path).write_text((value.strip() or '(null)') + '\n')
        elif name == 'unbind':
            self._set_driver(value.strip(), None)
        elif name == 'drivers_probe':
            address = value.strip()
            override = (self._device_dir(address) / 'driver_override').read_text().strip()
            driver = override if override != '(null)' else self.native_drivers.get(address)
            if driver and (self.root / 'bus' / 'pci' / 'drivers' / driver).is_dir():
                self._set_driver(address, driver)
        elif name == 'sriov_numvfs':
            current = int(Path(path).read_text().strip() or 0)
            if current and int(value):
                raise SysfsWriteFailed(f'writing {value!r} to {path} failed: {os.strerror(errno.EBUSY)}')
            Path(path).write_text(f'{int(value)}\n')
        else:
            raise AssertionError(f'the collection wrote to an attribute it should not touch: {relative}')
