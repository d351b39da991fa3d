# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Aliases (Nova's ``[pci] alias``) and requests for devices by alias and count (Nova's request).

Differences from Nova, on purpose (see docs/whitelist.md): a request such as ``"a1,b1:2"`` is an
error naming the part without a count (Nova raises a ValueError from deep inside), and so is an
alias requested twice; an alias name with "," or ":" or a control character is an error (no request
could name it); an entry without ``vendor_id`` and ``product_id`` is accepted (Nova 2025.2 and later
refuses it); entries of one alias that all omit ``device_type`` agree (Nova refuses them with a bare
KeyError); ``live_migratable`` may be a YAML boolean.

As in Nova: names are stripped and may hold spaces (up to 256 characters); an omitted
``numa_policy`` is ``legacy`` when entries of one alias are compared; ``live_migratable`` takes
oslo's strict boolean spellings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    BOOL_TAGS,
    DEV_TYPES,
    DEV_TYPE_PF,
    InterfaceOptions,
    MdevType,
    PciDevice,
    mdev_type_matches,
    parse_bool,
    parse_mdev_pattern,
)


# -- aliases ------------------------------------------------------------------------------------

NUMA_POLICIES = ('required', 'legacy', 'preferred', 'socket')
_ALIAS_KEYS = ('name', 'vendor_id', 'product_id', 'device_type', 'numa_policy', 'tags', 'interface', 'mdev_type',
               # accepted for compatibility with Nova's alias, not used for matching
               'capability_type', 'live_migratable', 'resource_class', 'traits')
_NAME_MAX = 256  # Nova's alias schema
_STRICT_HEX4 = re.compile(r'[0-9a-fA-F]{4}')


def _alias_name(where: str, name: Any) -> str:
    """Nova's rule (a string of 1-256 characters, stripped), less what no request could name."""
    if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX or not name.strip():
        raise SpecError(f'{where}.name: {name!r} must be a name of 1-{_NAME_MAX} characters, like "gpu"')
    if ',' in name or ':' in name:
        raise SpecError(f'{where}.name: {name!r} must not contain "," or ":" (a request "name:count,name:count" could not name it)')
    if not name.isprintable():
        raise SpecError(f'{where}.name: {name!r} must not contain control or invisible characters')
    return name.strip()


