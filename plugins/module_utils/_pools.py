# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Statuses, pools and request fitting: devices + whitelist + allocations, no I/O.

`assess` gives each device its status (and why it is unavailable); `pools` groups whitelisted
devices the way Nova's pci_stats does; `fit` chooses free devices for an alias request. The same
`fit` runs on the controller (pci_fleet) over `Candidate` records rebuilt from pools.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ansible_collections.passthrough.libvirt.plugins.module_utils._day2 import (
    ServiceMark,
    hardware_changes,
    hardware_reason,
    mark_of,
    mdev_mark_of,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import DeviceSpec, Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    DEV_TYPE_PF,
    STATUS_ALLOCATED,
    STATUS_AVAILABLE,
    STATUS_UNAVAILABLE,
    STATUS_UNKNOWN,
    STATUS_UNMANAGED,
    Allocation,
    DeviceState,
    DomainInfo,
    Mdev,
    MdevParent,
    MdevType,
    PciAddress,
    PciDevice,
    Vgpu,
)

if TYPE_CHECKING:   # only in type hints: pci_device_info and hypervisor_pci_stats need not compile _alias to run
    from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias, AliasRequest

DEV_TYPE_MDEV = 'type-MDEV'     # an mdev pool's dev_type: slices of a parent, not whole devices
DEV_TYPE_VGPU = 'type-VGPU'     # NVIDIA SR-IOV vGPU: VFs of a PF, each given with one vGPU type set

# vfio-pci and the vendor variants built on it (mlx5_vfio_pci, nvgrace_gpu_vfio_pci, ...).
_PASSTHROUGH_DRIVER = re.compile(r'^(vfio-pci|[a-z0-9_]+_vfio_pci)$')
_OFF = ('false', 'no', 'off', '0')


def passthrough_capable(driver: str | None) -> bool:
    return driver is not None and _PASSTHROUGH_DRIVER.match(driver) is not None


def managed(spec: DeviceSpec) -> bool:
    """The whitelist tag ``managed`` (Nova's meaning: libvirt detaches the device from its host driver); on by default."""
    value = spec.tags.get('managed', True)
    return str(value).strip().lower() not in _OFF


def _holder(allocation: Allocation) -> str:
    return f'domain {allocation.domain_name}'


def host_use_reason(uses: Iterable[str]) -> str:
    """The unavailable reason of a device the host uses, in one wording for every module."""
    return 'the host uses it: ' + '; '.join(uses)


def assess(devices: Mapping[PciAddress, PciDevice], whitelist: Whitelist,
           allocations: Mapping[PciAddress, Allocation] | None,
           host_use: Any = None, for_domain: str | None = None,
           identities: Mapping[PciAddress, Mapping[str, Any]] | None = None,
           marks: Sequence[ServiceMark] = ()) -> dict[PciAddress, DeviceState]:
    """Each device's status. ``allocations`` None: libvirt could not be read, so nothing is known to be free.

    ``host_use`` (an object with ``of(address) -> [reasons]``) makes whitelisted devices the host
    uses unavailable; the reasons are kept in ``DeviceState.host_use`` (a run with ``force`` may
    lift that block, and only that one). ``for_domain`` (a domain UUID): IOMMU group siblings that
    domain holds do not block. ``identities`` (what pci_whitelist recorded) and ``marks`` (out of
    service) block whitelisted devices first: a changed device is held back whatever else holds.
    """
    specs = {address: (None if device.is_bridge else whitelist.match(device, devices)) for address, device in devices.items()}
    changed = hardware_changes(devices, {a: r for a, r in identities.items() if a in devices and specs.get(a) is not None}) \
        if identities else {}
    groups: dict[int, list[PciDevice]] = {}
    for device in devices.values():
        if device.iommu_group is not None and not device.is_bridge:
            groups.setdefault(device.iommu_group, []).append(device)
    states = {}
    for address, device in devices.items():
        spec = specs[address]
        allocation = allocations.get(address) if allocations is not None else None
        changes = tuple(changed.get(address, ()))
        mark = mark_of(list(marks), device, spec.tags) if marks and spec is not None else None
        if allocation is not None:
            states[address] = DeviceState(device, spec, STATUS_ALLOCATED, allocation=allocation, hardware_changes=changes,
                                          out_of_service=mark)
        elif allocations is None:
            states[address] = DeviceState(device, spec, STATUS_UNKNOWN, hardware_changes=changes, out_of_service=mark)
        elif spec is None:
            states[address] = DeviceState(device, None, STATUS_UNMANAGED)
        else:
            uses = tuple(host_use.of(address)) if host_use is not None else ()
            reason = (hardware_reason(list(changes)) if changes else None) or (mark.why() if mark is not None else None) \
                or _blocked(device, spec, allocations, groups, for_domain) or (host_use_reason(uses) if uses else None)
            states[address] = DeviceState(device, spec, STATUS_UNAVAILABLE if reason else STATUS_AVAILABLE, reason,
                                          host_use=uses, hardware_changes=changes, out_of_service=mark)
    return states


