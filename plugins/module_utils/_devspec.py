# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The whitelist (Nova's ``device_spec``): one entry (``DeviceSpec``, Nova's devspec) and the list (``Whitelist``).

Differences from Nova, on purpose (see docs/whitelist.md):
- regexes in an ``address`` dict must match the whole field (Nova matches a prefix);
- an id that is not a string is a clear error (Nova crashes on integers);
- an empty ``devname`` is an error (Nova reads it as absent, and the entry then matches every device);
- a key one or two typing mistakes away from a match key (``prodcut_id``) is an error (Nova takes it
  as a tag, and the entry then matches more than was meant);
- extra match keys: ``class_id`` (prefix), ``driver``, ``subsystem_vendor_id``,
  ``subsystem_product_id``, ``numa_node``, and VF ranges (``"0000:3b:00.0#0-3,7"``);
- PCI domains above ``ffff`` (Intel VMD) are accepted.

As in Nova: ``devname`` and ``address`` together are refused; the tags ``managed``,
``live_migratable`` and ``one_time_use`` must be booleans (oslo's strict spellings) and are stored as
``'true'`` / ``'false'``; an address (glob or regex dict) that names one device which is a PF
matches its VFs too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    BOOL_TAGS,
    MdevParent,
    MdevType,
    PciAddress,
    PciAddressError,
    PciDevice,
    mdev_type_matches,
    parse_bool,
    parse_mdev_pattern,
)


ANY = '*'
_HEX = re.compile(r'[0-9a-f]+')
_MAX_ID = 0xFFFF
_ADDRESS_FIELDS = (('domain', 8, 0xFFFFFFFF), ('bus', 2, 0xFF), ('slot', 2, 0x1F), ('function', 1, 0x7))
_MATCH_KEYS = ('vendor_id', 'product_id', 'address', 'devname', 'class_id', 'driver',
               'subsystem_vendor_id', 'subsystem_product_id', 'numa_node', 'mdev_types', 'mdev_parent')
_PARENT_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$')      # a virtual mdev parent's device name
# Names other tools give to a match key (sysfs and lspci call the product id "device").
_OTHER_NAMES = {'device_id': 'product_id', 'subsystem_device_id': 'subsystem_product_id'}


def _where(index: int, key: str) -> str:
    return f'device_spec[{index}].{key}'


def parse_id(where: str, value: Any) -> str:
    """Nova-lenient id: '0x8086', '8086', ' 8086 ', upper case; '*' is any. Must be a string.

    ``where`` names the field in error messages (``device_spec[0].vendor_id``, ``vendor_id``).
    """
    if not isinstance(value, str):
        raise SpecError(f'{where}: {value!r} must be a string of up to 4 hex digits, like "8086" (quote it in YAML)')
    text = value.strip().lower()
    if text == ANY:
        return ANY
    if text.startswith('0x'):
        text = text[2:]
    # As Nova: any hex number up to ffff, so leading zeros ("08086") are fine.
    if not _HEX.fullmatch(text) or int(text, 16) > _MAX_ID:
        raise SpecError(f'{where}: {value!r} is not a 4-digit hex id like "8086" or "*"')
    return f'{int(text, 16):04x}'