def _tag_text(value: Any) -> str:
    """Tags compare as text, with YAML's booleans as 'true'/'false' (trusted: true == trusted: "true")."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value).strip().lower()


@dataclass(frozen=True)
class AliasEntry:
    """One entry of the aliases list; entries sharing a name are OR-ed."""

    index: int
    name: str
    vendor_id: str | None = None
    product_id: str | None = None
    device_type: str | None = None
    numa_policy: str = 'legacy'
    tags: tuple[tuple[str, str], ...] = ()
    live_migratable: bool | None = None
    interface: InterfaceOptions | None = None    # our extension: its devices are given as network interfaces
    mdev_type: str | None = None                 # our extension: a mediated device of this type (id or name pattern)

    @classmethod
    def parse(cls, index: int, entry: Any) -> AliasEntry:
        where = f'aliases[{index}]'
        if not isinstance(entry, dict):
            raise SpecError(f'{where}: {entry!r} must be a dict like {{name: a1, vendor_id: "10de", product_id: "20b5"}}')
        unknown = sorted(str(key) for key in entry if key not in _ALIAS_KEYS)
        if unknown:
            raise SpecError(f'{where}: unknown key(s) {", ".join(map(repr, unknown))} (known: {", ".join(_ALIAS_KEYS)})')
        name = _alias_name(where, entry.get('name'))
        ids = {}
        for key in ('vendor_id', 'product_id'):
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not _STRICT_HEX4.fullmatch(value):
                raise SpecError(f'{where}.{key}: {value!r} must be exactly 4 hex digits as a string, like "10de"')
            ids[key] = value.lower()
        choices = {}
        for key, allowed in (('device_type', DEV_TYPES), ('numa_policy', NUMA_POLICIES), ('capability_type', ('pci',))):
            value = entry.get(key)
            if value is not None and value not in allowed:
                raise SpecError(f'{where}.{key}: {value!r} must be one of {", ".join(allowed)}')
            choices[key] = value
        live_migratable = entry.get('live_migratable')
        if live_migratable is not None:
            live_migratable = parse_bool(f'{where}.live_migratable', live_migratable)
        for key in ('resource_class', 'traits'):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise SpecError(f'{where}.{key}: {entry[key]!r} must be a string')
        tags = entry.get('tags', {})
        if not isinstance(tags, dict) or any(not isinstance(key, str) or isinstance(value, (dict, list)) for key, value in tags.items()):
            raise SpecError(f'{where}.tags: {tags!r} must be a dict of whitelist tags to scalar values, like {{physical_network: physnet1}}')
        texts = []
        for key, value in tags.items():
            if key in BOOL_TAGS and value is not None:
                # the whitelist stores these as 'true' / 'false' (as Nova), so the alias must say them alike
                value = parse_bool(f'{where}.tags.{key}', value)
            texts.append((key, _tag_text(value)))
        interface = entry.get('interface')
        if interface is not None:
            interface = InterfaceOptions.parse(f'{where}.interface', interface, mac_list=False)
        mdev_type = entry.get('mdev_type')
        if mdev_type is not None:
            mdev_type = parse_mdev_pattern(f'{where}.mdev_type', mdev_type)
            for key in ('device_type', 'interface'):
                if entry.get(key) is not None:
                    raise SpecError(f'{where}: {key} and mdev_type are both given; an alias asks for whole devices or for '
                                    'mediated devices of a type, not both')
        return cls(index=index, name=name, device_type=choices['device_type'], numa_policy=choices['numa_policy'] or 'legacy',
                   tags=tuple(sorted(texts)), live_migratable=live_migratable, interface=interface, mdev_type=mdev_type, **ids)

    def matches(self, device: PciDevice, tags: Mapping[str, Any]) -> bool:
        """``tags``: the device's whitelist tags. Without a device_type, PFs are left out: a PF is given only when asked for.
        An mdev alias matches no whole device."""
        if self.mdev_type is not None:
            return False
        if self.device_type is None:
            if device.dev_type == DEV_TYPE_PF:
                return False
        elif device.dev_type != self.device_type:
            return False
        return ((self.vendor_id is None or self.vendor_id == device.vendor_id)
                and (self.product_id is None or self.product_id == device.product_id)
                and all(key in tags and _tag_text(tags[key]) == value for key, value in self.tags))

    def matches_mdev(self, mdev_type: MdevType, parent: PciDevice | None, tags: Mapping[str, Any]) -> bool:
        """Whether the entry asks for ``mdev_type``; ``parent`` is the parent's PCI function (None: a virtual parent,
        which an entry with vendor_id or product_id never matches)."""
        if self.mdev_type is None or not mdev_type_matches(self.mdev_type, mdev_type):
            return False
        if self.vendor_id is not None or self.product_id is not None:
            if parent is None or self.vendor_id not in (None, parent.vendor_id) or self.product_id not in (None, parent.product_id):
                return False
        return all(key in tags and _tag_text(tags[key]) == value for key, value in self.tags)


@dataclass
class Alias:
    """Every entry of one alias name. ``device_type`` and ``numa_policy`` are shared by its entries."""

    name: str
    entries: list[AliasEntry]

    @property
    def device_type(self) -> str | None:
        return self.entries[0].device_type

    @property
    def numa_policy(self) -> str:
        return self.entries[0].numa_policy

    @property
    def interface(self) -> InterfaceOptions | None:
        return self.entries[0].interface

    @property
    def is_mdev(self) -> bool:
        return self.entries[0].mdev_type is not None

    def matches(self, device: PciDevice, tags: Mapping[str, Any]) -> bool:
        return any(entry.matches(device, tags) for entry in self.entries)

    def matches_mdev(self, mdev_type: MdevType, parent: PciDevice | None, tags: Mapping[str, Any]) -> bool:
        return any(entry.matches_mdev(mdev_type, parent, tags) for entry in self.entries)


def parse_aliases(value: Any) -> dict[str, Alias]:
    """The ``aliases`` option: a list of Nova-style alias entries; entries with one name are OR-ed."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise SpecError(f'aliases: {value!r} must be a list of alias entries')
    aliases: dict[str, Alias] = {}
    for index, item in enumerate(value):
        entry = AliasEntry.parse(index, item)
        alias = aliases.setdefault(entry.name, Alias(entry.name, []))
        # Nova's order: numa_policy (omitted is legacy), then device_type (omitted is not any type).
        first = alias.entries[0] if alias.entries else entry
        if (entry.mdev_type is None) != (first.mdev_type is None):
            raise SpecError(f'aliases: alias {entry.name!r} asks for mediated devices (mdev_type) in '
                            f'aliases[{first.index if first.mdev_type is not None else index}] and for whole devices in '
                            f'aliases[{index if first.mdev_type is not None else first.index}]; give each its own name')
        for key, default, note in (('numa_policy', 'legacy', 'an omitted numa_policy is legacy'),
                                   ('device_type', None, 'an omitted device_type differs from every type'),
                                   ('interface', None, 'its devices are network interfaces in one entry and not in the other')):
            first = alias.entries[0] if alias.entries else entry
            mine, theirs = getattr(entry, key), getattr(first, key)
            if mine != theirs:
                hint = f' ({note})' if default in (mine, theirs) else ''
                raise SpecError(f'aliases: alias {entry.name!r} has entries with different {key}: {theirs!r} '
                                f'in aliases[{first.index}], {mine!r} in aliases[{index}]{hint}')
        alias.entries.append(entry)
    return aliases