def blocked_only_by_host_use(state: DeviceState) -> bool:
    """Whether ``force`` would make the device available: the host's use of it is its only block."""
    return state.status == STATUS_UNAVAILABLE and bool(state.host_use) and state.reason == host_use_reason(state.host_use)


def _blocked(device: PciDevice, spec: DeviceSpec, allocations: Mapping[PciAddress, Allocation],
             groups: Mapping[int, list[PciDevice]], for_domain: str | None) -> str | None:
    """Why a whitelisted, unallocated device cannot be given to a guest, the host's use aside; None when it can."""
    if device.physfn is not None and device.physfn in allocations:
        return f'its PF {device.physfn} is allocated to {_holder(allocations[device.physfn])}'
    for vf in device.virtfns:
        if vf in allocations:
            return f'its VF {vf} is allocated to {_holder(allocations[vf])}'
    if device.iommu_group is not None:
        for sibling in groups.get(device.iommu_group, ()):
            if sibling.address == device.address:
                continue
            held = allocations.get(sibling.address)
            if held is not None and held.domain_uuid != for_domain:
                return f'IOMMU group {device.iommu_group}: {sibling.address} is in {_holder(held)}'
            if held is None and sibling.driver is not None and not passthrough_capable(sibling.driver):
                # VFIO needs every member of the group on vfio-pci (or no driver); libvirt's managed
                # detach moves only the device it attaches.
                return f'IOMMU group {device.iommu_group}: {sibling.address} is held by the host driver {sibling.driver}'
    if not managed(spec) and not passthrough_capable(device.driver):
        return (f'bound to {device.driver or "no driver"}, not vfio-pci, and device_spec[{spec.index}] has managed off '
                '(libvirt will not rebind it)')
    return None


# -- pools ----------------------------------------------------------------------------------------

POOL_KEYS = ('vendor_id', 'product_id', 'dev_type', 'numa_node', 'parent_addr')


def _tags_key(tags: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(key), str(value)) for key, value in tags.items()))


def pools(states: Mapping[PciAddress, DeviceState], names: Any = None) -> list[dict[str, Any]]:
    """Whitelisted devices grouped by vendor, product, type, NUMA node, PF (for VFs) and tags.

    ``count`` is the free devices (Nova's meaning), beside ``total``, ``allocated`` and
    ``unavailable``; ``free_addresses`` lists the free ones so the controller can name them, and
    ``unavailable_reasons`` counts the unavailable ones per reason. ``names`` (an object with
    ``vendor_name(vendor)`` and ``device_name(vendor, product)``, e.g. pci.ids) adds
    ``vendor_name`` and ``product_name``.
    """
    grouped: dict[tuple, dict[str, Any]] = {}
    for address in sorted(states):
        state = states[address]
        if state.spec is None or state.status not in (STATUS_AVAILABLE, STATUS_ALLOCATED, STATUS_UNAVAILABLE):
            continue
        device = state.device
        parent = str(device.physfn) if device.physfn is not None else None
        key = (device.vendor_id, device.product_id, device.dev_type, device.numa_node, parent, _tags_key(state.spec.tags))
        pool = grouped.get(key)
        if pool is None:
            pool = grouped[key] = {'count': 0, 'total': 0, 'allocated': 0, 'unavailable': 0,
                                   'vendor_id': device.vendor_id, 'product_id': device.product_id, 'dev_type': device.dev_type,
                                   'numa_node': device.numa_node, 'parent_addr': parent, 'tags': dict(state.spec.tags),
                                   'free_addresses': [], 'unavailable_reasons': {}}
            if names is not None:
                pool['vendor_name'] = names.vendor_name(device.vendor_id)
                pool['product_name'] = names.device_name(device.vendor_id, device.product_id)
        pool['total'] += 1
        if state.status == STATUS_AVAILABLE:
            pool['count'] += 1
            pool['free_addresses'].append(str(address))
        elif state.status == STATUS_ALLOCATED:
            pool['allocated'] += 1
        else:
            pool['unavailable'] += 1
            why = state.reason or 'unavailable'
            pool['unavailable_reasons'][why] = pool['unavailable_reasons'].get(why, 0) + 1
    return [grouped[key] for key in sorted(grouped, key=_sort_key)]


