# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Day-2 facts about whitelisted devices, pure: hardware identities and out-of-service marks.

**Identities.** When pci_whitelist takes a device it records what the device is: its ids, class, IOMMU group
and the group's members, and for SR-IOV its PF, VF index and VF count. A later run that finds the device
different - a card swapped, a firmware that changed an id, a kernel that regrouped the IOMMU, a VF count
changed behind the collection's back, the device gone - calls it a hardware change, and every module then
holds the device back until the operator accepts the change (pci_whitelist ``accept_hardware_changes``).

**Marks.** An operator puts a device, a PF with its VFs, an alias's devices or the whole host out of
service, with a reason and a mode: ``no-new`` (nothing new is given; what guests hold stays) or ``drain``
(pci_whitelist also takes the marked devices out of every domain). Both are kept in the host's state file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import vf_index
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciAddressError, PciDevice

if TYPE_CHECKING:   # in type hints only: a run whose marks name no alias need not compile _alias
    from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias

# -- identities ---------------------------------------------------------------------------------------

# In the order a change is told; each with the words used for it.
_IDENTITY_FIELDS = (
    ('vendor_id', 'vendor_id'),
    ('product_id', 'product_id'),
    ('subsystem_vendor_id', 'subsystem_vendor_id'),
    ('subsystem_product_id', 'subsystem_product_id'),
    ('class_id', 'class'),
    ('iommu_group', 'IOMMU group'),
    ('group', 'IOMMU group members'),
    ('physfn', 'PF'),
    ('vf_index', 'VF index'),
    ('numvfs', 'VF count'),
)
REMOVED = 'device removed'


def iommu_groups(devices: Mapping[PciAddress, PciDevice]) -> dict[int, list[str]]:
    """Each IOMMU group's functions, as sorted address texts."""
    groups: dict[int, list[str]] = {}
    for address, device in sorted(devices.items()):
        if device.iommu_group is not None:
            groups.setdefault(device.iommu_group, []).append(str(address))
    return groups


def identity_of(device: PciDevice, devices: Mapping[PciAddress, PciDevice],
                groups: Mapping[int, list[str]] | None = None) -> dict[str, Any]:
    """What the device is, as recorded in the state file (plain JSON types).

    ``group`` lists every function in the device's IOMMU group (itself included); ``numvfs`` is a PF's own VF
    count, or for a VF its PF's (the kernel destroys and creates every VF of a PF when the count changes).
    ``groups`` (``iommu_groups(devices)``) saves finding the group's members again for each device.
    """
    if groups is None:
        groups = iommu_groups(devices)
    group = list(groups.get(device.iommu_group, [])) if device.iommu_group is not None else []
    pf = devices.get(device.physfn) if device.physfn is not None else None
    numvfs = pf.sriov_numvfs if pf is not None else (device.sriov_numvfs if device.sriov_totalvfs else None)
    return {
        'vendor_id': device.vendor_id,
        'product_id': device.product_id,
        'subsystem_vendor_id': device.subsystem_vendor_id,
        'subsystem_product_id': device.subsystem_product_id,
        'class_id': device.class_id,
        'iommu_group': device.iommu_group,
        'group': group,
        'physfn': str(device.physfn) if device.physfn is not None else None,
        'vf_index': vf_index(device, devices) if device.physfn is not None else None,
        'numvfs': numvfs,
    }


def _shown(value: Any) -> str:
    if value is None:
        return 'none'
    if isinstance(value, list):
        return ', '.join(value) if value else 'none'
    return str(value)


def identity_changes(recorded: Mapping[str, Any], current: Mapping[str, Any] | None) -> list[str]:
    """What changed, one phrase each (``product_id 10d3 -> 10d4``); ``current`` None: the device is gone.
    A field the record lacks (an older record) is not compared."""
    if current is None:
        return [REMOVED]
    changes = []
    for key, words in _IDENTITY_FIELDS:
        if key in recorded and recorded[key] != current.get(key):
            changes.append(f'{words} {_shown(recorded[key])} \u2192 {_shown(current.get(key))}')
    return changes


def parse_identities(stored: Any) -> dict[PciAddress, dict[str, Any]]:
    """The state file's ``identities`` (address -> record); entries that are not ours are skipped."""
    found = {}
    if isinstance(stored, dict):
        for text, record in stored.items():
            try:
                address = PciAddress.parse(text)
            except PciAddressError:
                continue
            if isinstance(record, dict):
                found[address] = record
    return found


def hardware_changes(devices: Mapping[PciAddress, PciDevice],
                     identities: Mapping[PciAddress, Mapping[str, Any]]) -> dict[PciAddress, list[str]]:
    """Every recorded device that is not what it was, with what changed (gone ones: ``device removed``)."""
    changed = {}
    groups = iommu_groups(devices) if identities else {}
    for address, recorded in identities.items():
        device = devices.get(address)
        changes = identity_changes(recorded, identity_of(device, devices, groups) if device is not None else None)
        if changes:
            changed[address] = changes
    return changed


