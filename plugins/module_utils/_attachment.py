# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""pci_attachment's work: what a domain holds, the plan (pure), and the ``Attacher`` that applies it.

``DomainState`` is what the domain holds, read once: this collection's attachments (each
``ua-pci-<id>`` hostdev joined with its record in the domain's metadata), records whose hostdev
is not there (stale: a run that died between writing its intent and attaching), and hostdevs with
our alias but no record (orphans: an older version's crash, or another tool).

``plan_attachment`` decides everything before the first change, from a host snapshot, a domain
state and the parsed request, and does no I/O of its own: it is tested as tables of cases.

The ``Attacher`` applies a plan write-ahead: the records of every device it is about to attach
are written into the domain's metadata first, so whatever point a run dies at, the next run
counts what landed (record + hostdev) and drops what did not (record alone). Any failure undoes
what the run did - attached devices detached, detached ones attached again, the metadata
written back - and the message says what was undone and what was left.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias, AliasRequest, parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import write_atomic
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, PassthroughError, Refused
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostLock, HostSnapshot, load_state, save_state
from ansible_collections.passthrough.libvirt.plugins.module_utils._iplink import IpLink
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import (
    DomainHandle,
    EventLoop,
    Libvirt,
    domain_root,
    hostdev_source_xml,
    hostdev_xml,
    interface_macs,
    mdev_xml,
    numa_nodes,
    parse_hostdevs,
    parse_mdevs,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    ALIAS_PREFIX,
    STATUS_AVAILABLE,
    Hostdev,
    InterfaceOptions,
    MdevHostdev,
    MdevType,
    PciAddress,
    PciAddressError,
    auto_mac,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import (
    DEV_TYPE_VGPU,
    blocked_only_by_host_use,
    candidates,
    fit,
    mdev_pools,
    vgpu_pools,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._records import server_device, server_mdev

# How long a device gone from the live XML may wait for its device-removed event.
EVENT_GRACE = 2.0
DEFAULT_MDEVCTL_DIR = '/etc/mdevctl.d'     # where mdevctl keeps its definitions
FORCE_HINT = 'force: true to take it anyway'


# -- what the domain holds ------------------------------------------------------------------------------

@dataclass
class Attachment:
    """One device of this collection in the domain: in its live definition, its persistent one, or both."""

    attachment_id: str
    address: PciAddress | None       # None for a mediated device
    alias: str | None
    live: bool = False
    config: bool = False
    recorded: bool = True       # False: an orphan, a ua-pci- hostdev without a record
    # A NIC VF given as a network interface: {mac, vlan, trust, spoofchk, link_state, pf, vf, was} (the record's)
    interface: dict[str, Any] | None = None
    # A mediated device: {uuid, parent, type, created} (the record's; an orphan's has the uuid only)
    mdev: dict[str, Any] | None = None
    # An NVIDIA SR-IOV vGPU VF: {type (set before the attach), was (the type it had, None for none)}
    vgpu: dict[str, Any] | None = None

    @property
    def libvirt_alias(self) -> str:
        return ALIAS_PREFIX + self.attachment_id

    @property
    def label(self) -> str:
        """How messages name it: its PCI address, or ``mdev <uuid>``."""
        return f'mdev {self.mdev["uuid"]}' if self.mdev is not None else str(self.address)

    def xml(self) -> str:
        if self.mdev is not None:
            return mdev_xml(self.mdev['uuid'], self.attachment_id)
        return hostdev_xml(self.address, self.attachment_id, self.interface, managed=self.vgpu is None)

    def record(self) -> dict[str, Any]:
        return result_record(self.attachment_id, self.address, self.alias, self.interface, self.mdev, self.vgpu)

    def metadata(self) -> dict[str, Any]:
        record = {'id': self.attachment_id, 'alias': self.alias, 'address': str(self.address) if self.address else None,
                  'interface': self.interface}
        if self.mdev is not None:
            record['mdev'] = self.mdev
        if self.vgpu is not None:
            record['vgpu'] = self.vgpu
        return record


def result_record(attachment_id: str | None, address: PciAddress | None, alias: str | None, interface: dict[str, Any] | None,
                  mdev: dict[str, Any] | None = None, vgpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """An entry of ``attached``/``detached``; an interface's adds what it was given (its MAC null in check mode with mac auto),
    a mediated device's its UUID (null in check mode for one to be created), type and parent."""
    record = {'attachment_id': attachment_id, 'address': str(address) if address is not None else None, 'alias': alias}
    if interface is not None:
        record.update(interface=True, mac_address=interface.get('mac'),
                      **{key: interface.get(key) for key in ('vlan', 'trust', 'spoofchk', 'link_state')})
    if mdev is not None:
        record.update(mdev_uuid=mdev.get('uuid'), mdev_type=mdev.get('type'), mdev_parent=mdev.get('parent'))
    if vgpu is not None:
        record.update(vgpu_type=vgpu.get('type'))
    return record


@dataclass
class DomainState:
    """A domain as one run sees it."""

    uuid: str
    name: str
    active: bool
    persistent: bool
    attachments: list[Attachment] = field(default_factory=list)   # record order (attach order), then orphans
    records: list[dict[str, str | None]] = field(default_factory=list)   # the metadata as it is, stale ones too
    numa_nodes: set[int] | None = None
    # Every PCI device of the domain (anyone's): the live definition's, then those only in the persistent one.
    hostdevs: list[Hostdev] = field(default_factory=list)
    in_live: set[PciAddress] = field(default_factory=set)     # the addresses of those in the live definition
    in_config: set[PciAddress] = field(default_factory=set)   # and of those in the persistent one
    macs: dict[str, str] = field(default_factory=dict)    # every interface's MAC, live or persistent -> which interface
    mdevs: list[MdevHostdev] = field(default_factory=list)  # every mediated device of the domain (anyone's)

    @property
    def orphans(self) -> list[Attachment]:
        return [item for item in self.attachments if not item.recorded]

    @property
    def stale_records(self) -> list[dict[str, str | None]]:
        held = {item.attachment_id for item in self.attachments}
        return [record for record in self.records if record['id'] not in held]

    def of_alias(self, alias: str) -> list[Attachment]:
        return [item for item in self.attachments if item.recorded and item.alias == alias]


def read_domain_state(dom: Any) -> DomainState:
    """Read the domain through its handle: both definitions' hostdevs and both metadata records."""
    active, persistent = dom.active(), dom.persistent()
    found: dict[str, Attachment] = {}
    # Each definition parsed once; every reader below takes the parsed tree.
    live_xml = domain_root(dom.xml()) if active else None
    config_xml = domain_root(dom.xml(inactive=True)) if persistent else None
    every: dict[PciAddress, Hostdev] = {}
    in_live: set[PciAddress] = set()
    in_config: set[PciAddress] = set()
    every_mdev: dict[str, MdevHostdev] = {}
    for xml, live in ((live_xml, True), (config_xml, False)):
        if xml is None:
            continue
        for hostdev in parse_hostdevs(xml):
            every.setdefault(hostdev.address, hostdev)
            (in_live if live else in_config).add(hostdev.address)
            if hostdev.attachment_id is None:
                continue
            item = found.setdefault(hostdev.attachment_id, Attachment(hostdev.attachment_id, hostdev.address, None, recorded=False))
            if live:
                item.live = True
            else:
                item.config = True
        for mdev in parse_mdevs(xml):
            every_mdev.setdefault(mdev.uuid, mdev)
            if mdev.attachment_id is None:
                continue
            item = found.setdefault(mdev.attachment_id, Attachment(mdev.attachment_id, None, None, recorded=False, mdev={'uuid': mdev.uuid}))
            if live:
                item.live = True
            else:
                item.config = True
    # The persistent definition's records first, then the live one's for what only runs.
    records = dom.metadata(live=False) if persistent else []
    if active:
        known = {record['id'] for record in records}
        records += [record for record in dom.metadata(live=True) if record['id'] not in known]
    order = []
    for record in records:
        item = found.get(record['id'])
        if item is not None and not item.recorded:
            item.alias, item.recorded, item.interface = record['alias'], True, record.get('interface')
            if item.mdev is not None and record.get('mdev') and record['mdev']['uuid'] == item.mdev['uuid']:
                item.mdev = record['mdev']
            item.vgpu = record.get('vgpu')
            order.append(item)
    attachments = order + [item for item in found.values() if not item.recorded]
    macs = {}
    for xml in (live_xml, config_xml):
        if xml is not None:
            for mac, where in interface_macs(xml).items():
                macs.setdefault(mac, where)
    return DomainState(dom.uuid, dom.name, active, persistent, attachments, records,
                       numa_nodes(live_xml if active else config_xml), list(every.values()), in_live, in_config, macs,
                       list(every_mdev.values()))


# -- the request ---------------------------------------------------------------------------------------------

@dataclass
class AttachmentRequest:
    """pci_attachment's options, parsed. Exactly one of ``request``, ``addresses`` and ``attachment_ids``
    is set for present and absent (the module's argument spec says so)."""

    state: str
    aliases: Mapping[str, Alias] = field(default_factory=dict)
    request: list[AliasRequest] | None = None
    addresses: list[PciAddress] | None = None
    attachment_ids: list[str] | None = None
    force: bool = False
    interface: InterfaceOptions | None = None


def check_attachment_id(where: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise Refused(f'{where}: {value!r} is not an attachment id (a UUID)') from None


def parse_options(params: Mapping[str, Any]) -> AttachmentRequest:
    """The module's options as an ``AttachmentRequest``; every user string through its strict parser.

    Which options combine is the argument spec's job (``_argspec.PCI_ATTACHMENT_RULES``); what it cannot say is
    checked here.
    """
    state = params['state']
    aliases = parse_aliases(params.get('aliases'))
    request = parse_request(params['request'], aliases) if params.get('request') is not None else None
    addresses = None
    if params.get('addresses') is not None:
        addresses = []
        for index, text in enumerate(params['addresses']):
            try:
                addresses.append(PciAddress.parse(text))
            except PciAddressError as exc:
                raise Refused(f'addresses[{index}]: {exc}') from None
    ids = None
    if params.get('attachment_ids') is not None:
        if state != 'absent':
            raise Refused('attachment_ids: only with state=absent')
        ids = [check_attachment_id(f'attachment_ids[{index}]', value) for index, value in enumerate(params['attachment_ids'])]
    timeout = params.get('timeout', 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise Refused(f'timeout: {timeout!r} must be a number of seconds above 0 and at most 3600')
    interface = None
    if params.get('interface') is not None:
        if state != 'present':
            raise Refused('interface: only with state=present (a detach needs no interface settings)')
        interface = InterfaceOptions.parse('interface', params['interface'])
    return AttachmentRequest(state, aliases, request, addresses, ids, bool(params.get('force')), interface)


@dataclass
class PlannedAttach:
    address: PciAddress | None
    alias: str | None
    host_use: tuple[str, ...] = ()     # force took a device the host uses
    # A NIC VF as a network interface: the record to be (mac None: auto, chosen from the attachment id)
    interface: dict[str, Any] | None = None
    # A mediated device: {uuid (None: to be created, with the attachment id as its UUID), parent, type, created}
    mdev: dict[str, Any] | None = None
    vgpu: dict[str, Any] | None = None     # an NVIDIA vGPU VF: {type, was}

    @property
    def label(self) -> str:
        if self.mdev is not None:
            return f'mdev {self.mdev["uuid"]}' if self.mdev['uuid'] else f'a new mdev of {self.mdev["type"]} on {self.mdev["parent"]}'
        return str(self.address)

    def record(self) -> dict[str, Any]:
        return result_record(None, self.address, self.alias, self.interface, self.mdev, self.vgpu)


@dataclass
class VfRestore:
    """A VF's PF settings to put back: a stale record's, whose attach never landed."""

    pf: str
    vf: int
    settings: dict[str, Any]


@dataclass
class Plan:
    """What a run will do, decided before the first change."""

    attach: list[PlannedAttach] = field(default_factory=list)
    detach: list[Attachment] = field(default_factory=list)
    drop_records: list[str] = field(default_factory=list)     # stale records' ids
    restore: list[VfRestore] = field(default_factory=list)    # stale records' VF settings to put back
    remove_mdevs: list[dict[str, Any]] = field(default_factory=list)   # stale records' mdevs this collection created, unused
    reset_vgpus: list[tuple[PciAddress, int]] = field(default_factory=list)   # stale records' vGPU VFs: the type to put back
    warnings: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.attach or self.detach or self.drop_records or self.restore or self.remove_mdevs or self.reset_vgpus)


def reconciliation(domain: DomainState) -> Plan:
    """What every run does first, a query included: drop the stale records, report the orphans."""
    plan = Plan(drop_records=[str(record['id']) for record in domain.stale_records])
    for orphan in domain.orphans:
        plan.warnings.append(f'{orphan.label} (attachment {orphan.attachment_id}) carries this collection\'s alias but no '
                             'record: it counts for no alias; remove it with attachment_ids or addresses')
    return plan


def plan_attachment(snapshot: HostSnapshot, domain: DomainState, request: AttachmentRequest) -> Plan:
    """Everything a run will change, or a ``Refused`` naming the field and the value. No I/O of its own:
    the snapshot's parts it asks for are read once, on first use (a plain snapshot of values in tests)."""
    plan = reconciliation(domain)
    if any((record.get('interface') or {}).get('was') for record in domain.stale_records):
        _plan_restores(plan, domain, snapshot.states(for_domain=domain.uuid))
    _plan_mdev_removals(snapshot, domain, plan)
    if request.state == 'absent':
        _plan_removal(domain, request, plan)
        return plan

    for item in request.request or ():
        have = domain.of_alias(item.alias)
        if item.count < len(have):
            plan.detach.extend(have[::-1][:len(have) - item.count])       # the most recent first
    additions = [AliasRequest(item.alias, item.count - len(domain.of_alias(item.alias)))
                 for item in request.request or () if item.count > len(domain.of_alias(item.alias))]
    slices = [item for item in additions if request.aliases[item.alias].is_mdev]
    if slices:
        _plan_mdevs(snapshot, domain, request, slices, plan)
        additions = [item for item in additions if not request.aliases[item.alias].is_mdev]
    if not additions and request.addresses is None:
        return plan        # nothing to choose: the host's devices are not needed

    states = snapshot.states(for_domain=domain.uuid)
    if request.addresses is not None:
        mine = {item.address for item in domain.attachments}
        for index, address in enumerate(request.addresses):
            if address in mine or any(planned.address == address for planned in plan.attach):
                continue
            state = states.get(address)
            if state is None:
                raise Refused(f'addresses[{index}]: there is no PCI device {address} on this host')
            if state.status == STATUS_AVAILABLE:
                plan.attach.append(PlannedAttach(address, None))
                continue
            if request.force and blocked_only_by_host_use(state):
                plan.attach.append(PlannedAttach(address, None, state.host_use))
                continue
            if state.allocation is not None:
                why = f'it is allocated to domain {state.allocation.domain_name}'
            elif state.spec is None:
                why = 'it is not in the whitelist'
            elif blocked_only_by_host_use(state):
                why = f'it is unavailable: {state.reason} ({FORCE_HINT})'
            else:
                why = f'it is unavailable: {state.reason}'
            raise Refused(f'addresses[{index}]: {address} cannot be attached: {why}')
    else:
        # A shortage names why the others are not free, and counts what the domain holds of each alias.
        held = {item.alias: [attachment.address for attachment in domain.of_alias(item.alias)] for item in additions}
        result = fit(additions, request.aliases, candidates(states, force=request.force),
                     numa_nodes=domain.numa_nodes, sockets=snapshot.numa_sockets,
                     held=held, others=states, host_use_hint=None if request.force else FORCE_HINT)
        if not result.ok:
            raise Refused('request: not enough free devices on this host: ' + '; '.join(result.problems))
        host_use = {address: state.host_use for address, state in states.items() if state.status != STATUS_AVAILABLE}
        for name, chosen in result.devices.items():
            plan.attach.extend(PlannedAttach(address, name, host_use.get(address, ())) for address in chosen)
    for planned in plan.attach:
        if planned.host_use:
            plan.warnings.append(f'{planned.address}: force: true attaches it although the host uses it: '
                                 + '; '.join(planned.host_use))
    _plan_interfaces(snapshot, domain, request, plan)
    return plan


def _plan_mdevs(snapshot: HostSnapshot, domain: DomainState, request: AttachmentRequest, wanted: list[AliasRequest], plan: Plan) -> None:
    """Mediated devices for mdev aliases: free existing mdevs of a matching pool first, then new ones where the parent can
    still create them; pools in parent-name and type order, so the same inputs choose the same."""
    whitelist = snapshot.whitelist
    pools, vgpus = [], {}
    if any(entry.is_mdev for entry in whitelist.entries):
        pools = mdev_pools(snapshot.mdev_parents, snapshot.mdevs, snapshot.domains, whitelist, snapshot.devices, marks=snapshot.marks)
        vgpus = snapshot.vgpus
        pools += vgpu_pools(vgpus, snapshot.devices, snapshot.allocations, whitelist, marks=snapshot.marks)
    types = {(parent.name, t.type_id): t for parent in snapshot.mdev_parents for t in parent.types}
    types.update({(pool['parent_addr'], pool['mdev_type']): MdevType(pool['mdev_type'], pool['mdev_name'], None, 'vfio-pci', None)
                  for pool in pools if pool['dev_type'] == DEV_TYPE_VGPU})
    # what each pool can still give: (existing free mdevs or free vGPU VFs, mdevs it can still create)
    left = {(pool['parent_addr'], pool['mdev_type']): (list(pool['free_mdevs'] or pool['free_addresses']),
                                                       pool['count'] - len(pool['free_mdevs'] or pool['free_addresses']))
            for pool in pools}
    used_vfs: set[str] = set()     # a free vGPU VF counts in the pool of every type it can take: give it once
    problems = []
    for item in wanted:
        alias = request.aliases[item.alias]
        matching = []
        for pool in sorted(pools, key=lambda p: (p['parent_addr'], p['mdev_type'])):
            device = snapshot.devices.get(PciAddress.parse(pool['parent_addr'])) if pool['vendor_id'] is not None else None
            mdev_type = types.get((pool['parent_addr'], pool['mdev_type']))
            if mdev_type is not None and alias.matches_mdev(mdev_type, device, pool['tags']):
                matching.append(pool)
        free = sum(len([x for x in left[(p['parent_addr'], p['mdev_type'])][0] if x not in used_vfs])
                   + left[(p['parent_addr'], p['mdev_type'])][1] for p in matching)
        if free < item.count:
            held = len(domain.of_alias(item.alias))
            holds = f', the domain holds {held}' if held else ''
            if not matching:
                why = ': no whitelisted mdev type of this host matches it (device_spec mdev_types)'
            else:
                why = ': ' + ', '.join(f'{p["mdev_type"]} on {p["parent_addr"]}: {p["count"]} free'
                                       + (f' ({p["allocated"]} held by domains)' if p['allocated'] else '') for p in matching)
            problems.append(f'{item.alias}: {item.count + held} requested{holds}, {free} {"more " if held else ""}free{why}')
            continue
        chosen = []
        for pool in matching:
            key = (pool['parent_addr'], pool['mdev_type'])
            existing, room = left[key]
            if pool['dev_type'] == DEV_TYPE_VGPU:
                for vf in existing:
                    if len(chosen) < item.count and vf not in used_vfs:
                        used_vfs.add(vf)
                        was = vgpus[PciAddress.parse(vf)].current
                        chosen.append(PlannedAttach(PciAddress.parse(vf), item.alias, vgpu={'type': int(key[1]), 'was': was}))
                continue
            while existing and len(chosen) < item.count:
                chosen.append(PlannedAttach(None, item.alias, mdev={'uuid': existing.pop(0), 'parent': key[0], 'type': key[1],
                                                                    'created': False}))
            while room > 0 and len(chosen) < item.count:
                chosen.append(PlannedAttach(None, item.alias, mdev={'uuid': None, 'parent': key[0], 'type': key[1], 'created': True}))
                room -= 1
            left[key] = (existing, room)
        plan.attach.extend(chosen)
    if problems:
        raise Refused('request: not enough free devices on this host: ' + '; '.join(problems))


def _plan_mdev_removals(snapshot: HostSnapshot, domain: DomainState, plan: Plan) -> None:
    """A stale record's mdev that this collection created goes, unless a domain holds it by now."""
    created = [record['mdev']['uuid'] for record in domain.stale_records if (record.get('mdev') or {}).get('created')]
    if not (created or any(record.get('vgpu') for record in domain.stale_records)) or snapshot.domains is None:
        return
    held = {item.uuid for info in snapshot.domains for item in info.mdevs_live + info.mdevs_config}
    existing = {item.uuid for item in snapshot.mdevs}
    plan.remove_mdevs.extend(record['mdev'] for record in domain.stale_records if (record.get('mdev') or {}).get('created')
                             and record['mdev']['uuid'] in existing and record['mdev']['uuid'] not in held)
    for record in domain.stale_records:
        if not record.get('vgpu') or not record.get('address'):
            continue
        try:
            address = PciAddress.parse(record['address'])
        except PciAddressError:
            continue
        if address not in (snapshot.allocations or {}):
            plan.reset_vgpus.append((address, record['vgpu']['was'] or 0))


def _plan_restores(plan: Plan, domain: DomainState, states: Mapping[PciAddress, Any]) -> None:
    """A stale record's VF settings go back, unless its VF is in a domain by now (then they are that domain's)."""
    for record in domain.stale_records:
        interface = record.get('interface') or {}
        if not interface.get('was') or interface.get('pf') is None or interface.get('vf') is None:
            continue
        try:
            address = PciAddress.parse(record['address'])
        except PciAddressError:
            continue
        state = states.get(address)
        if state is not None and state.allocation is None:
            plan.restore.append(VfRestore(interface['pf'], interface['vf'], dict(interface['was'])))


def _interface_options(request: AttachmentRequest, alias: str | None) -> InterfaceOptions | None:
    """The interface options of a device of ``alias`` (None: by address): the alias's, with the run's on top."""
    defined = request.aliases[alias].interface if alias is not None and alias in request.aliases else None
    if defined is None:
        return request.interface
    return defined.merged(request.interface)


def _plan_interfaces(snapshot: HostSnapshot, domain: DomainState, request: AttachmentRequest, plan: Plan) -> None:
    """Give each planned NIC VF its interface record (MAC, VLAN, the PF settings and what they were), or refuse."""
    options = [(planned, _interface_options(request, planned.alias)) for planned in plan.attach
               if planned.mdev is None and planned.vgpu is None]
    if not any(opts is not None for _planned, opts in options):
        return
    macs = _listed_macs(domain, request)
    for planned, opts in options:
        if opts is None:
            continue
        field_name = 'interface' if request.interface is not None and (planned.alias is None or
                                                                       request.aliases[planned.alias].interface is None) \
            else f'aliases: alias {planned.alias!r} (interface)'
        device = snapshot.devices.get(planned.address)
        if device is None or device.physfn is None or not device.class_id.startswith('02'):
            kind = f'class {device.class_id[:4]}' if device is not None else 'not on this host'
            what = 'a VF' if device is not None and device.physfn is not None else 'not a VF'
            raise Refused(f'{field_name}: {planned.address} ({kind}, {what}) cannot be given as a network interface: '
                          'only VFs of network controllers (class 02xx) can')
        nic, index, config = snapshot.vf_of(device)
        settings = opts.vf_settings()
        if settings:
            named = ', '.join(sorted(settings))
            if nic is None or index is None:
                raise Refused(f'{field_name}: {named} of {planned.address} are set on its PF {device.physfn}, '
                              f'which has no network interface (is it bound to a network driver?)')
            unknown = [key for key in sorted(settings) if config is None or getattr(config, key) is None]
            if unknown:
                raise Refused(f'{field_name}: {named} of {planned.address} are set on its PF {nic.netdev}, but the VF\'s '
                              f'{", ".join(unknown)} cannot be read there (ip -json link show {nic.netdev}, VF {index}), '
                              'so they could not be put back after the detach')
        mac = None
        if isinstance(opts.mac, tuple):
            mac = macs.pop(0)
        planned.interface = {
            'mac': mac, 'vlan': opts.vlan, 'trust': opts.trust, 'spoofchk': opts.spoofchk, 'link_state': opts.link_state,
            'pf': nic.netdev if nic is not None else None, 'vf': index,
            'was': {key: getattr(config, key) for key in settings} if config is not None else {},
        }


def _listed_macs(domain: DomainState, request: AttachmentRequest) -> list[str]:
    """The run's listed MACs the domain does not hold yet, in order; refused when too few or taken by another interface."""
    listed = request.interface.mac if request.interface is not None and isinstance(request.interface.mac, tuple) else None
    if listed is None:
        return []
    wanted = len(request.addresses) if request.addresses is not None else sum(item.count for item in request.request or ())
    if len(listed) < wanted:
        raise Refused(f'interface.mac: {len(listed)} MAC address(es) for {wanted} device(s): give one per device')
    ours = {(item.interface or {}).get('mac') for item in domain.attachments}
    for index, mac in enumerate(listed):
        if mac in domain.macs and mac not in ours:
            raise Refused(f'interface.mac[{index}]: {mac} is already used by another interface of domain {domain.name!r} '
                          f'({domain.macs[mac]})')
    return [mac for mac in listed if mac not in ours]


def _plan_removal(domain: DomainState, request: AttachmentRequest, plan: Plan) -> None:
    if request.attachment_ids is not None:
        _pick(domain, plan, 'attachment_ids', request.attachment_ids, lambda item: item.attachment_id, '')
    elif request.addresses is not None:
        _pick(domain, plan, 'addresses', request.addresses, lambda item: item.address, ' by this collection')
    else:   # by alias: up to count devices of each, the most recent first
        for item in request.request or ():
            plan.detach.extend(domain.of_alias(item.alias)[::-1][:item.count])


def _pick(domain: DomainState, plan: Plan, field_name: str, wanted: list, key: Callable[[Attachment], Any], by: str) -> None:
    """Detach the attachments named in ``wanted`` (ids or addresses); one not on the domain is refused."""
    known = {key(item): item for item in domain.attachments}
    for index, value in enumerate(wanted):
        if value not in known:
            raise Refused(f'{field_name}[{index}]: {value} is not attached to domain {domain.name!r}{by}')
        if known[value] not in plan.detach:
            plan.detach.append(known[value])


# -- applying a plan ----------------------------------------------------------------------------------------

@dataclass
class Outcome:
    attached: list[Attachment] = field(default_factory=list)
    detached: list[Attachment] = field(default_factory=list)
    vf_set: list[Attachment] = field(default_factory=list)        # their VF settings set on the PF by this run
    vf_restored: list[Attachment] = field(default_factory=list)   # detached, their VF settings put back
    mdevs_created: list[Attachment] = field(default_factory=list)  # their mdev created by this run
    vgpus_set: list[Attachment] = field(default_factory=list)      # their vGPU VF's type set by this run
    vgpus_reset: list[Attachment] = field(default_factory=list)    # detached, their vGPU VF's type put back
    mdevs_removed: list[Attachment] = field(default_factory=list)  # detached, their mdev (this collection's) removed
    confirmed: dict[str, str] = field(default_factory=dict)    # attachment id -> how its removal was confirmed
    # Gone from the running domain, but its persistent detach failed: the rollback plugs it back in.
    half_detached: list[Attachment] = field(default_factory=list)
    stuck: list[tuple[Attachment, str]] = field(default_factory=list)   # not detached, and why
    problems: list[str] = field(default_factory=list)       # a drain: detached, but something was not given back


class Attacher:
    """Applies a plan to one domain (a ``DomainHandle``) with write-ahead records and rollback."""

    def __init__(self, dom: Any, domain: DomainState, live: bool, config: bool, timeout: float,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4()), net: Any = None, mdev: Any = None,
                 mdevctl_dir: str | None = None, atomic: bool = True) -> None:
        self.dom = dom
        self.atomic = atomic
        self.domain = domain
        self.live = live
        self.config = config
        self.timeout = timeout
        self.new_id = new_id
        self.net = net if net is not None else IpLink()    # sets a VF's trust, spoof checking, link state on its PF
        self.mdev = mdev if mdev is not None else MdevSysfs()  # creates and removes mediated devices
        self.mdevctl_dir = mdevctl_dir or None     # where mdevctl keeps definitions: a persistent mdev outlives a reboot
        self.outcome = Outcome()
        self._metadata_touched = False
        self._asked: dict[str, str | None] = {}

    def _new(self, planned: PlannedAttach, taken: set[str]) -> Attachment:
        item = Attachment(self.new_id(), planned.address, planned.alias, self.live, self.config)
        if planned.mdev is not None:       # a new mdev takes the attachment id as its UUID: one id for both
            item.mdev = dict(planned.mdev, uuid=planned.mdev['uuid'] or item.attachment_id)
        item.vgpu = planned.vgpu
        if planned.interface is not None:
            interface = dict(planned.interface)
            attempt = 0
            while interface['mac'] is None:     # auto: from the attachment id, so it is the same whenever it is attached
                mac = auto_mac(item.attachment_id, attempt)
                interface['mac'] = mac if mac not in taken else None
                attempt += 1
            taken.add(interface['mac'])
            item.interface = interface
        return item

    def apply(self, plan: Plan) -> Outcome:
        kept = [record for record in self.domain.records if record['id'] not in set(plan.drop_records)]
        taken = set(self.domain.macs) | {(item.interface or {}).get('mac') for item in plan.attach}
        planned = [self._new(item, taken) for item in plan.attach]
        try:
            for restore in plan.restore:
                self.net.set_vf(restore.pf, restore.vf, restore.settings)
            for stale in plan.remove_mdevs:
                self.mdev.remove(stale['uuid'])
                self._undefine(stale)
            for address, type_id in plan.reset_vgpus:
                self.mdev.set_vgpu_type(address, type_id)
            if planned:
                # Write-ahead: the intent is recorded before any device lands (or any VF setting changes).
                self._write(kept + [item.metadata() for item in planned])
            for item in planned:
                settings = _vf_settings(item)
                try:
                    if settings:
                        try:
                            self.net.set_vf(item.interface['pf'], item.interface['vf'], settings)
                        except PassthroughError:
                            if self._vf_changed(item):      # a driver may take some settings and refuse the next
                                self.outcome.vf_set.append(item)
                            raise
                        self.outcome.vf_set.append(item)
                    if item.mdev is not None and item.mdev['created']:
                        self.mdev.create(item.mdev['parent'], item.mdev['type'], item.mdev['uuid'])
                        self.outcome.mdevs_created.append(item)
                        if self.config:
                            self._define(item.mdev)
                    if item.vgpu is not None and item.vgpu['type'] != item.vgpu['was']:
                        self.outcome.vgpus_set.append(item)
                        self.mdev.set_vgpu_type(item.address, item.vgpu['type'])
                    self.dom.attach(item.xml(), self.live, self.config)
                except PassthroughError as exc:
                    raise ChangeFailed(f'{item.label} (alias {item.alias or "-"}): attach failed: {exc}') from None
                self.outcome.attached.append(item)
            if plan.detach:
                self._detach_all(plan.detach)
            gone = {item.attachment_id for item in self.outcome.detached}
            final = [record for record in kept + [item.metadata() for item in planned] if record['id'] not in gone]
            if plan.detach or (plan.drop_records and not planned):
                self._write(final)
        except PassthroughError as exc:
            raise ChangeFailed(f'{exc}; {self._rollback()}') from None
        return self.outcome

    def _vf_changed(self, item: Attachment) -> bool:
        """Whether the VF's settings differ from what they were (True when they cannot be read)."""
        nic = self.net.links().get(item.interface['pf'])
        config = nic.vfs.get(item.interface['vf']) if nic is not None and nic.vfs is not None else None
        if config is None:
            return True
        return any(getattr(config, key) != value for key, value in item.interface['was'].items())

    def _write(self, records: list[dict[str, str | None]]) -> None:
        self._metadata_touched = True
        self.dom.set_metadata(records, self.live, self.config)

    def _detach_all(self, items: list[Attachment]) -> None:
        """Detach every item: each live unplug is asked for first, then all are confirmed together (a guest releases
        them in parallel, so N devices take about the time of one), then each leaves the persistent definition and
        what it held (mdev, vGPU type, VF settings) is given back."""
        self.ask_unplugs(items)
        self.finish_detaches(items, time.monotonic() + self.timeout)

    def ask_unplugs(self, items: list[Attachment]) -> None:
        """Phase one: ask libvirt to unplug every item the running domain has (no waiting)."""
        self._asked: dict[str, str | None] = {}
        if not (self.live and self.domain.active):
            return
        self.dom.watch_removals()
        present = self.dom.live_aliases()
        for item in items:
            if item.live and item.libvirt_alias in present:
                try:
                    self.dom.detach(item.libvirt_alias, True, False)
                    self._asked[item.attachment_id] = None
                except PassthroughError as exc:
                    self._asked[item.attachment_id] = f'live detach failed: {exc}'

    def _confirm_live(self, item: Attachment, deadline: float) -> str | None:
        """Wait, up to ``deadline``, for the unplug asked for in phase one; None once it is gone (or was never live)."""
        if item.attachment_id not in self._asked:
            self.outcome.confirmed[item.attachment_id] = 'persistent configuration'
            return None
        if self._asked[item.attachment_id]:
            return self._asked[item.attachment_id]
        problem, confirmed = unplug_outcome(wait_removed(self.dom, item.libvirt_alias, max(0.0, deadline - time.monotonic())),
                                            self.timeout)
        if confirmed:
            self.outcome.confirmed[item.attachment_id] = confirmed
        return problem

    def finish_detaches(self, items: list[Attachment], deadline: float) -> None:
        """Phase two: confirm each unplug, take it out of the persistent definition, give back what it held.

        Atomic (the default): the first device that fails stops the run - the ones already out are put back by the
        rollback, and those that only left the running domain are plugged back in. Not atomic (a drain): a device that
        fails is reported in ``outcome.stuck`` and stays accounted for (attached, its record kept); the others go on.
        """
        # The domain state read under the lock says which of ours are in the persistent definition.
        in_config = {item.libvirt_alias for item in self.domain.attachments if item.config} if self.config else set()
        failed = []
        for item in items:
            problem = self._confirm_live(item, deadline)
            if problem is None and failed and self.atomic:
                # An earlier device failed: this one only leaves the running domain; the rollback plugs it back in.
                if self.outcome.confirmed.get(item.attachment_id) != 'persistent configuration':
                    self.outcome.half_detached.append(item)
                continue
            if problem is None and self.config and item.libvirt_alias in in_config:
                try:
                    self.dom.detach(item.libvirt_alias, False, True)
                except PassthroughError as exc:
                    if self.outcome.confirmed.get(item.attachment_id) != 'persistent configuration':
                        self.outcome.half_detached.append(item)
                    problem = f'persistent detach failed: {exc}'
            if problem:
                failed.append(f'{item.label} (attachment {item.attachment_id}): {problem}')
                self.outcome.stuck.append((item, problem))
                continue
            self.outcome.detached.append(item)
            try:
                self._give_back(item)
            except ChangeFailed as exc:
                if self.atomic:
                    raise
                self.outcome.problems.append(str(exc))
        if failed and self.atomic:
            raise ChangeFailed('; '.join(failed))

    def _give_back(self, item: Attachment) -> None:
        """After a confirmed detach: remove the mdev this collection created, put a vGPU type and VF settings back."""
        if (item.mdev or {}).get('created') and self._gone_everywhere(item):
            try:
                self.mdev.remove(item.mdev['uuid'])
            except PassthroughError as exc:
                raise ChangeFailed(f'{item.label} (attachment {item.attachment_id}): detached, but the mdev this collection '
                                   f'created for it was not removed: {exc}') from None
            self.outcome.mdevs_removed.append(item)
            self._undefine(item.mdev)
        if item.vgpu is not None and self._gone_everywhere(item):
            try:
                self.mdev.set_vgpu_type(item.address, item.vgpu['was'] or 0)
            except PassthroughError as exc:
                raise ChangeFailed(f'{item.label} (attachment {item.attachment_id}): detached, but its vGPU type was not '
                                   f'put back: {exc}') from None
            self.outcome.vgpus_reset.append(item)
        was = (item.interface or {}).get('was')
        if was and item.interface.get('pf') is not None and item.interface.get('vf') is not None:
            try:
                self.net.set_vf(item.interface['pf'], item.interface['vf'], was)
            except PassthroughError as exc:
                raise ChangeFailed(f'{item.address} (attachment {item.attachment_id}): detached, but its VF settings '
                                   f'were not put back: {exc}') from None
            self.outcome.vf_restored.append(item)

    def _definition(self, mdev: dict[str, Any]) -> str | None:
        """mdevctl's file for an mdev, ``<dir>/<parent>/<uuid>`` (parent and uuid checked when the record was read)."""
        if self.mdevctl_dir is None or '/' in mdev['parent'] or mdev['parent'] in ('.', '..'):
            return None
        return os.path.join(self.mdevctl_dir, mdev['parent'], mdev['uuid'])

    def _define(self, mdev: dict[str, Any]) -> None:
        """A persistent attachment's mdev gets an mdevctl definition started automatically: mdevctl creates it again
        when its parent appears after a reboot, before libvirt starts the domain."""
        path = self._definition(mdev)
        if path is not None:
            write_atomic('mdevctl_dir', path, json.dumps({'mdev_type': mdev['type'], 'start': 'auto', 'attrs': []}) + '\n',
                         mode=0o644, dir_mode=0o755)

    def _undefine(self, mdev: dict[str, Any]) -> None:
        path = self._definition(mdev)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ChangeFailed(f'mdevctl_dir: the definition {path} of mdev {mdev["uuid"]} cannot be removed: {exc.strerror}') from None

    def _gone_everywhere(self, item: Attachment) -> bool:
        """Whether this run took the attachment out of every definition that had it (a live-only detach of a device
        the persistent definition keeps leaves its mdev for the next start)."""
        return not (item.live and not self.live) and not (item.config and not self.config)

    def _remove(self, item: Attachment, in_config: set[str]) -> str | None:
        """Detach one device: live first (confirmed), then the persistent configuration. None when done."""
        if self.live and item.live and item.libvirt_alias in self.dom.live_aliases():
            try:
                self.dom.detach(item.libvirt_alias, True, False)
            except PassthroughError as exc:
                return f'live detach failed: {exc}'
            problem, confirmed = unplug_outcome(wait_removed(self.dom, item.libvirt_alias, self.timeout), self.timeout)
            if problem:
                return problem
            self.outcome.confirmed[item.attachment_id] = confirmed
        else:
            self.outcome.confirmed[item.attachment_id] = 'persistent configuration'
        if self.config and item.libvirt_alias in in_config:
            try:
                self.dom.detach(item.libvirt_alias, False, True)
            except PassthroughError as exc:
                if item.attachment_id in self.outcome.confirmed and self.outcome.confirmed[item.attachment_id] != 'persistent configuration':
                    self.outcome.half_detached.append(item)
                return f'persistent detach failed: {exc}'
        return None

    def _rollback(self) -> str:
        """Undo what this run did, newest first; the message's tail: what was undone, what was left."""
        left, undone = [], []
        # (device, live side, persistent side) to plug back in: what this run took away, as it was
        back = [(item, self.live and item.live, False) for item in self.outcome.half_detached]
        back += [(item, self.live and item.live, self.config and item.config) for item in reversed(self.outcome.detached)]
        for item, live, config in back:
            if not live and not config:
                continue
            try:
                if item in self.outcome.vf_restored:
                    self.net.set_vf(item.interface['pf'], item.interface['vf'], _vf_settings(item))
                if item in self.outcome.mdevs_removed:
                    self.mdev.create(item.mdev['parent'], item.mdev['type'], item.mdev['uuid'])
                    if config:
                        self._define(item.mdev)
                if item in self.outcome.vgpus_reset:
                    self.mdev.set_vgpu_type(item.address, item.vgpu['type'])
                self.dom.attach(item.xml(), live, config)
                undone.append(f're-attached {item.label}')
            except PassthroughError as exc:
                left.append(f'{item.label} stays detached ({exc})')
        stuck = set()
        for item in reversed(self.outcome.attached):
            try:
                problem = self._remove(item, {item.libvirt_alias} if self.config else set())
            except PassthroughError as exc:
                problem = str(exc)
            if problem:
                stuck.add(item.attachment_id)
                left.append(f'{item.label} stays attached ({problem})')
            else:
                undone.append(f'detached {item.label}')
        for item in reversed(self.outcome.vgpus_set):
            if item.attachment_id in stuck:
                continue
            try:
                self.mdev.set_vgpu_type(item.address, item.vgpu['was'] or 0)
                undone.append(f'vGPU type of {item.label} put back')
            except PassthroughError as exc:
                left.append(f'the vGPU type of {item.label} stays set ({exc})')
        for item in reversed(self.outcome.mdevs_created):
            if item.attachment_id in stuck:
                continue
            try:
                self.mdev.remove(item.mdev['uuid'])
                self._undefine(item.mdev)
                undone.append(f'removed {item.label}')
            except PassthroughError as exc:
                left.append(f'{item.label} stays created ({exc})')
        for item in reversed(self.outcome.vf_set):
            if item.attachment_id in stuck:
                continue        # still in the guest: its settings stay with it
            try:
                self.net.set_vf(item.interface['pf'], item.interface['vf'], item.interface['was'])
                undone.append(f'VF settings of {item.address} put back')
            except PassthroughError as exc:
                left.append(f'VF settings of {item.address} stay changed ({exc})')
        if self._metadata_touched:
            try:
                self.dom.set_metadata(self.domain.records, self.live, self.config)
            except PassthroughError as exc:
                left.append(f'the metadata was not written back ({exc}); the next run drops records without a device')
        attached = len(self.outcome.attached)
        detached = len(self.outcome.detached)
        if not left:
            if detached:
                return (f'rolled back the {attached} device(s) this run attached and the {detached} it detached; '
                        'nothing was left behind')
            return f'rolled back the {attached} device(s) this run attached; nothing was left behind'
        return ('rollback FAILED, left: ' + '; '.join(left)
                + (f' (undone: {", ".join(undone)})' if undone else '')
                + '; every device this run attached is recorded in the domain\'s metadata, so the next run accounts for it')


def _vf_settings(item: Attachment) -> dict[str, Any]:
    """What an interface attachment sets on its PF for its VF (trust, spoofchk, link_state given), {} for others."""
    interface = item.interface or {}
    if interface.get('pf') is None or interface.get('vf') is None:
        return {}
    return {key: interface[key] for key in ('trust', 'spoofchk', 'link_state') if interface.get(key) is not None}


def device_line(item: Mapping[str, Any]) -> str:
    """A domain's device in one line for diff mode: address (or mdev UUID), kind, alias, attachment, and an interface's MAC
    and VLAN."""
    if 'mdev_uuid' in item:
        return f"mdev {item['mdev_uuid'] or '(new)'} alias={item.get('alias') or '-'} attachment={item.get('attachment_id') or '-'}"
    line = f"{item['address']} {'interface' if item.get('interface') else 'hostdev'} alias={item.get('alias') or '-'} " \
           f"attachment={item.get('attachment_id') or '-'}"
    if item.get('interface'):
        line += f" mac={item.get('mac_address') or 'auto'} vlan={item.get('vlan') or '-'}"
    return line


def wait_removed(dom: Any, alias: str, timeout: float) -> str:
    """'event', 'failed', 'absent' (gone from the live XML, no event within EVENT_GRACE s) or 'timeout'.

    The event is the confirmation; the live XML is checked too, in case the event is lost (a
    connection without an event loop, a libvirt that does not send it).
    """
    deadline = time.monotonic() + timeout
    gone_at = None
    while True:
        state = dom.removal_outcome(alias)
        if state == 'removed':
            return 'event'
        if state == 'failed':
            return 'failed'
        now = time.monotonic()
        if gone_at is None and alias not in dom.live_aliases():
            gone_at = now
        if gone_at is not None and now - gone_at >= EVENT_GRACE:
            return 'absent'
        if now >= deadline:
            return 'absent' if gone_at is not None else 'timeout'
        dom.wait_event(0.25)


def unplug_outcome(outcome: str, timeout: float) -> tuple[str | None, str | None]:
    """What ``wait_removed``'s outcome means: (why the device is still attached, None) or (None, what confirmed it)."""
    if outcome == 'failed':
        return 'the guest refused the unplug (device-removal-failed); still attached', None
    if outcome == 'timeout':
        return f'still attached: the guest did not release it within {timeout:g} s', None
    return None, 'device-removed event' if outcome == 'event' else 'gone from the live XML'


# -- one run of pci_attachment -------------------------------------------------------------------------------

def run_flags(domain: DomainState, live: bool | None, persistent: bool | None) -> tuple[bool, bool]:
    """The run's targets: ``live`` and ``persistent`` default to what the domain has."""
    live = domain.active if live is None else live
    config = domain.persistent if persistent is None else persistent
    if live and not domain.active:
        raise Refused(f'live: true, but domain {domain.name!r} is shut off')
    if config and not domain.persistent:
        raise Refused(f'persistent: true, but domain {domain.name!r} is transient (it has no persistent configuration)')
    if not live and not config:
        raise Refused(f'live and persistent are both false for domain {domain.name!r}: nothing would change')
    return live, config


class AttachmentRun:
    """One run of pci_attachment: ``run()`` returns the module's result.

    ``open_domain`` opens the domain (a ``DomainHandle`` by default); tests pass a subclass that fails
    a chosen libvirt call, since a real daemon cannot be made to fail on demand.
    """

    def __init__(self, params: dict[str, Any], request: AttachmentRequest, check_mode: bool,
                 open_domain: Callable[[Libvirt, str], Any] = DomainHandle, mdev_sysfs: Callable[[str], Any] = MdevSysfs) -> None:
        self.params = params
        self.request = request
        self.check_mode = check_mode
        self.open_domain = open_domain
        self.mdev_sysfs = mdev_sysfs       # tests pass a kernel double: no mdev driver runs on the test machines

    def run(self) -> dict[str, Any]:
        params = self.params
        query = self.request.state == 'query'
        if not query and not self.check_mode:
            EventLoop.start()
        conn = Libvirt(params['uri'], read_only=query or self.check_mode)
        try:
            dom = self.open_domain(conn, params['domain'])
            if query:
                snapshot = self._snapshot(conn)
                domain = read_domain_state(dom)
                return self._result(snapshot, domain, reconciliation(domain), Outcome(), changed=False)
            with HostLock(params['config_path'], check_mode=self.check_mode):
                snapshot = self._snapshot(conn)      # under the lock: the whitelist and allocations no other run is changing
                domain = read_domain_state(dom)
                live, config = run_flags(domain, params.get('live'), params.get('persistent'))
                plan = plan_attachment(snapshot, domain, self.request)
                if self.check_mode or not plan.changes:
                    return self._with_diff(self._result(snapshot, domain, plan, None, changed=plan.changes), domain, plan)
                outcome = Attacher(dom, domain, live, config, float(params.get('timeout') or 30),
                                   mdev=self.mdev_sysfs(params['sysfs_root']), mdevctl_dir=params.get('mdevctl_dir')).apply(plan)
                try:
                    return self._with_diff(self._result(snapshot, read_domain_state(dom), plan, outcome, changed=True), domain, plan)
                except PassthroughError as exc:
                    done = [f'attached {item.label}' for item in outcome.attached] + \
                        [f'detached {item.label}' for item in outcome.detached]
                    raise ChangeFailed(f'the run did what it planned ({", ".join(done) or "dropped stale records"}), '
                                       f'but reading the domain back failed: {exc}; the next run reports it as it is') from None
        finally:
            conn.close()

    def _snapshot(self, conn: Libvirt) -> HostSnapshot:
        params = self.params
        return HostSnapshot.read(params['sysfs_root'], params['uri'], params.get('device_spec'), params['config_path'], conn=conn)

    def _with_diff(self, result: dict[str, Any], before: DomainState, plan: Plan) -> dict[str, Any]:
        """With diff mode: the domain's PCI devices before and after, one line each (after: predicted in check mode)."""
        if self.params.get('_diff'):
            removed = {item.attachment_id for item in plan.detach}
            after = [device_line(item) for item in result['pci_devices']] if not self.check_mode else \
                [device_line(item) for item in self._before_devices(before) if item['attachment_id'] not in removed or
                 item['attachment_id'] is None] + \
                [device_line(dict(item, attachment_id='(new)')) for item in result['attached']]
            result['diff'] = {'before': {'pci_devices': sorted(device_line(item) for item in self._before_devices(before))},
                              'after': {'pci_devices': sorted(after)}}
        return result

    @staticmethod
    def _before_devices(domain: DomainState) -> list[dict[str, Any]]:
        aliases = {item.attachment_id: item.alias for item in domain.attachments}
        return [{'address': str(h.address), 'attachment_id': h.attachment_id, 'alias': aliases.get(h.attachment_id),
                 'interface': h.kind == 'interface', 'mac_address': h.mac, 'vlan': h.vlan} for h in domain.hostdevs] + \
            [{'address': None, 'attachment_id': m.attachment_id, 'alias': aliases.get(m.attachment_id), 'mdev_uuid': m.uuid}
             for m in domain.mdevs]

    @staticmethod
    def _result(snapshot: HostSnapshot, domain: DomainState, plan: Plan, outcome: Outcome | None,
                changed: bool) -> dict[str, Any]:
        aliases = {item.attachment_id: item.alias for item in domain.attachments}
        if outcome is not None:
            snapshot.refresh_nics()       # this run may have changed VF settings

        def vf_config(device: Any) -> Any:
            if device is None or device.physfn is None or not device.class_id.startswith('02'):
                return None
            return snapshot.vf_of(device)[2]

        devices = []
        for h in domain.hostdevs:
            device = snapshot.device(h.address)
            devices.append(server_device(domain.uuid, h.address, h.attachment_id, h.inner_address, device,
                                         alias=aliases.get(h.attachment_id) if h.attachment_id else None,
                                         hostdev=h, vf_config=vf_config(device)))
        recorded = {item.attachment_id: item.mdev for item in domain.attachments if item.mdev is not None}
        known = {mdev.uuid: mdev for mdev in snapshot.mdevs} if domain.mdevs else {}
        for m in domain.mdevs:
            found = known.get(m.uuid)
            mdev = recorded.get(m.attachment_id) or {'uuid': m.uuid}
            devices.append(server_mdev(domain.uuid, m, aliases.get(m.attachment_id) if m.attachment_id else None,
                                       mdev.get('type') or (found.type_id if found else None),
                                       mdev.get('parent') or (found.parent if found else None)))
        if outcome is None:       # check mode, or nothing to do
            attached = [item.record() for item in plan.attach]
            detached = [item.record() for item in plan.detach]
        else:
            attached = [item.record() for item in outcome.attached]
            detached = [dict(item.record(), confirmed_by=outcome.confirmed.get(item.attachment_id)) for item in outcome.detached]
        return {'changed': changed, 'domain': {'name': domain.name, 'uuid': domain.uuid}, 'pci_devices': devices,
                'attached': attached, 'detached': detached,
                'orphans': [{'attachment_id': item.attachment_id, 'address': str(item.address) if item.address else None,
                             **({'mdev_uuid': item.mdev['uuid']} if item.mdev else {})} for item in domain.orphans],
                'stale_records': list(plan.drop_records), 'warnings': list(plan.warnings)}


# -- drain and restore (state=drained / state=restored) -----------------------------------------------------

def request_text(counts: Mapping[str, int]) -> str:
    """A request in the module's grammar: ``"a1:2,b1:1"`` (aliases in name order)."""
    return ','.join(f'{alias}:{count}' for alias, count in sorted(counts.items()))


def check_timeout(timeout: Any) -> float:
    """The seconds a drain waits for the guests to release their devices."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise Refused(f'timeout: {timeout!r} must be a number of seconds above 0 and at most 3600')
    return float(timeout)


@dataclass
class Foreign:
    """Another tool's PCI device (``<hostdev type='pci'>``) in a domain: a drain with force takes it out too."""

    address: PciAddress
    alias: str | None = None     # its alias in the live definition, which libvirt gives every running device
    live: bool = False
    config: bool = False
    asked: str | None = None     # '' once its live unplug was asked for; else why it could not be
    confirmed_by: str | None = None

    def record(self) -> dict[str, Any]:
        return {'attachment_id': None, 'address': str(self.address), 'alias': None, 'foreign': True, 'live': self.live,
                'persistent': self.config, **({'confirmed_by': self.confirmed_by} if self.confirmed_by else {})}

    def ask_unplug(self, dom: Any, domain: DomainState) -> None:
        if not (self.live and domain.active):
            return
        if not self.alias:
            self.asked = 'it has no alias in the live definition to unplug it by; still attached'
            return
        try:
            dom.detach(self.alias, True, False)
            self.asked = ''
        except PassthroughError as exc:
            self.asked = f'live detach failed: {exc}; still attached'

    def finish(self, dom: Any, deadline: float, timeout: float) -> str | None:
        """Confirm its live unplug, then take it out of the persistent definition: None once it is out, else why not."""
        if self.live:
            if self.asked:
                return self.asked
            problem, self.confirmed_by = unplug_outcome(wait_removed(dom, self.alias, max(0.0, deadline - time.monotonic())), timeout)
            if problem:
                return problem
        if self.config:
            try:
                dom.detach_xml(hostdev_source_xml(self.address), False, True)
            except PassthroughError as exc:
                gone = 'out of the running domain, but ' if self.live else ''
                return f'{gone}still in the persistent definition: {exc}'
            self.confirmed_by = self.confirmed_by or 'persistent configuration'
        return None


def foreign_hostdevs(domain: DomainState, warnings: list[str], only: set[str] | None = None) -> list[Foreign]:
    """The domain's PCI devices that are not this collection's, live and persistent (as read with the domain's state);
    another tool's network interface (``<interface type='hostdev'>``) or mediated device is named in a warning and left
    alone."""
    found = []
    for hostdev in domain.hostdevs:            # the live definition's first: their alias is the live one
        if hostdev.attachment_id is not None or (only is not None and str(hostdev.address) not in only):
            continue
        if hostdev.kind != 'hostdev':
            warnings.append(f'{domain.name}: {hostdev.address} is a network interface of another tool (<interface type=\'hostdev\'>), '
                            'not drained: force takes other tools\' PCI devices (<hostdev type=\'pci\'>) only')
            continue
        live = hostdev.address in domain.in_live
        found.append(Foreign(hostdev.address, hostdev.alias if live else None, live, hostdev.address in domain.in_config))
    if only is None:
        for mdev in domain.mdevs:
            if mdev.attachment_id is None:
                warnings.append(f'{domain.name}: mdev {mdev.uuid} is a mediated device of another tool, not drained: force '
                                'takes other tools\' PCI devices (<hostdev type=\'pci\'>) only')
    return found


class DrainRun:
    """pci_attachment with state=drained or restored, over every domain of the host (or ``domain``).

    A drain takes every attachment of this collection out of each domain - live and from the persistent definition,
    as the domain has them - asking for every unplug of every domain first and then confirming them together by
    their device-removed events, so that the guests release their devices together. What each domain held (its
    aliases and counts, and devices attached by address) is written to the host's state file before the first unplug,
    rewritten with what was drained, and returned, so that a restore re-attaches the same - on this host, or on another
    one given the returned records. A device a guest does not release within ``timeout`` is reported and stays
    attached and recorded: nothing is left unaccounted for.

    A restore plans every domain first (nothing changes when one cannot be met), then attaches domain by domain;
    if one fails, what the earlier ones got is detached again.
    """

    def __init__(self, params: dict[str, Any], check_mode: bool, open_domain: Callable[[Libvirt, str], Any] = DomainHandle,
                 mdev_sysfs: Callable[[str], Any] = MdevSysfs, only: set[str] | None = None) -> None:
        self.params = params
        self.check_mode = check_mode
        self.open_domain = open_domain
        self.mdev_sysfs = mdev_sysfs
        self.only = only        # drain only these PCI addresses and mdev UUIDs (pci_whitelist's drain marks)

    def run(self) -> dict[str, Any]:
        params = self.params
        for key in ('request', 'addresses', 'attachment_ids', 'interface', 'live', 'persistent'):
            if params.get(key) is not None:
                raise Refused(f'{key}: not with state={params["state"]} (a drain takes every attachment of this collection, '
                              'live and persistent as each domain has them; a restore gives back what the drain recorded)')
        if params.get('drained') is not None and params['state'] != 'restored':
            raise Refused('drained: only with state=restored (the records a drain returned, to restore on this host)')
        timeout = check_timeout(params.get('timeout', 30))
        if not self.check_mode:
            EventLoop.start()
        conn = Libvirt(params['uri'], read_only=self.check_mode)
        try:
            with HostLock(params['config_path'], check_mode=self.check_mode):
                state = load_state(params['config_path'])
                if params['state'] == 'drained':
                    return self._drain(conn, state, timeout)
                return self._restore(conn, state, timeout)
        finally:
            conn.close()

    # -- drain --------------------------------------------------------------------------------------------
    def _targets(self, conn: Libvirt, warnings: list[str]) -> list[tuple[Any, DomainState, list[Attachment], list[Foreign]]]:
        names = [self.params['domain']] if self.params.get('domain') else [info.uuid for info in conn.domains()]
        found = []
        for name in names:
            dom = self.open_domain(conn, name)
            domain = read_domain_state(dom)
            items = [item for item in domain.attachments if self.only is None or str(item.address) in self.only
                     or (item.mdev is not None and item.mdev['uuid'] in self.only)]
            foreign = foreign_hostdevs(domain, warnings, self.only) if self.params.get('force') else []
            if items or foreign:
                found.append((dom, domain, items, foreign))
        return found

    def _drain(self, conn: Libvirt, state: dict[str, Any], timeout: float) -> dict[str, Any]:
        warnings: list[str] = []
        targets = self._targets(conn, warnings)
        if self.check_mode or not targets:
            drained = [self._drained_record(domain, items, foreign=[f.record() for f in foreign]) for _dom, domain, items, foreign in targets]
            return {'changed': bool(targets), 'drained': drained, 'stuck': [], 'seconds': 0.0, 'warnings': warnings}
        # Written ahead: what every domain holds is on record before the first unplug, so that a run that dies half-way
        # (killed, the connection lost) leaves nothing unaccounted for. A restore gives back only what a domain no
        # longer holds; the records are rewritten below with what was really drained.
        kept_before = copy.deepcopy(state.get('drained') or {})
        for _dom, domain, items, foreign in targets:
            self._keep(state, self._drained_record(domain, items, foreign=[f.record() for f in foreign]))
        save_state(self.params['config_path'], state)
        mdev = self.mdev_sysfs(self.params['sysfs_root'])
        attachers = [(Attacher(dom, domain, domain.active, domain.persistent, timeout, mdev=mdev,
                               mdevctl_dir=self.params.get('mdevctl_dir'), atomic=False), items, foreign)
                     for dom, domain, items, foreign in targets]
        started = time.monotonic()

        # Every unplug of every domain asked for first, the domains side by side: libvirt runs one job at a time per
        # domain, so one thread per domain lets the guests of all domains release their devices together.
        def ask(attacher: Attacher, items: list[Attachment], foreign: list[Foreign]) -> None:
            attacher.ask_unplugs(items)
            for device in foreign:
                device.ask_unplug(attacher.dom, attacher.domain)

        with ThreadPoolExecutor(max_workers=min(16, len(attachers))) as pool:
            asked = [pool.submit(ask, attacher, items, foreign) for attacher, items, foreign in attachers]
        deadline = time.monotonic() + timeout
        drained, stuck, problems = [], [], warnings
        for (attacher, items, foreign), future in zip(attachers, asked):
            domain, outcome = attacher.domain, attacher.outcome
            released: list[dict[str, Any]] = []
            try:
                future.result()        # a domain libvirt could not be asked about: reported, the others go on
                attacher.finish_detaches(items, deadline)
                for device in foreign:
                    why = device.finish(attacher.dom, deadline, timeout)
                    if why:
                        stuck.append({'domain': domain.name, 'uuid': domain.uuid, 'attachment_id': None,
                                      'label': f'{device.address} (another tool\'s)', 'reason': why})
                    else:
                        released.append(device.record())
            except PassthroughError as exc:
                problems.append(f'{domain.name}: {exc}')
            gone = {item.attachment_id for item in outcome.detached}
            if gone:
                try:
                    attacher._write([record for record in domain.records if record['id'] not in gone])   # pylint: disable=protected-access
                except PassthroughError as exc:
                    problems.append(f'{domain.name}: the metadata was not rewritten ({exc}); the next run drops the records '
                                    'of devices that are gone')
            stuck += [{'domain': domain.name, 'uuid': domain.uuid, 'attachment_id': item.attachment_id, 'label': item.label,
                       'reason': why} for item, why in outcome.stuck]
            problems += [f'{domain.name}: {text}' for text in outcome.problems]
            if outcome.detached or released:
                drained.append(self._drained_record(domain, outcome.detached, outcome.confirmed, foreign=released))
        seconds = round(time.monotonic() - started, 3)
        state['drained'] = kept_before
        for record in drained:
            self._keep(state, record)
        save_state(self.params['config_path'], state)
        result = {'changed': bool(drained), 'drained': drained, 'stuck': stuck, 'seconds': seconds, 'warnings': problems}
        if stuck:
            result['failed'] = True
            left = '; '.join(f'{s["domain"]}: {s["label"]}' + (f' (attachment {s["attachment_id"]})' if s['attachment_id'] else '')
                             + f': {s["reason"]}' for s in stuck)
            result['msg'] = f'drain incomplete: {left}; {sum(len(r["devices"]) for r in drained)} other device(s) drained and recorded'
        return result

    @staticmethod
    def _drained_record(domain: DomainState, items: list[Attachment], confirmed: Mapping[str, str] | None = None,
                        foreign: list[dict[str, Any]] | tuple = ()) -> dict[str, Any]:
        return DrainRun._summarised({'domain': domain.name, 'uuid': domain.uuid}, [
            dict(item.record(), live=item.live, persistent=item.config,
                 **({'confirmed_by': confirmed.get(item.attachment_id)} if confirmed else {})) for item in items] + list(foreign))

    @staticmethod
    def _summarised(record: Mapping[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
        """The record over these devices: each alias's count, the devices taken by address."""
        counts: dict[str, int] = {}
        for device in devices:
            if device.get('alias'):
                counts[device['alias']] = counts.get(device['alias'], 0) + 1
        return dict(record, aliases=counts, request=request_text(counts) or None, devices=devices,
                    addresses=[device['address'] for device in devices if not device.get('alias') and device.get('address')])

    @staticmethod
    def _keep(state: dict[str, Any], record: dict[str, Any]) -> None:
        """Add the record to the state file's ``drained``: a domain drained twice adds up, each device once (the
        record of a drain that died before an unplug names a device the next drain takes again)."""
        kept = state.setdefault('drained', {})
        old = kept.get(record['uuid'])
        if old:
            keys = {DrainRun._device_key(device) for device in record['devices']}
            earlier = [device for device in old.get('devices') or [] if isinstance(device, Mapping) and DrainRun._device_key(device) not in keys]
            record = DrainRun._summarised(record, earlier + record['devices'])
        kept[record['uuid']] = {key: record[key] for key in ('domain', 'uuid', 'aliases', 'request', 'addresses', 'devices')}

    @staticmethod
    def _device_key(device: Mapping[str, Any]) -> Any:
        """A recorded device: this collection's by its attachment id, another tool's (drained with force) by address."""
        return device.get('attachment_id') or ('address', device.get('address'))

    @staticmethod
    def _not_held(record: Mapping[str, Any], domain: DomainState) -> Mapping[str, Any]:
        """The record less the devices the domain still holds: a drain that died before their unplug wrote them ahead,
        and there is nothing to give back for them."""
        devices = [device for device in record.get('devices') or [] if isinstance(device, Mapping)]
        held = {item.attachment_id for item in domain.attachments} | {('address', str(h.address)) for h in domain.hostdevs}
        left = [device for device in devices if DrainRun._device_key(device) not in held]
        return record if len(left) == len(devices) else DrainRun._summarised(record, left)

    # -- restore ------------------------------------------------------------------------------------------
    def _records(self, state: Mapping[str, Any]) -> list[dict[str, Any]]:
        given = self.params.get('drained')
        records = list(given) if given is not None else list((state.get('drained') or {}).values())
        wanted = (self.params.get('domain') or '').strip()
        for index, record in enumerate(records):
            if not isinstance(record, Mapping) or not isinstance(record.get('aliases', {}), Mapping) \
                    or not (record.get('uuid') or record.get('domain')):
                raise Refused(f'drained[{index}]: {record!r} is not a record of a drain (domain, uuid, aliases, addresses)')
        if wanted:
            records = [record for record in records if wanted in (record.get('domain'), record.get('uuid'))]
            if not records:
                raise Refused(f'domain: {wanted!r} has no drain record on this host')
        return records

    def _restore(self, conn: Libvirt, state: dict[str, Any], timeout: float) -> dict[str, Any]:
        params = self.params
        records = self._records(state)
        if not records:
            return {'changed': False, 'restored': [], 'warnings': []}
        # Plan every domain before any change: one that cannot be met refuses the whole restore.
        plans = []
        snapshot = HostSnapshot.read(params['sysfs_root'], params['uri'], params.get('device_spec'), params['config_path'], conn=conn)
        for index, record in enumerate(records):
            dom = self.open_domain(conn, record.get('uuid') or record['domain'])
            domain = read_domain_state(dom)
            record = self._not_held(record, domain)
            for options in self._options(record, domain, index):      # by alias, then by address
                try:
                    plan = plan_attachment(snapshot, domain, options)
                except Refused as exc:
                    raise Refused(f'restore of {domain.name}: {exc}; nothing was attached') from None
                plans.append((record, dom, domain, options, plan))
        # Devices given by address first, in every domain: an alias takes whatever is free, so it must not take the
        # device another domain had by address before that domain gets it back.
        plans.sort(key=lambda planned: 0 if planned[3].addresses else 1)
        if self.check_mode:
            return {'changed': True, 'warnings': [],        # at least the records would be dropped
                    'restored': [{'domain': domain.name, 'uuid': domain.uuid, 'request': record.get('request'),
                                  'attached': [item.record() for item in plan.attach]} for record, _dom, domain, _options, plan in plans]}
        done: list[tuple[Any, DomainState, Outcome, bool, bool]] = []
        restored = []
        for record, dom, domain, options, _plan in plans:
            try:
                snapshot.refresh_domains()        # the earlier domains took devices: libvirt says which (sysfs is as read)
                domain = read_domain_state(dom)
                plan = plan_attachment(snapshot, domain, options)
                live, config = self._flags(record, domain)
                outcome = Attacher(dom, domain, live, config, timeout, mdev=self.mdev_sysfs(params['sysfs_root']),
                                   mdevctl_dir=params.get('mdevctl_dir')).apply(plan)
            except PassthroughError as exc:
                raise ChangeFailed(f'restore of {domain.name}: {exc}; {self._undo(done, timeout)}') from None
            done.append((dom, domain, outcome, live, config))
            entry = next((e for e in restored if e['uuid'] == domain.uuid), None)
            if entry is None:
                restored.append({'domain': domain.name, 'uuid': domain.uuid, 'request': record.get('request'),
                                 'attached': [item.record() for item in outcome.attached]})
            else:
                entry['attached'] += [item.record() for item in outcome.attached]
        kept = state.get('drained') or {}
        for record in records:
            kept.pop(record.get('uuid'), None)
        state['drained'] = kept
        save_state(params['config_path'], state)
        return {'changed': True, 'restored': restored, 'warnings': []}        # the records are dropped at least

    @staticmethod
    def _flags(record: Mapping[str, Any], domain: DomainState) -> tuple[bool, bool]:
        """Where to restore: as the drained devices were (live, persistent), as far as the domain allows now; a domain
        that no longer runs gets live-only devices in its definition, for its next start."""
        devices = [d for d in record.get('devices') or [] if isinstance(d, Mapping)]
        live = domain.active and (any(d.get('live') for d in devices) if devices else True)
        config = domain.persistent and (any(d.get('persistent') for d in devices) if devices else True)
        if not live and not config:
            live, config = domain.active and not domain.persistent, domain.persistent
        return run_flags(domain, live, config)

    def _options(self, record: Mapping[str, Any], domain: DomainState, index: int) -> list[AttachmentRequest]:
        """The present requests that give the domain back what it held: each alias's count on top of what it holds now,
        then the devices it had by address."""
        counts = {alias: len(domain.of_alias(alias)) + int(count) for alias, count in (record.get('aliases') or {}).items()}
        addresses = list(dict.fromkeys(record.get('addresses') or []))
        requests = []
        base = dict(self.params, state='present', interface=None, attachment_ids=None, request=None, addresses=None)
        if counts:
            if not self.params.get('aliases'):
                raise Refused(f'aliases: needed to restore {domain.name} ({request_text(counts)}): say what each alias means')
            requests.append(parse_options(dict(base, request=request_text(counts))))
        if addresses:
            try:
                requests.append(parse_options(dict(base, addresses=addresses)))
            except Refused as exc:
                raise Refused(f'drained[{index}]: {exc}') from None
        return requests

    def _undo(self, done: list[tuple[Any, DomainState, Outcome, bool, bool]], timeout: float) -> str:
        """Detach what the restore gave the earlier domains; the message's tail."""
        left, undone = [], 0
        for dom, before, outcome, live, config in reversed(done):
            if not outcome.attached:
                continue
            try:
                domain = read_domain_state(dom)
                ids = {item.attachment_id for item in outcome.attached}
                plan = Plan(detach=[item for item in domain.attachments if item.attachment_id in ids])
                Attacher(dom, domain, live, config, timeout, mdev=self.mdev_sysfs(self.params['sysfs_root']),
                         mdevctl_dir=self.params.get('mdevctl_dir')).apply(plan)
                undone += len(plan.detach)
            except PassthroughError as exc:
                left.append(f'{before.name}: {exc}')
        if left:
            return 'undoing the earlier domains FAILED: ' + '; '.join(left)
        return f'nothing was attached (the {undone} device(s) given to earlier domains were detached again)' if undone \
            else 'nothing was attached'