def _sort_key(key: tuple) -> tuple:
    vendor, product, dev_type, numa, parent, tags = key
    return (vendor, product, dev_type, -1 if numa is None else numa, parent or '', tags)


# -- fitting --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A free device as fitting sees it: what aliases match, where it sits, what it excludes."""

    address: PciAddress
    vendor_id: str
    product_id: str
    dev_type: str
    numa_node: int | None
    tags: Mapping[str, Any]
    physfn: PciAddress | None = None
    iommu_group: int | None = None
    # Whitelisted, free IOMMU group siblings: taken together (reserved for the same domain).
    siblings: tuple[PciAddress, ...] = ()
    # The host uses it, and the run was given force: chosen only when nothing else fits.
    host_used: bool = False


def candidates(states: Mapping[PciAddress, DeviceState], force: bool = False) -> list[Candidate]:
    """The free devices of a host, with their free IOMMU group siblings; with ``force``, also those
    whose only block is the host's use of them (``host_used``)."""
    free = [state for state in states.values()
            if state.status == STATUS_AVAILABLE or (force and blocked_only_by_host_use(state))]
    by_group: dict[int, list[PciAddress]] = {}
    for state in free:
        if state.device.iommu_group is not None:
            by_group.setdefault(state.device.iommu_group, []).append(state.device.address)
    result = []
    for state in sorted(free, key=lambda s: s.device.address):
        device = state.device
        siblings = tuple(sorted(a for a in by_group.get(device.iommu_group, ()) if a != device.address)) \
            if device.iommu_group is not None else ()
        result.append(Candidate(device.address, device.vendor_id, device.product_id, device.dev_type, device.numa_node,
                                state.spec.tags if state.spec else {}, device.physfn, device.iommu_group, siblings,
                                host_used=state.status != STATUS_AVAILABLE))
    return result


# A fleet's hosts share their hardware, so they share addresses: parse each text once.
_parse_address = functools.lru_cache(maxsize=65536)(PciAddress.parse)


def candidates_from_pools(pools_list: Iterable[Mapping[str, Any]]) -> list[Candidate]:
    """Free devices rebuilt from a host's pools (the controller has no sysfs): no IOMMU groups."""
    result = []
    for pool in pools_list:
        parent = _parse_address(pool['parent_addr']) if pool.get('parent_addr') else None
        for text in pool.get('free_addresses') or ():
            result.append(Candidate(_parse_address(text), pool['vendor_id'], pool['product_id'], pool['dev_type'],
                                    pool.get('numa_node'), pool.get('tags') or {}, parent))
    result.sort(key=lambda c: c.address)
    return result


@dataclass
class Fit:
    """Devices chosen per alias (in request order), the siblings reserved with them, and why a request does not fit."""

    devices: dict[str, list[PciAddress]] = field(default_factory=dict)
    reserved: list[PciAddress] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _numa_text(nodes: frozenset[int]) -> str:
    return 'numa_node ' + ', '.join(map(str, sorted(nodes)))


def _policy_rank(candidate: Candidate, policy: str, nodes: frozenset[int] | None,
                 sockets: Mapping[int, int] | None) -> int | None:
    """0 best; None when the policy forbids the device for a guest on ``nodes``."""
    if nodes is None:
        return 0
    numa = candidate.numa_node
    if policy == 'required':
        return 0 if numa in nodes else None
    if policy == 'legacy':
        return 0 if numa in nodes else (1 if numa is None else None)
    if policy == 'preferred':
        return 0 if numa in nodes else (1 if numa is None else 2)
    # socket: the device's NUMA node is on a socket of one of the guest's nodes
    if numa is None or not sockets or numa not in sockets:
        return None
    wanted = {sockets[node] for node in nodes if node in sockets}
    if sockets[numa] not in wanted:
        return None
    return 0 if numa in nodes else 1