def hardware_reason(changes: list[str]) -> str:
    return f'hardware changed: {"; ".join(changes)} (pci_whitelist accept_hardware_changes accepts it)'


def parse_accept(value: Any, where: str = 'accept_hardware_changes') -> set[PciAddress] | None:
    """``accept_hardware_changes``: PCI addresses, or ``all`` (returned as None: every change)."""
    if value is None:
        return set()
    if value == 'all' or value == ['all']:
        return None
    if not isinstance(value, list):
        raise SpecError(f'{where}: {value!r} must be a list of PCI addresses, or "all"')
    accepted = set()
    for index, item in enumerate(value):
        try:
            accepted.add(PciAddress.parse(item))
        except PciAddressError as exc:
            raise SpecError(f'{where}[{index}]: {exc}') from None
    return accepted


# -- out-of-service marks -------------------------------------------------------------------------

MODE_NO_NEW = 'no-new'
MODE_DRAIN = 'drain'
MODES = (MODE_NO_NEW, MODE_DRAIN)
_TARGETS = ('address', 'pf', 'alias', 'host')
_MARK_KEYS = _TARGETS + ('mode', 'reason')
_REASON_MAX = 500


@dataclass(frozen=True)
class ServiceMark:
    """One out-of-service mark. ``target`` is an address (``address``, ``pf``), an alias name or None (``host``)."""

    kind: str
    target: str | None
    mode: str
    reason: str
    alias: Alias | None = None
    alias_entries: tuple[dict[str, Any], ...] = ()

    def covers(self, device: PciDevice, tags: Mapping[str, Any] | None) -> bool:
        """Whether the mark takes this device out of service (``tags``: its whitelist entry's tags)."""
        if self.kind == 'host':
            return True
        if self.kind == 'address':
            return str(device.address) == self.target
        if self.kind == 'pf':
            return str(device.address) == self.target or (device.physfn is not None and str(device.physfn) == self.target)
        return self.alias is not None and tags is not None and self.alias.matches(device, tags)

    def covers_mdev(self, parent: PciDevice | None, mdev_type: Any, tags: Mapping[str, Any] | None) -> bool:
        """Whether the mark takes mediated devices of ``mdev_type`` on this parent out of service: a mark on the host, on
        the parent's PCI function (address, PF, an alias of whole devices that matches it), or an alias of mediated
        devices that asks for this type (``parent`` None: a virtual parent; ``tags``: the whitelist entry's)."""
        if self.kind == 'host' or (parent is not None and self.covers(parent, tags)):
            return True
        return self.kind == 'alias' and self.alias is not None and tags is not None and self.alias.matches_mdev(mdev_type, parent, tags)

    @property
    def label(self) -> str:
        return 'the host' if self.kind == 'host' else f'{self.kind} {self.target}'

    def stored(self) -> dict[str, Any]:
        """The mark as kept in the state file (an alias mark keeps its alias's entries: later runs match by them)."""
        record: dict[str, Any] = {'mode': self.mode, 'reason': self.reason}
        if self.kind == 'host':
            record['host'] = True
        else:
            record[self.kind] = self.target
        if self.kind == 'alias':
            record['alias_entries'] = [dict(entry) for entry in self.alias_entries]
        return record

    def result(self) -> dict[str, Any]:
        """How a module reports the mark: ``{kind, target, mode, reason}``."""
        return {'kind': self.kind, 'target': self.target, 'mode': self.mode, 'reason': self.reason}

    def why(self) -> str:
        return f'out of service ({self.mode}, {self.label}): {self.reason}'


def _mark_reason(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f'{where}.reason: {value!r} must say why, as text (for example "fan failure, RMA 4711")')
    if len(value) > _REASON_MAX or not value.isprintable():
        raise SpecError(f'{where}.reason: {value!r} must be printable text of at most {_REASON_MAX} characters')
    return value.strip()


