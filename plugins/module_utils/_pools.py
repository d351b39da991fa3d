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
from typing import Any, Iterable, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias, AliasRequest
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
    PciAddress,
    PciDevice,
)

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
           host_use: Any = None, for_domain: str | None = None) -> dict[PciAddress, DeviceState]:
    """Each device's status. ``allocations`` None: libvirt could not be read, so nothing is known to be free.

    ``host_use`` (an object with ``of(address) -> [reasons]``) makes whitelisted devices the host
    uses unavailable; the reasons are kept in ``DeviceState.host_use`` (a run with ``force`` may
    lift that block, and only that one). ``for_domain`` (a domain UUID): IOMMU group siblings that
    domain holds do not block.
    """
    specs = {address: (None if device.is_bridge else whitelist.match(device, devices)) for address, device in devices.items()}
    groups: dict[int, list[PciDevice]] = {}
    for device in devices.values():
        if device.iommu_group is not None and not device.is_bridge:
            groups.setdefault(device.iommu_group, []).append(device)
    states = {}
    for address, device in devices.items():
        spec = specs[address]
        allocation = allocations.get(address) if allocations is not None else None
        if allocation is not None:
            states[address] = DeviceState(device, spec, STATUS_ALLOCATED, allocation=allocation)
        elif allocations is None:
            states[address] = DeviceState(device, spec, STATUS_UNKNOWN)
        elif spec is None:
            states[address] = DeviceState(device, None, STATUS_UNMANAGED)
        else:
            uses = tuple(host_use.of(address)) if host_use is not None else ()
            reason = _blocked(device, spec, allocations, groups, for_domain) or (host_use_reason(uses) if uses else None)
            states[address] = DeviceState(device, spec, STATUS_UNAVAILABLE if reason else STATUS_AVAILABLE, reason,
                                          host_use=uses)
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


def pools(states: Mapping[PciAddress, DeviceState]) -> list[dict[str, Any]]:
    """Whitelisted devices grouped by vendor, product, type, NUMA node, PF (for VFs) and tags.

    ``count`` is the free devices (Nova's meaning), beside ``total``, ``allocated`` and
    ``unavailable``; ``free_addresses`` lists the free ones so the controller can name them.
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
                                   'free_addresses': []}
        pool['total'] += 1
        if state.status == STATUS_AVAILABLE:
            pool['count'] += 1
            pool['free_addresses'].append(str(address))
        elif state.status == STATUS_ALLOCATED:
            pool['allocated'] += 1
        else:
            pool['unavailable'] += 1
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
        numa_nodes: Iterable[int] | None = None, sockets: Mapping[int, int] | None = None) -> Fit:
    """Choose devices for ``request`` among ``free`` (the host's free devices).

    Per alias, in request order: devices the alias matches (PFs only when its device_type asks),
    not excluded by an earlier choice (a PF excludes its VFs and a VF its PF), allowed by the
    alias's NUMA policy for a guest on ``numa_nodes`` (None: no placement, no constraint), best
    NUMA rank first, then devices the host does not use (``host_used`` comes only with force), then
    lowest address: the same inputs always give the same devices.
    """
    nodes = frozenset(numa_nodes) if numa_nodes is not None else None
    result = Fit()
    taken: set[PciAddress] = set()
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
        for c in free:
            key = (c.vendor_id, c.product_id, c.dev_type, id(c.tags))
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = alias.matches(c, c.tags)
            if hit and c.address not in taken:
                matching.append(c)
        usable = [c for c in matching
                  if not (c.physfn is not None and c.physfn in taken)
                  and not (c.dev_type == DEV_TYPE_PF and c.address in taken_pfs)]
        ranked = sorted(((rank, c.host_used, c.address, c) for c in usable
                         if (rank := _policy_rank(c, policy, nodes, sockets)) is not None), key=lambda t: t[:3])
        if len(ranked) < item.count:
            result.problems.append(_shortage(item, alias, len(ranked), len(usable), len(matching), nodes, policy))
            continue
        for _rank, _host_used, address, candidate in ranked[:item.count]:
            result.devices[item.alias].append(address)
            taken.add(address)
            if candidate.physfn is not None:
                taken_pfs.add(candidate.physfn)
            result.reserved.extend(s for s in candidate.siblings if s not in result.reserved)
    chosen = {address for addresses in result.devices.values() for address in addresses}
    result.reserved = sorted(address for address in result.reserved if address not in chosen)
    return result


def _shortage(item: AliasRequest, alias: Alias, allowed: int, usable: int, matching: int,
              nodes: frozenset[int] | None, policy: str) -> str:
    where = f' on {_numa_text(nodes)}' if nodes is not None and policy != 'preferred' else ''
    text = f'{item.alias}: {item.count} requested, {allowed} free{where}'
    notes = []
    if usable > allowed:
        notes.append(f'{usable - allowed} more elsewhere, not allowed by numa_policy {policy}')
    if matching > usable:
        notes.append(f'{matching - usable} excluded by a PF or VF taken for this request')
    return text + (f' ({"; ".join(notes)})' if notes else '')


def free_per_alias(aliases: Mapping[str, Alias], free: list[Candidate]) -> dict[str, int]:
    """How many devices of each alias the host can still give (one alias at a time, no NUMA placement)."""
    return {name: sum(1 for c in free if alias.matches(c, c.tags)) for name, alias in sorted(aliases.items())}