def fit(request: list[AliasRequest], aliases: Mapping[str, Alias], free: list[Candidate],
        numa_nodes: Iterable[int] | None = None, sockets: Mapping[int, int] | None = None, *,
        held: Mapping[str, Iterable[PciAddress]] | None = None, others: Mapping[PciAddress, DeviceState] | None = None,
        host_use_hint: str | None = None) -> Fit:
    """Choose devices for ``request`` among ``free`` (the host's free devices).

    Per alias, in request order: devices the alias matches (PFs only when its device_type asks),
    not excluded by an earlier choice (a PF excludes its VFs and a VF its PF), allowed by the
    alias's NUMA policy for a guest on ``numa_nodes`` (None: no placement, no constraint), best
    NUMA rank first, then devices the host does not use (``host_used`` comes only with force), then
    lowest address: the same inputs always give the same devices.

    A shortage says why the other devices the alias matches are not free: the NUMA policy and this
    request's own choices always; with ``others`` (the host's device states) also those held by a
    domain, unavailable (IOMMU group, PF/VF, host use, ...) or not whitelisted. ``held`` (alias ->
    the devices the domain already holds of it; the request's counts are then the devices to add)
    makes the message give the whole count and what the domain holds. ``host_use_hint`` follows
    the reason of a device whose only block is the host's use of it.
    """
    nodes = frozenset(numa_nodes) if numa_nodes is not None else None
    result = Fit()
    taken: dict[PciAddress, str] = {}        # address -> the alias that took it
    taken_pfs: set[PciAddress] = set()       # PFs of VFs taken
    for item in request:
        alias = aliases[item.alias]
        result.devices[item.alias] = []
        if item.count == 0:
            continue
        policy = alias.numa_policy
        # Devices of one pool share vendor, product, type and the tags object: match each once.
        memo: dict[tuple, bool] = {}
        matching = []
        already = []
        for c in free:
            key = (c.vendor_id, c.product_id, c.dev_type, id(c.tags))
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = alias.matches(c, c.tags)
            if hit:
                (already if c.address in taken else matching).append(c)
        usable = [c for c in matching
                  if not (c.physfn is not None and c.physfn in taken)
                  and not (c.dev_type == DEV_TYPE_PF and c.address in taken_pfs)]
        ranked = sorted(((rank, c.host_used, c.address, c) for c in usable
                         if (rank := _policy_rank(c, policy, nodes, sockets)) is not None), key=lambda t: t[:3])
        if len(ranked) < item.count:
            why = _Why(alias, policy, host_use_hint)
            allowed = {t[2] for t in ranked}
            why.add_numa([c for c in usable if c.address not in allowed])
            left = {c.address for c in usable}
            why.add(_CAT_REQUEST, 'excluded by a PF or VF taken for this request', None,
                    (c.address for c in matching if c.address not in left))
            for c in already:
                why.add(_CAT_REQUEST, f'taken for {taken[c.address]} in this request', None, (c.address,))
            mine = tuple((held or {}).get(item.alias, ()))
            if others is not None:
                why.add_states(others, {c.address for c in free} | set(mine))
            result.problems.append(_head(item, len(mine), len(ranked), nodes, policy) + why.text())
            continue
        for _rank, _host_used, address, candidate in ranked[:item.count]:
            result.devices[item.alias].append(address)
            taken[address] = item.alias
            if candidate.physfn is not None:
                taken_pfs.add(candidate.physfn)
            result.reserved.extend(s for s in candidate.siblings if s not in result.reserved)
    chosen = {address for addresses in result.devices.values() for address in addresses}
    result.reserved = sorted(address for address in result.reserved if address not in chosen)
    return result