# -- requests -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AliasRequest:
    """``count`` devices of alias ``alias``; 0 is valid (with state=present it means none)."""

    alias: str
    count: int


def _count(where: str, part: str, value: Any, min_count: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecError(f'{where}: count {value!r} in {part!r} must be a whole number')
    text = str(value).strip()
    if not text:
        raise SpecError(f'{where}: {part!r} has no count (expected alias:count)')
    if text.lstrip('+-').isdigit() and text.startswith('-'):
        raise SpecError(f'{where}: count {text!r} in {part!r} must be {min_count} or more')
    if not text.isdigit() or not text.isascii():
        raise SpecError(f'{where}: count {text!r} in {part!r} is not a whole number')
    if int(text) < min_count:
        raise SpecError(f'{where}: count {text!r} in {part!r} must be {min_count} or more')
    return int(text)


def _check_alias(where: str, part: str, name: str, aliases: Mapping[str, Alias], seen: set[str]) -> None:
    if name not in aliases:
        known = ', '.join(sorted(aliases)) or 'none defined'
        raise SpecError(f'{where}: {part!r} names unknown alias {name!r} (known: {known})')
    if name in seen:
        raise SpecError(f'{where}: alias {name!r} is requested twice; give one count per alias')
    seen.add(name)


def parse_request(value: Any, aliases: Mapping[str, Alias], where: str = 'request', min_count: int = 0) -> list[AliasRequest]:
    """``"a1:2,b1:1"`` (spaces around names and counts allowed) or ``[{alias: a1, count: 2}, ...]``; each
    count ``min_count`` or more."""
    requests: list[AliasRequest] = []
    seen: set[str] = set()
    if isinstance(value, str):
        if not value.strip():
            raise SpecError(f'{where}: {value!r} is empty (expected alias:count[,alias:count])')
        for position, raw in enumerate(value.split(','), start=1):
            part = raw.strip()
            if not part:
                raise SpecError(f'{where}: part {position} of {value!r} is empty')
            name, sep, count = part.partition(':')
            if not sep:
                raise SpecError(f'{where}: {part!r} has no count (expected alias:count)')
            if ':' in count:
                raise SpecError(f'{where}: {part!r} has more than one ":" (expected alias:count)')
            name = name.strip()
            if not name:
                raise SpecError(f'{where}: {part!r} has no alias name (expected alias:count)')
            number = _count(where, part, count, min_count)
            _check_alias(where, part, name, aliases, seen)
            requests.append(AliasRequest(name, number))
        return requests
    if isinstance(value, list):
        for index, item in enumerate(value):
            item_where = f'{where}[{index}]'
            if not isinstance(item, dict) or set(item) != {'alias', 'count'}:
                raise SpecError(f'{item_where}: {item!r} must be a dict with exactly the keys alias and count')
            name = item['alias']
            if not isinstance(name, str) or not name.strip():
                raise SpecError(f'{item_where}.alias: {name!r} must be an alias name')
            number = _count(item_where, f'{name}:{item["count"]}', item['count'], min_count)
            _check_alias(item_where, name, name.strip(), aliases, seen)
            requests.append(AliasRequest(name.strip(), number))
        return requests
    raise SpecError(f'{where}: {value!r} must be a string like "a1:2,b1:1" or a list of {{alias, count}}')