def parse_marks(value: Any, aliases: Mapping[str, Alias] | None = None, alias_source: Any = None,
                resolve_pf: Any = None, where: str = 'out_of_service') -> list[ServiceMark]:
    """The ``out_of_service`` option: a list of ``{address | pf | alias | host, mode, reason}``.

    ``aliases`` (parsed) and ``alias_source`` (the ``aliases`` option as given) resolve alias marks; ``resolve_pf``
    (``(where, text) -> PciAddress``) turns a PF given by netdev name into its address.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f'{where}: {value!r} must be a list of marks such as {{address: "0000:3b:00.0", reason: "..."}}')
    marks: list[ServiceMark] = []
    for index, entry in enumerate(value):
        here = f'{where}[{index}]'
        if not isinstance(entry, dict):
            raise SpecError(f'{here}: {entry!r} must be a dict with one of {", ".join(_TARGETS)}, and reason')
        unknown = sorted(str(key) for key in entry if key not in _MARK_KEYS)
        if unknown:
            raise SpecError(f'{here}: unknown key {unknown[0]!r} (known: {", ".join(_MARK_KEYS)})')
        targets = [key for key in _TARGETS if entry.get(key) not in (None, False)]
        if len(targets) != 1:
            raise SpecError(f'{here}: give exactly one of {", ".join(_TARGETS)} (got {", ".join(targets) or "none"})')
        kind = targets[0]
        mode = entry.get('mode', MODE_NO_NEW)
        if mode not in MODES:
            raise SpecError(f'{here}.mode: {mode!r} must be one of {", ".join(MODES)}')
        reason = _mark_reason(here, entry.get('reason'))
        raw = entry[kind]
        if kind == 'host':
            if raw is not True:
                raise SpecError(f'{here}.host: {raw!r} must be true (the whole host)')
            marks.append(ServiceMark('host', None, mode, reason))
        elif kind == 'address':
            try:
                address = PciAddress.parse(raw)
            except PciAddressError as exc:
                raise SpecError(f'{here}.address: {exc}') from None
            marks.append(ServiceMark('address', str(address), mode, reason))
        elif kind == 'pf':
            if resolve_pf is not None:
                address = resolve_pf(f'{here}.pf', raw)
            else:
                try:
                    address = PciAddress.parse(raw)
                except PciAddressError as exc:
                    raise SpecError(f'{here}.pf: {exc}') from None
            marks.append(ServiceMark('pf', str(address), mode, reason))
        else:
            if not isinstance(raw, str) or raw.strip() not in (aliases or {}):
                raise SpecError(f'{here}.alias: {raw!r} is not an alias of the aliases option '
                                f'(known: {", ".join(sorted(aliases or {})) or "none"})')
            name = raw.strip()
            entries = tuple(dict(item) for item in (alias_source or []) if isinstance(item, dict)
                            and isinstance(item.get('name'), str) and item['name'].strip() == name)
            marks.append(ServiceMark('alias', name, mode, reason, alias=aliases[name], alias_entries=entries))
    seen: dict[tuple[str, str | None], int] = {}
    for index, mark in enumerate(marks):
        key = (mark.kind, mark.target)
        if key in seen:
            raise SpecError(f'{where}[{index}]: {mark.label} is already marked in {where}[{seen[key]}]')
        seen[key] = index
    return marks


def load_marks(stored: Any) -> list[ServiceMark]:
    """The marks in the state file (written by ``ServiceMark.stored``); an unreadable one is an error: a mark that
    silently vanished would give out a device the operator took out of service."""
    if not stored:
        return []
    marks = []
    for index, record in enumerate(stored if isinstance(stored, list) else [stored]):
        if not isinstance(record, dict):
            raise SpecError(f'the state file\'s out_of_service[{index}]: {record!r} is not a mark')
        entries = record.get('alias_entries') or []
        source = {key: value for key, value in record.items() if key != 'alias_entries'}
        where = "the state file's out_of_service"
        try:
            aliases = None
            if 'alias' in record:
                # Imported here: only a mark by alias needs the alias parser. pylint: disable-next=import-outside-toplevel
                from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases
                aliases = parse_aliases(entries)
            marks += parse_marks([source], aliases, entries, where=where)
        except SpecError as exc:
            text = str(exc)
            raise SpecError(text.replace(f'{where}[0]', f'{where}[{index}]', 1) if text.startswith(where)
                            else f'{where}[{index}]: {text}') from None
    return marks


def mark_of(marks: list[ServiceMark], device: PciDevice, tags: Mapping[str, Any] | None) -> ServiceMark | None:
    """The mark that takes the device out of service: a ``drain`` one before a ``no-new`` one, else the first."""
    found = [mark for mark in marks if mark.covers(device, tags)]
    found.sort(key=lambda mark: mark.mode != MODE_DRAIN)
    return found[0] if found else None


def mdev_mark_of(marks: list[ServiceMark], parent: PciDevice | None, mdev_type: Any,
                 tags: Mapping[str, Any] | None) -> ServiceMark | None:
    """The mark that takes mediated devices of this type on this parent out of service (as ``mark_of``)."""
    found = [mark for mark in marks if mark.covers_mdev(parent, mdev_type, tags)]
    found.sort(key=lambda mark: mark.mode != MODE_DRAIN)
    return found[0] if found else None


def host_mark(marks: list[ServiceMark]) -> ServiceMark | None:
    """The mark on the whole host, if any."""
    return next((mark for mark in marks if mark.kind == 'host'), None)