def _head(item: AliasRequest, have: int, allowed: int, nodes: frozenset[int] | None, policy: str) -> str:
    where = f' on {_numa_text(nodes)}' if nodes is not None and policy != 'preferred' else ''
    if have:
        return f'{item.alias}: {item.count + have} requested, the domain holds {have}, {allowed} more free{where}'
    return f'{item.alias}: {item.count} requested, {allowed} free{where}'


# Why the devices an alias matches are not free, grouped in this order; each category's label
# stands for all its groups when a shortage has too many to list ({k}: how many groups).
_CAT_NUMA, _CAT_REQUEST, _CAT_HELD, _CAT_IOMMU, _CAT_PFVF, _CAT_HOST, _CAT_OTHER, _CAT_WHITELIST, _CAT_UNKNOWN = range(9)
_CATEGORY_LABELS = {
    _CAT_NUMA: 'on other NUMA nodes, not allowed by numa_policy {policy}',
    _CAT_REQUEST: 'taken or excluded by this request',
    _CAT_HELD: 'held by {k} domains',
    _CAT_IOMMU: 'unavailable for their IOMMU group',
    _CAT_PFVF: 'unavailable while their PF or VF is allocated',
    _CAT_HOST: 'used by the host',
    _CAT_OTHER: 'unavailable',
}
MAX_GROUPS = 4       # more groups than this: one line per category
MAX_EXAMPLES = 3     # addresses named per group


def _examples(addresses: list[PciAddress]) -> str:
    shown = ', '.join(str(a) for a in addresses[:MAX_EXAMPLES])
    return shown + (f' and {len(addresses) - MAX_EXAMPLES} more' if len(addresses) > MAX_EXAMPLES else '')


def _one(address: PciAddress, phrase: str, detail: str | None) -> str:
    return f'{address} {phrase}' + (f' ({detail})' if detail else '')


class _Why:
    """The devices an alias matches but cannot have, grouped by reason: ``{category, phrase, detail} -> addresses``."""

    def __init__(self, alias: Alias, policy: str, host_use_hint: str | None) -> None:
        self.alias, self.policy, self.hint = alias, policy, host_use_hint
        self.groups: dict[tuple[int, str, str | None], list[PciAddress]] = {}

    def add(self, category: int, phrase: str, detail: str | None, addresses: Iterable[PciAddress]) -> None:
        for address in addresses:
            self.groups.setdefault((category, phrase, detail), []).append(address)

    def add_numa(self, refused: list[Candidate]) -> None:
        for c in refused:
            where = _numa_text(frozenset((c.numa_node,))) if c.numa_node is not None else 'no NUMA node'
            self.add(_CAT_NUMA, f'on {where}, not allowed by numa_policy {self.policy}', None, (c.address,))

    def add_states(self, states: Mapping[PciAddress, DeviceState], skip: set[PciAddress]) -> None:
        for address in sorted(states):
            state = states[address]
            if address in skip or state.device.is_bridge or state.status == STATUS_AVAILABLE:
                continue
            if not self.alias.matches(state.device, state.spec.tags if state.spec is not None else {}):
                continue
            self.add(*state_reason(state, self.hint), (address,))

    def text(self) -> str:
        if not self.groups:
            return ''
        keys = sorted(self.groups, key=lambda key: (key[0], self.groups[key][0]))
        per_category: dict[int, list[tuple[int, str, str | None]]] = {}
        for key in keys:
            per_category.setdefault(key[0], []).append(key)
        parts = []
        for category, members in per_category.items():
            if len(keys) > MAX_GROUPS and len(members) > 1:
                addresses = [a for key in members for a in self.groups[key]]
                label = _CATEGORY_LABELS[category].format(k=len(members), policy=self.policy)
                parts.append(f'{len(addresses)} {label} (e.g. {_one(self.groups[members[0]][0], *members[0][1:])})')
                continue
            for key in members:
                addresses = self.groups[key]
                _category, phrase, detail = key
                if len(addresses) == 1:
                    parts.append(_one(addresses[0], phrase, detail))
                else:
                    parts.append(f'{len(addresses)} {phrase} ({_examples(addresses)}' + (f': {detail})' if detail else ')'))
        return ': ' + ', '.join(parts)


