# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Vendor and device names from the pci.ids database, read once per process.

A missing or unreadable database is not an error: names are simply ``None``.
"""

from __future__ import annotations

import gzip
import os

DEFAULT_PATHS = (
    '/usr/share/misc/pci.ids',
    '/usr/share/hwdata/pci.ids',
    '/usr/share/pci.ids',
    '/usr/share/misc/pci.ids.gz',
    '/usr/share/hwdata/pci.ids.gz',
)


class PciIds:
    """Names of PCI vendors and devices, keyed by lowercase 4-digit hex ids."""

    def __init__(self, vendors: dict[str, str] | None = None, devices: dict[tuple[str, str], str] | None = None,
                 path: str | None = None) -> None:
        self.vendors = vendors or {}
        self.devices = devices or {}
        self.path = path

    @classmethod
    def parse(cls, text: str, path: str | None = None) -> PciIds:
        """Parse the vendor/device part of pci.ids text (subsystems and the class list are skipped)."""
        vendors: dict[str, str] = {}
        devices: dict[tuple[str, str], str] = {}
        vendor = None
        for line in text.splitlines():
            if not line or line[0] == '#':
                continue
            if line[0] == '\t':
                # "\tdddd  name" is a device of the current vendor; "\t\t..." a subsystem (skipped).
                if vendor is not None and line[1] != '\t' and len(line) > 7 and line[5:7] == '  ':
                    devices[(vendor, line[1:5].lower())] = line[7:].strip()
                continue
            if line.startswith('C '):
                break  # the device class list follows the vendors to the end of the file
            if len(line) > 6 and line[4:6] == '  ':
                vendor = line[:4].lower()
                vendors[vendor] = line[6:].strip()
            else:
                vendor = None
        return cls(vendors, devices, path)

    def vendor_name(self, vendor_id: str) -> str | None:
        return self.vendors.get(vendor_id)

    def device_name(self, vendor_id: str, product_id: str) -> str | None:
        return self.devices.get((vendor_id, product_id))


_CACHE: dict[str | None, PciIds] = {}


def _read(path: str) -> str:
    if path.endswith('.gz'):
        with gzip.open(path, 'rt', encoding='utf-8', errors='replace') as handle:
            return handle.read()
    with open(path, encoding='utf-8', errors='replace') as handle:
        return handle.read()


def load(path: str | None = None) -> PciIds:
    """Return the database at ``path`` (or the first found in DEFAULT_PATHS), parsed once per process."""
    if path in _CACHE:
        return _CACHE[path]
    candidates = (path,) if path else DEFAULT_PATHS
    database = PciIds()
    for candidate in candidates:
        if not os.path.isfile(candidate):
            continue
        try:
            database = PciIds.parse(_read(candidate), candidate)
        except (OSError, UnicodeError, EOFError):
            continue
        break
    _CACHE[path] = database
    return database
