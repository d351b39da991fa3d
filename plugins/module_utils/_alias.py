# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Aliases (Nova's ``[pci] alias``) and requests for devices by alias and count (Nova's request).

Differences from Nova, on purpose (see docs/whitelist.md): a request such as ``"a1,b1:2"`` is an
error naming the part without a count (Nova raises a ValueError from deep inside), and so is an
alias requested twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import DEV_TYPE_PF, DEV_TYPES, PciDevice


# -- aliases ------------------------------------------------------------------------------------

NUMA_POLICIES = ('required', 'legacy', 'preferred', 'socket')
_ALIAS_KEYS = ('name', 'vendor_id', 'product_id', 'device_type', 'numa_policy', 'tags',
               # accepted for compatibility with Nova's alias, not used for matching
               'capability_type', 'live_migratable', 'resource_class', 'traits')
# Alias names end up in domain metadata and in reports: keep them to a safe, readable set.
_ALIAS_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
_STRICT_HEX4 = re.compile(r'^[0-9a-fA-F]{4}$')


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
    numa_policy: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, index: int, entry: Any) -> AliasEntry:
        where = f'aliases[{index}]'
        if not isinstance(entry, dict):
            raise SpecError(f'{where}: {entry!r} must be a dict like {{name: a1, vendor_id: "10de", product_id: "20b5"}}')
        unknown = sorted(str(key) for key in entry if key not in _ALIAS_KEYS)
        if unknown:
            raise SpecError(f'{where}: unknown key(s) {", ".join(map(repr, unknown))} (known: {", ".join(_ALIAS_KEYS)})')
        name = entry.get('name')
        if not isinstance(name, str) or not _ALIAS_NAME.match(name):
            raise SpecError(f'{where}.name: {name!r} must be 1-64 letters, digits, "_", "-" or ".", starting with a letter or digit')
        ids = {}
        for key in ('vendor_id', 'product_id'):
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not _STRICT_HEX4.match(value):
                raise SpecError(f'{where}.{key}: {value!r} must be exactly 4 hex digits as a string, like "10de"')
            ids[key] = value.lower()
        choices = {}
        for key, allowed in (('device_type', DEV_TYPES), ('numa_policy', NUMA_POLICIES), ('capability_type', ('pci',))):
            value = entry.get(key)
            if value is not None and value not in allowed:
                raise SpecError(f'{where}.{key}: {value!r} must be one of {", ".join(allowed)}')
            choices[key] = value
        live_migratable = entry.get('live_migratable')
        if live_migratable is not None and _tag_text(live_migratable) not in ('true', 'false', 'yes', 'no'):
            raise SpecError(f'{where}.live_migratable: {live_migratable!r} must be a boolean')
        for key in ('resource_class', 'traits'):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise SpecError(f'{where}.{key}: {entry[key]!r} must be a string')
        tags = entry.get('tags', {})
        if not isinstance(tags, dict) or any(not isinstance(key, str) or isinstance(value, (dict, list)) for key, value in tags.items()):
            raise SpecError(f'{where}.tags: {tags!r} must be a dict of whitelist tags to scalar values, like {{physical_network: physnet1}}')
        return cls(index=index, name=name, device_type=choices['device_type'], numa_policy=choices['numa_policy'],
                   tags=tuple(sorted((key, _tag_text(value)) for key, value in tags.items())), **ids)

    def matches(self, device: PciDevice, tags: Mapping[str, Any]) -> bool:
        """``tags``: the device's whitelist tags. Without a device_type, PFs are left out: a PF is given only when asked for."""
        if self.device_type is None:
            if device.dev_type == DEV_TYPE_PF:
                return False
        elif device.dev_type != self.device_type:
            return False
        return ((self.vendor_id is None or self.vendor_id == device.vendor_id)
                and (self.product_id is None or self.product_id == device.product_id)
                and all(key in tags and _tag_text(tags[key]) == value for key, value in self.tags))


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
        return self.entries[0].numa_policy or 'legacy'

    def matches(self, device: PciDevice, tags: Mapping[str, Any]) -> bool:
        return any(entry.matches(device, tags) for entry in self.entries)


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
        for key in ('device_type', 'numa_policy'):
            if alias.entries and getattr(entry, key) != getattr(alias.entries[0], key):
                first = alias.entries[0]
                raise SpecError(f'aliases: alias {entry.name!r} has entries with different {key}: {getattr(first, key)!r} '
                                f'in aliases[{first.index}], {getattr(entry, key)!r} in aliases[{index}]')
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