def state_reason(state: DeviceState, host_use_hint: str | None = None) -> tuple[int, str, str | None]:
    """Why a device that is not available cannot be given: (category, phrase, detail)."""
    if state.status == STATUS_ALLOCATED and state.allocation is not None:
        return _CAT_HELD, f'held by domain {state.allocation.domain_name}', None
    if state.status == STATUS_UNKNOWN:
        return _CAT_UNKNOWN, 'of unknown status (libvirt could not be read)', None
    if state.spec is None:
        return _CAT_WHITELIST, 'not in the whitelist', None
    reason = state.reason or 'unavailable'
    if blocked_only_by_host_use(state):
        return _CAT_HOST, 'unavailable', reason + (f'; {host_use_hint}' if host_use_hint else '')
    if reason.startswith('IOMMU group '):
        return _CAT_IOMMU, 'unavailable', reason
    if reason.startswith(('its PF ', 'its VF ')):
        return _CAT_PFVF, 'unavailable', reason
    return _CAT_OTHER, 'unavailable', reason


def free_per_alias(aliases: Mapping[str, Alias], free: list[Candidate]) -> dict[str, int]:
    """How many devices of each alias the host can still give (one alias at a time, no NUMA placement)."""
    return {name: sum(1 for c in free if alias.matches(c, c.tags)) for name, alias in sorted(aliases.items())}


# -- mediated devices -------------------------------------------------------------------------------

def mdev_pools(parents: list[MdevParent], mdevs: list[Mdev], domains: list[DomainInfo] | None, whitelist: Whitelist,
               devices: Mapping[PciAddress, PciDevice], names: Any = None, marks: Sequence[ServiceMark] = ()) -> list[dict[str, Any]]:
    """One pool per whitelisted (parent, mdev type), as Nova reports a VGPU inventory per physical GPU.

    ``count`` (free) is what the parent can still create (``available_instances``) plus the mdevs of the type
    that exist and no domain holds; ``allocated`` the mdevs a domain holds (live or persistent); ``total``
    both. With ``domains`` None (libvirt unreadable) nothing is known to be free: every existing mdev is
    ``unavailable`` and so is the capacity. A parent out of service (``marks``: the host, or the PCI parent by address,
    PF or alias) gives nothing: what it could give is ``unavailable``.
    """
    held = {item.uuid for info in domains or () for item in info.mdevs_live + info.mdevs_config}
    result = []
    for parent in parents:
        device = devices.get(parent.address) if parent.address is not None else None
        if parent.address is not None and device is None:
            continue
        for mdev_type in parent.types:
            spec = whitelist.mdev_match(parent, mdev_type, device, devices)
            if spec is None:
                continue
            existing = [item for item in mdevs if item.parent == parent.name and item.type_id == mdev_type.type_id]
            allocated = [item for item in existing if item.uuid in held]
            free = [item.uuid for item in existing if item.uuid not in held]
            capacity = mdev_type.available_instances or 0
            pool = {'count': capacity + len(free), 'total': capacity + len(existing), 'allocated': len(allocated), 'unavailable': 0,
                    'vendor_id': device.vendor_id if device else None, 'product_id': device.product_id if device else None,
                    'dev_type': DEV_TYPE_MDEV, 'numa_node': device.numa_node if device else None, 'parent_addr': parent.name,
                    'mdev_type': mdev_type.type_id, 'mdev_name': mdev_type.name, 'device_api': mdev_type.device_api,
                    'tags': dict(spec.tags), 'free_mdevs': free, 'free_addresses': [], 'unavailable_reasons': {}}
            if names is not None:
                pool['vendor_name'] = names.vendor_name(device.vendor_id) if device else None
                pool['product_name'] = names.device_name(device.vendor_id, device.product_id) if device else None
            if domains is None:
                pool['unavailable'], pool['count'], pool['allocated'] = pool['count'], 0, 0
                pool['unavailable_reasons'] = {'allocations unknown: libvirt cannot be read': pool['unavailable']}
                pool['free_mdevs'] = []
            mark = mdev_mark_of(list(marks), device, mdev_type, spec.tags) if marks else None
            if mark is not None and pool['count']:
                pool['unavailable'] += pool['count']
                pool['unavailable_reasons'] = {mark.why(): pool['count']}
                pool['count'], pool['free_mdevs'] = 0, []
            result.append(pool)
    return result