def _distance(first: str, second: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn one string into the other."""
    previous2: list[int] = []
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, start=1):
        current = [i] + [0] * len(second)
        for j, b in enumerate(second, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b))
            if i > 1 and j > 1 and a == second[j - 2] and first[i - 2] == b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _misspelt(key: str) -> str | None:
    """The match key that ``key`` (not itself one) looks like a misspelling of: two edits or fewer once
    case and "-" are set aside, the match key without its "_id", or another tool's name for it."""
    text = key.strip().lower().replace('-', '_')
    if text in _OTHER_NAMES:
        return _OTHER_NAMES[text]
    if text + '_id' in _MATCH_KEYS:
        return text + '_id'
    if len(text) > 32:  # far longer than any match key; spares the distance on long tag names
        return None
    if text in ('mdev_type', 'mdev_typess', 'mdevtypes', 'mdev_parents', 'mdevparent'):
        return 'mdev_types' if 'type' in text else 'mdev_parent'
    # the mdev keys are left out of the distance: "dev_type", a real tag, is two edits from "mdev_types"
    distance, match = min((_distance(text, name), name) for name in _MATCH_KEYS if not name.startswith('mdev_'))
    return match if distance <= 2 else None


def _parse_glob(index: int, value: str) -> tuple[str, ...]:
    """``[[[[domain]:]bus]:][slot][.[func]]`` with '*' or empty parts meaning any; returns 4 normalised parts."""
    text = value.strip().lower()
    dbs, dot, func = text.partition('.')
    if not dot:
        func = ANY
    parts = dbs.split(':')
    if len(parts) > 3:
        raise SpecError(f'{_where(index, "address")}: {value!r} has too many ":" (expected [[[[domain]:]bus]:][slot][.[func]])')
    parts = [ANY] * (3 - len(parts)) + parts
    result = []
    for (name, width, limit), part in zip(_ADDRESS_FIELDS, parts + [func]):
        part = part.strip() or ANY
        if part == ANY:
            result.append(ANY)
            continue
        try:
            number = int(part, 16)
        except ValueError:
            raise SpecError(f'{_where(index, "address")}: {value!r} has an invalid {name} {part!r} (hex or "*")') from None
        if number > limit:
            raise SpecError(f'{_where(index, "address")}: {value!r} has {name} {part!r} above {limit:#x}')
        result.append(f'{number:0{width}x}' if name != 'domain' else f'{number:04x}')
    return tuple(result)


def _parse_regexes(index: int, value: dict) -> dict[str, re.Pattern]:
    unknown = sorted(set(value) - {name for name, _w, _l in _ADDRESS_FIELDS})
    if unknown:
        raise SpecError(f'{_where(index, "address")}: unknown key(s) {", ".join(map(repr, unknown))} (domain, bus, slot, function)')
    result = {}
    for name, pattern in value.items():
        if not isinstance(pattern, str):
            raise SpecError(f'{_where(index, "address." + name)}: {pattern!r} must be a regular expression string')
        try:
            result[name] = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise SpecError(f'{_where(index, "address." + name)}: {pattern!r} is not a valid regular expression: {exc}') from None
    return result


_VF_RANGE_PART = re.compile(r'^\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?$')


def _parse_vf_range(where: str, value: str, text: str) -> frozenset[int]:
    """'0-3,7' -> {0, 1, 2, 3, 7}."""
    indexes: set[int] = set()
    for part in text.split(','):
        match = _VF_RANGE_PART.match(part)
        if not match:
            raise SpecError(f'{where}: {value!r} has an invalid VF range part {part.strip()!r} (expected N or N-M, comma separated)')
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise SpecError(f'{where}: {value!r} has a VF range {part.strip()!r} that runs backwards')
        indexes.update(range(first, last + 1))
    return frozenset(indexes)


def _pf_of(device: PciDevice, devices: Mapping[PciAddress, PciDevice]) -> PciDevice | None:
    return devices.get(device.physfn) if device.physfn is not None else None


def vf_index(device: PciDevice, devices: Mapping[PciAddress, PciDevice]) -> int | None:
    """A VF's index on its PF (N of the PF's virtfnN link). VF routing ids grow with the index
    (PF + offset + N * stride), so it is the VF's position among its PF's VFs sorted by address."""
    pf = _pf_of(device, devices)
    if pf is None or device.address not in pf.virtfns:
        return None
    return sorted(pf.virtfns).index(device.address)


@dataclass
class DeviceSpec:
    """One whitelist entry."""

    index: int
    vendor_id: str = ANY
    product_id: str = ANY
    address_glob: tuple[str, ...] | None = None
    address_regex: dict[str, re.Pattern] | None = None
    devname: str | None = None
    class_id: str | None = None
    driver: str | None = None
    subsystem_vendor_id: str = ANY
    subsystem_product_id: str = ANY
    numa_node: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    # An exact address (no wildcard): when it names a PF, the PF's VFs match too (as in Nova).
    exact_address: PciAddress | None = None
    # "PF#0-3,7": only those VFs of the PF given by address or by netdev name.
    vf_range: frozenset[int] | None = None
    # An mdev entry: it admits these mdev types (patterns) on the parents it matches, and never whole devices.
    mdev_types: tuple[str, ...] | None = None
    mdev_parent: str | None = None     # a parent by name (a PCI address, or a virtual parent such as mtty)

    @property
    def is_mdev(self) -> bool:
        return self.mdev_types is not None

    @classmethod
    def parse(cls, index: int, entry: Any) -> DeviceSpec:
        if not isinstance(entry, dict):
            raise SpecError(f'device_spec[{index}]: {entry!r} must be a dict like {{vendor_id: "8086", product_id: "154c"}}')
        for key in entry:
            match = _misspelt(key) if isinstance(key, str) and key not in _MATCH_KEYS else None
            if match is not None:
                raise SpecError(f'device_spec[{index}]: key {key!r} looks like a misspelt {match!r} (a tag would match every '
                                f'device of the entry); write {match!r}, or give the tag a name further from the match keys')
        spec = cls(index=index)
        for key in ('vendor_id', 'product_id', 'subsystem_vendor_id', 'subsystem_product_id'):
            if key in entry:
                setattr(spec, key, parse_id(_where(index, key), entry[key]))
        address = entry.get('address')
        if isinstance(address, str) and '#' in address:
            base, _hash, vfs = address.partition('#')
            try:
                spec.exact_address = PciAddress.parse(base)
            except PciAddressError:
                raise SpecError(f'{_where(index, "address")}: {address!r}: a VF range needs the PF\'s full address before "#", '
                                f'like "0000:3b:00.0#0-3"') from None
            spec.vf_range = _parse_vf_range(_where(index, 'address'), address, vfs)
        elif isinstance(address, str):
            spec.address_glob = _parse_glob(index, address)
            if ANY not in spec.address_glob:
                domain, bus, slot, function = (int(part, 16) for part in spec.address_glob)
                spec.exact_address = PciAddress(domain, bus, slot, function)
        elif isinstance(address, dict):
            spec.address_regex = _parse_regexes(index, address)
            spec.exact_address = spec._regex_names_one(address)
        elif address is not None:
            raise SpecError(f'{_where(index, "address")}: {address!r} must be a glob string or a dict of regexes')
        for key in ('devname', 'driver'):
            if key in entry:
                if not isinstance(entry[key], str) or not entry[key].strip():
                    raise SpecError(f'{_where(index, key)}: {entry[key]!r} must be a non-empty string')
                setattr(spec, key, entry[key].strip())
        # As Nova: one or the other ("" and {} are no address, as there).
        if spec.devname is not None and address not in (None, '', {}):
            raise SpecError(f'device_spec[{index}]: devname {entry["devname"]!r} and address {address!r} are both given; '
                            f'an entry names its device by one of them (as in Nova)')
        if spec.devname is not None and '#' in spec.devname:
            name, _hash, vfs = spec.devname.partition('#')
            if not name.strip():
                raise SpecError(f'{_where(index, "devname")}: {spec.devname!r} needs the PF\'s interface name before "#"')
            spec.vf_range = _parse_vf_range(_where(index, 'devname'), spec.devname, vfs)
            spec.devname = name.strip()
        if 'class_id' in entry:
            value = entry['class_id']
            text = value.strip().lower().removeprefix('0x') if isinstance(value, str) else None
            if not text or not re.match(r'^[0-9a-f]{2,6}$', text):
                raise SpecError(f'{_where(index, "class_id")}: {value!r} must be a hex class prefix string like "0302" or "020000"')
            spec.class_id = text
        if 'numa_node' in entry:
            value = entry['numa_node']
            if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
                raise SpecError(f'{_where(index, "numa_node")}: {value!r} must be a NUMA node number')
            spec.numa_node = int(value)
        if 'mdev_types' in entry:
            value = entry['mdev_types']
            if not isinstance(value, list) or not value:
                raise SpecError(f'{_where(index, "mdev_types")}: {value!r} must be a list of mdev type ids or names, like ["nvidia-470"]')
            spec.mdev_types = tuple(parse_mdev_pattern(f'{_where(index, "mdev_types")}[{number}]', item)
                                    for number, item in enumerate(value))
        if 'mdev_parent' in entry:
            value = entry['mdev_parent']
            if spec.mdev_types is None:
                raise SpecError(f'{_where(index, "mdev_parent")}: {value!r} needs mdev_types (the types the entry admits on it)')
            try:
                spec.mdev_parent = str(PciAddress.parse(value))
            except PciAddressError:
                if not isinstance(value, str) or not _PARENT_NAME.match(value.strip()):
                    raise SpecError(f'{_where(index, "mdev_parent")}: {value!r} must be a parent device name: a PCI address, or a '
                                    'virtual parent such as "mtty"') from None
                spec.mdev_parent = value.strip()
        spec.tags = {key: value for key, value in entry.items() if key not in _MATCH_KEYS}
        for key in BOOL_TAGS:
            if spec.tags.get(key) is not None:
                spec.tags[key] = 'true' if parse_bool(_where(index, key), spec.tags[key]) else 'false'
        return spec

    def _regex_names_one(self, address: dict) -> PciAddress | None:
        """The device a regex dict names when its four fields are plain hex numbers that its regexes match
        (``{domain: "0000", bus: "3b", slot: "00", function: "0"}``), as Nova's single-address check."""
        names = [name for name, _w, _l in _ADDRESS_FIELDS]
        if set(address) != set(names) or not all(_HEX.fullmatch(address[name].strip().lower()) for name in names):
            return None
        try:
            candidate = PciAddress(*(int(address[name], 16) for name in names))
        except PciAddressError:
            return None
        return candidate if self._fields_match(candidate) else None

    def _fields_match(self, address: PciAddress) -> bool:
        fields = (f'{address.domain:04x}', f'{address.bus:02x}', f'{address.slot:02x}', f'{address.function:x}')
        if self.address_glob is not None:
            return all(want in (ANY, have) for want, have in zip(self.address_glob, fields))
        if self.address_regex is not None:
            values = dict(zip((name for name, _w, _l in _ADDRESS_FIELDS), fields))
            return all(pattern.fullmatch(values[name]) for name, pattern in self.address_regex.items())
        return True

    def _place_matches(self, device: PciDevice, devices: Mapping[PciAddress, PciDevice]) -> bool:
        """Address and devname: the device itself, or for a VF its PF (Nova's PF-to-VF rule, and VF ranges)."""
        pf = _pf_of(device, devices)
        if self.vf_range is not None:
            if pf is None or vf_index(device, devices) not in self.vf_range:
                return False
            if self.exact_address is not None:
                return pf.address == self.exact_address
            return self.devname in pf.netdevs
        if self.devname is not None and self.devname not in device.netdevs and (pf is None or self.devname not in pf.netdevs):
            return False
        if self._fields_match(device.address):
            return True
        return pf is not None and self.exact_address is not None and pf.address == self.exact_address

    def _matches_anything(self) -> bool:
        """No PCI match key narrows the entry (a virtual mdev parent has no PCI identity to match)."""
        return (self.vendor_id == ANY and self.product_id == ANY and self.subsystem_vendor_id == ANY and self.subsystem_product_id == ANY
                and self.address_glob in (None, (ANY,) * 4) and self.address_regex is None and self.devname is None
                and self.class_id is None and self.driver is None and self.numa_node is None and self.vf_range is None)

    def matches(self, device: PciDevice, devices: Mapping[PciAddress, PciDevice] | None = None) -> bool:
        """Whether the entry matches the device; ``devices`` (every device by address) lets a VF match by its PF."""
        # One chain that stops at the first key that differs: every run judges every device of the host.
        return (self.vendor_id in (ANY, device.vendor_id)
                and self.product_id in (ANY, device.product_id)
                and self.subsystem_vendor_id in (ANY, device.subsystem_vendor_id)
                and self.subsystem_product_id in (ANY, device.subsystem_product_id)
                and (self.class_id is None or device.class_id.startswith(self.class_id))
                and (self.driver is None or device.driver == self.driver)
                and (self.numa_node is None or device.numa_node == self.numa_node)
                and self._place_matches(device, devices or {}))


class Whitelist:
    """An ordered list of entries; the first entry that matches a device wins."""

    def __init__(self, entries: list[DeviceSpec]) -> None:
        self.entries = entries

    @classmethod
    def parse(cls, device_spec: Any) -> Whitelist:
        if device_spec is None:
            return cls([])
        if not isinstance(device_spec, list):
            raise SpecError(f'device_spec: {device_spec!r} must be a list of entries')
        return cls([DeviceSpec.parse(index, entry) for index, entry in enumerate(device_spec)])

    def match(self, device: PciDevice, devices: Mapping[PciAddress, PciDevice] | None = None) -> DeviceSpec | None:
        """The first entry that matches; ``devices`` (every device by address) lets a VF match by its PF.

        mdev entries (``mdev_types``) are not looked at: they admit slices of a parent, which stays on its
        host driver, never the whole device.
        """
        for entry in self.entries:
            if not entry.is_mdev and entry.matches(device, devices):
                return entry
        return None

    def mdev_match(self, parent: MdevParent, mdev_type: MdevType, device: PciDevice | None,
                   devices: Mapping[PciAddress, PciDevice] | None = None) -> DeviceSpec | None:
        """The first mdev entry that admits ``mdev_type`` on ``parent`` (``device``: the parent's PCI function, None
        for a virtual parent, which only an entry naming it with ``mdev_parent`` or matching any device admits)."""
        for entry in self.entries:
            if not entry.is_mdev or not any(mdev_type_matches(pattern, mdev_type) for pattern in entry.mdev_types):
                continue
            if entry.mdev_parent is not None and entry.mdev_parent != parent.name:
                continue
            if device is not None:
                if entry.matches(device, devices):
                    return entry
            elif entry.mdev_parent is not None or entry._matches_anything():
                return entry
        return None
