# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Vendor and device names from the pci.ids database, read once per process.

A missing or unreadable database is not an error: names are simply ``None``.

A host has a few dozen distinct ids, the database 2,500 vendors and 20,000 devices: ``load``
reads the file once and looks up only the ids a run asks for, in the bytes, instead of parsing
every line (parsing the whole file took 20-40 ms, about as long as ``lspci`` takes to run).
The answers are the same as ``PciIds.parse`` gives (tests/unit compares the two).
"""

from __future__ import annotations

import gzip
import os
import re
from typing import Any

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
                if vendor is not None and len(line) > 7 and line[1] != '\t' and line[5:7] == '  ':
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


# Characters str.splitlines() also ends a line at, besides \n (\r: the file used to be read in text mode,
# where \r and \r\n end a line). The byte index below knows only \n: a database holding any of them is
# parsed whole instead (real ones hold none).
_OTHER_LINE_ENDS = '\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'
_HEX4 = re.compile(r'[0-9a-f]{4}\Z')
# A line that is not a device, a subsystem, a comment or empty: a vendor, the class list, or a line
# that ends the vendor before it. Found in one pass of the regex engine, not line by line in Python.
_TOP_LINE = re.compile(rb'\n[^\t#\n]')


class _IndexedPciIds(PciIds):
    """pci.ids kept as bytes with an index of its vendor lines; a vendor's devices are read when first asked for.

    ``vendors`` and ``devices`` (every name, as ``parse`` gives them) are built only if read.
    """

    def __init__(self, data: bytes, path: str | None) -> None:     # pylint: disable=super-init-not-called
        self.path = path
        self._data = data = b'\n' + data                # every line, the first one included, follows a \n
        self._parsed: PciIds | None = None
        # vendor id -> (name start, name end, end of its device lines) of each of its lines, in file order
        self._index: dict[bytes, list[tuple[int, int, int]]] = {}
        self._blocks: dict[bytes, list[tuple[int, bytes]]] = {}
        self._names: dict[Any, str | None] = {}      # vendor id, or (vendor id, product id) -> name
        starts = [match.start() for match in _TOP_LINE.finditer(data)]
        starts.append(len(data))
        for number, at in enumerate(starts[:-1]):
            if data.startswith(b'C ', at + 1):
                break       # the device class list follows the vendors to the end of the file
            line_end = data.find(b'\n', at + 1)
            if line_end < 0:
                line_end = len(data)
            if line_end - at > 7 and data[at + 5:at + 7] == b'  ':     # "dddd  name", parse's len(line) > 6
                self._index.setdefault(data[at + 1:at + 5].lower(), []).append((at + 7, line_end, starts[number + 1]))

    def vendor_name(self, vendor_id: str) -> str | None:
        if vendor_id in self._names:      # a host has thousands of devices and a few dozen distinct ids
            return self._names[vendor_id]
        if not isinstance(vendor_id, str) or not _HEX4.match(vendor_id):
            return self._whole().vendor_name(vendor_id)
        lines = self._index.get(vendor_id.encode('ascii'))
        name = None
        if lines:
            start, stop, _end = lines[-1]      # as parse, the last line of a vendor named twice wins
            name = self._data[start:stop].decode('utf-8', 'replace').strip()
        self._names[vendor_id] = name
        return name

    def device_name(self, vendor_id: str, product_id: str) -> str | None:
        key = (vendor_id, product_id)
        if key in self._names:
            return self._names[key]
        if not (isinstance(vendor_id, str) and isinstance(product_id, str) and _HEX4.match(vendor_id) and _HEX4.match(product_id)):
            return self._whole().device_name(vendor_id, product_id)
        self._names[key] = name = self._device_name(vendor_id, product_id)
        return name

    def _device_name(self, vendor_id: str, product_id: str) -> str | None:
        vendor = vendor_id.encode('ascii')
        blocks = self._blocks.get(vendor)
        if blocks is None:      # the vendor's device lines, lowercased as parse lowercases ids (ASCII only: positions stay)
            blocks = self._blocks[vendor] = [(stop, self._data[stop:end].lower()) for _start, stop, end in self._index.get(vendor, ())]
        needle = b'\n\t' + product_id.encode('ascii') + b'  '
        name = None
        for offset, block in blocks:
            at = block.find(needle)
            while at >= 0:      # as parse, the last line of a device named twice wins
                line_end = block.find(b'\n', at + 1)
                if line_end < 0:
                    line_end = len(block)
                if line_end - at > 8:       # "\tdddd  name", parse's len(line) > 7
                    name = self._data[offset + at + 8:offset + line_end]
                at = block.find(needle, line_end)
        return None if name is None else name.decode('utf-8', 'replace').strip()

    def _whole(self) -> PciIds:
        if self._parsed is None:
            self._parsed = PciIds.parse(self._data[1:].decode('utf-8', 'replace'), self.path)
        return self._parsed

    @property
    def vendors(self) -> dict[str, str]:  # type: ignore[override]
        return self._whole().vendors

    @property
    def devices(self) -> dict[tuple[str, str], str]:  # type: ignore[override]
        return self._whole().devices


def from_bytes(data: bytes, path: str | None = None) -> PciIds:
    """The database in ``data`` (the file's bytes), indexed; parsed whole when it has line ends other than \\n."""
    text = data.decode('utf-8', 'replace')
    if any(end in text for end in _OTHER_LINE_ENDS):
        return PciIds.parse(text.replace('\r\n', '\n').replace('\r', '\n'), path)
    return _IndexedPciIds(data, path)


_CACHE: dict[str | None, PciIds] = {}


def _read(path: str) -> bytes:
    if path.endswith('.gz'):
        with gzip.open(path, 'rb') as handle:
            return handle.read()
    with open(path, 'rb') as handle:
        return handle.read()


def load(path: str | None = None) -> PciIds:
    """Return the database at ``path`` (or the first found in DEFAULT_PATHS), read once per process."""
    if path in _CACHE:
        return _CACHE[path]
    candidates = (path,) if path else DEFAULT_PATHS
    database = PciIds()
    for candidate in candidates:
        if not os.path.isfile(candidate):
            continue
        try:
            database = from_bytes(_read(candidate), candidate)
        except (OSError, UnicodeError, EOFError):
            continue
        break
    _CACHE[path] = database
    return database