def vgpu_type(whitelist: Whitelist, address: PciAddress, device: PciDevice, devices: Mapping[PciAddress, PciDevice],
              type_id: int, name: str | None) -> tuple[MdevType, DeviceSpec | None]:
    """An NVIDIA SR-IOV vGPU type of the VF at ``address``, as the mdev type it stands for (the VF its own parent), and
    the whitelist entry that admits it there (None when none does)."""
    mdev_type = MdevType(str(type_id), name, None, 'vfio-pci', None)
    return mdev_type, whitelist.mdev_match(MdevParent(str(address), address), mdev_type, device, devices)


def vgpu_pools(vgpus: Mapping[PciAddress, Vgpu], devices: Mapping[PciAddress, PciDevice],
               allocations: Mapping[PciAddress, Allocation] | None, whitelist: Whitelist, names: Any = None,
               marks: Sequence[ServiceMark] = ()) -> list[dict[str, Any]]:
    """One pool per PF and whitelisted vGPU type of NVIDIA SR-IOV vGPU VFs (kernel 6.8 and later).

    A free VF (no domain holds it, no other type set) counts in the pool of every admitted type it can take;
    a VF a domain holds counts as allocated in the pool of the type it has. With ``allocations`` None nothing is free.
    """
    grouped: dict[tuple[str, int], dict[str, Any]] = {}
    for address in sorted(vgpus):
        vgpu, device = vgpus[address], devices.get(address)
        if device is None or device.physfn is None:
            continue
        held = allocations is None or address in allocations
        for type_id, name in sorted(vgpu.creatable.items()):
            mdev_type, spec = vgpu_type(whitelist, address, device, devices, type_id, name)
            if spec is None:
                continue
            pool = grouped.get((str(device.physfn), type_id))
            if pool is None:
                pool = grouped[(str(device.physfn), type_id)] = {
                    'count': 0, 'total': 0, 'allocated': 0, 'unavailable': 0, 'vendor_id': device.vendor_id,
                    'product_id': device.product_id, 'dev_type': DEV_TYPE_VGPU, 'numa_node': device.numa_node,
                    'parent_addr': str(device.physfn), 'mdev_type': str(type_id), 'mdev_name': name, 'device_api': 'vfio-pci',
                    'tags': dict(spec.tags), 'free_mdevs': [], 'free_addresses': [], 'unavailable_reasons': {}}
                if names is not None:
                    pool['vendor_name'] = names.vendor_name(device.vendor_id)
                    pool['product_name'] = names.device_name(device.vendor_id, device.product_id)
            if held:
                if allocations is not None and vgpu.current == type_id:
                    pool['allocated'] += 1
                    pool['total'] += 1
            elif vgpu.current in (None, type_id):
                pool['total'] += 1
                mark = mdev_mark_of(list(marks), device, mdev_type, spec.tags) if marks else None
                if mark is not None:      # out of service: counted, not given
                    pool['unavailable'] += 1
                    pool['unavailable_reasons'][mark.why()] = pool['unavailable_reasons'].get(mark.why(), 0) + 1
                else:
                    pool['count'] += 1
                    pool['free_addresses'].append(str(address))
    return [grouped[key] for key in sorted(grouped)]


def mdev_free_per_alias(aliases: Mapping[str, Alias], pools_: list[dict[str, Any]], parents: list[MdevParent],
                        devices: Mapping[PciAddress, PciDevice]) -> dict[str, int]:
    """How many mdevs each mdev alias could still get on this host (any parent, one alias at a time)."""
    types = {(parent.name, t.type_id): t for parent in parents for t in parent.types}
    types.update({(pool['parent_addr'], pool['mdev_type']): MdevType(pool['mdev_type'], pool['mdev_name'], None, 'vfio-pci', None)
                  for pool in pools_ if pool['dev_type'] == DEV_TYPE_VGPU})
    found = {}
    for name, alias in sorted(aliases.items()):
        if not alias.is_mdev:
            continue
        found[name] = 0
        for pool in pools_:
            parent_device = devices.get(PciAddress.parse(pool['parent_addr'])) if pool['vendor_id'] is not None else None
            mdev_type = types.get((pool['parent_addr'], pool['mdev_type']))
            if mdev_type is not None and alias.matches_mdev(mdev_type, parent_device, pool['tags']):
                found[name] += pool['count']
    return found
