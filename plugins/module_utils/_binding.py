# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""pci_whitelist's work: the binding plan (pure) and its application (with rollback).

``plan_sriov`` and ``plan_bindings`` decide what to resize, bind and give back, or why not, from
a host snapshot's parts and nothing else: they are tested as tables of cases. ``WhitelistRun``
reads the snapshot under the host lock, asks them for a plan, applies it through ``SysfsControl``
and undoes every applied change, newest first, when one fails. ``udev_rules`` writes the
persistence file's text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases
from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import read_text, write_atomic
from ansible_collections.passthrough.libvirt.plugins.module_utils._day2 import (
    MODE_DRAIN,
    ServiceMark,
    identity_of,
    iommu_groups,
    mdev_mark_of,
    parse_accept,
    parse_identities,
    parse_marks,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, PassthroughError, Refused, SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostLock, HostSnapshot, load_state, save_state
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    STATUS_UNAVAILABLE,
    HostUse,
    PciAddress,
    PciAddressError,
    PciDevice,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import vgpu_type
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import SysfsControl, SysfsWriter, check_driver_name

# Drivers that hand a device to guests, or park it: a group member on one of these is not "used".
PASSTHROUGH_DRIVERS = ('vfio-pci', 'pci-stub')


@dataclass(frozen=True)
class Bind:
    address: PciAddress
    driver: str
    current: str | None

    def describe(self) -> str:
        return f'bind {self.address} to {self.driver} (now {self.current or "no driver"})'


@dataclass(frozen=True)
class Restore:
    address: PciAddress
    driver: str | None
    current: str | None

    def describe(self) -> str:
        return f'give {self.address} back to {self.driver or "no driver"} (now {self.current or "no driver"})'


@dataclass(frozen=True)
class SetVfs:
    pf: PciAddress
    count: int
    current: int

    def describe(self) -> str:
        return f'set {self.pf} to {self.count} VFs (now {self.current})'


@dataclass
class Plan:
    """Changes in the order they are applied, and the refusals that stop the whole run."""

    changes: list[Bind | Restore | SetVfs] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # what force: true let through
    original_drivers: dict[str, str | None] = field(default_factory=dict)
    vf_counts: dict[str, int] = field(default_factory=dict)   # every PF named, changed or not


def resolve_pf(where: str, value: Any, devices: Mapping[PciAddress, PciDevice]) -> PciDevice:
    """An SR-IOV PF given by address or by one of its interface names."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f'{where}: {value!r} must be a PF address like "0000:3b:00.0" or its interface name')
    try:
        device = devices.get(PciAddress.parse(value))
        if device is None:
            raise SpecError(f'{where}: there is no PCI device {value.strip()!r} on this host')
    except PciAddressError:
        named = [d for d in devices.values() if value.strip() in d.netdevs]
        if not named:
            raise SpecError(f'{where}: no PCI device has the network interface {value.strip()!r}') from None
        device = named[0]
    if device.sriov_totalvfs is None:
        named = '' if value.strip().lower() == str(device.address) else f' ({value.strip()})'
        raise SpecError(f'{where}: {device.address}{named} is not an SR-IOV physical function')
    return device


def plan_sriov(sriov: list[dict[str, Any]], devices: Mapping[PciAddress, PciDevice], allocated: set[PciAddress],
               host_use: HostUse, force: bool) -> Plan:
    """VF counts. Changing a count destroys every VF of the PF first (the kernel goes through 0), so
    it is refused while a domain holds one of them, or, unless ``force``, while the host uses one."""
    plan = Plan()
    seen: set[PciAddress] = set()
    for index, item in enumerate(sriov):
        where = f'sriov[{index}]'
        if not isinstance(item, dict) or set(item) != {'pf', 'numvfs'}:
            raise SpecError(f'{where}: {item!r} must be a dict with exactly the keys pf and numvfs')
        pf = resolve_pf(f'{where}.pf', item['pf'], devices)
        count = item['numvfs']
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= pf.sriov_totalvfs:
            raise SpecError(f'{where}.numvfs: {count!r} must be a whole number from 0 to {pf.sriov_totalvfs} (sriov_totalvfs of {pf.address})')
        if pf.address in seen:
            raise SpecError(f'{where}.pf: {pf.address} is given twice')
        seen.add(pf.address)
        plan.vf_counts[str(pf.address)] = count
        current = pf.sriov_numvfs or 0
        if current == count:
            continue
        held = [vf for vf in pf.virtfns if vf in allocated]
        if held:
            plan.refusals.append(f'{pf.address}: cannot change its VFs from {current} to {count}: a domain holds '
                                 f'{", ".join(map(str, held))} (changing the count destroys every VF first)')
            continue
        used = [(vf, reason) for vf in pf.virtfns for reason in host_use.of(vf)]
        if used:
            uses = '; '.join(f'{vf} ({reason})' for vf, reason in used)
            if not force:
                plan.refusals.append(f'{pf.address}: cannot change its VFs from {current} to {count}: the host uses '
                                     f'{uses} (force: true to do it anyway)')
                continue
            plan.warnings.append(f'{pf.address}: force: true changes its VFs from {current} to {count} although the host uses {uses}')
        plan.changes.append(SetVfs(pf.address, count, current))
    return plan


def plan_bindings(devices: Mapping[PciAddress, PciDevice], whitelist: Whitelist, driver: str | None,
                  original_drivers: Mapping[str, str | None], allocated: set[PciAddress], host_use: HostUse,
                  force: bool, held: Mapping[PciAddress, list[str]] | None = None) -> Plan:
    """Bind what the whitelist matches to ``driver``; give back what left it (with the driver it had).

    ``original_drivers``: the drivers recorded when this collection bound devices before
    (address -> driver or None). ``driver`` None records the whitelist without binding. ``held``:
    devices whose hardware changed and the operator has not accepted it - never bound nor given back.
    """
    held = held or {}
    plan = Plan(original_drivers=dict(original_drivers))
    if driver is None:
        return plan   # record the whitelist only: bindings are left as they are
    check_driver_name('driver', driver)
    wanted = {address for address, device in devices.items()
              if not device.is_bridge and whitelist.match(device, devices) is not None}

    for address in sorted(wanted):
        device = devices[address]
        if device.driver == driver:
            continue
        if address in allocated:
            continue   # a domain holds it: libvirt has it on vfio-pci while it runs, and gives it back
        if address in held:
            plan.warnings.append(f'{address}: not bound to {driver}: hardware changed: {"; ".join(held[address])} '
                                 '(accept_hardware_changes accepts it)')
            continue
        reasons = host_use.of(address)
        if reasons:
            if not force:
                plan.refusals.append(f'{address}: the host uses it: {"; ".join(reasons)} (force: true to take it anyway)')
                continue
            plan.warnings.append(f'{address}: force: true takes it for {driver} although the host uses it: {"; ".join(reasons)}')
        plan.changes.append(Bind(address, driver, device.driver))

    _check_groups(plan, devices, wanted, driver)
    for change in plan.changes:
        plan.original_drivers.setdefault(str(change.address), change.current)

    for text in sorted(original_drivers, key=PciAddress.parse):
        address = PciAddress.parse(text)
        if address in wanted or address not in devices:
            if address not in devices:
                plan.original_drivers.pop(text, None)   # gone (a VF destroyed): nothing to give back
            continue
        device, original = devices[address], original_drivers[text]
        if address in held:
            plan.warnings.append(f'{address}: left the whitelist, but not given back to {original or "no driver"}: hardware '
                                 f'changed: {"; ".join(held[address])} (accept_hardware_changes accepts it)')
            continue
        if address in allocated:
            plan.refusals.append(f'{address}: left the whitelist but a domain holds it; detach it first')
            continue
        plan.original_drivers.pop(text, None)
        if device.driver != original:
            plan.changes.append(Restore(address, original, device.driver))
    return plan


def _check_groups(plan: Plan, devices: Mapping[PciAddress, PciDevice], wanted: set[PciAddress], driver: str) -> None:
    """Never leave an IOMMU group half bound: a guest gets the whole group or nothing of it."""
    binding = {change.address for change in plan.changes if isinstance(change, Bind)}
    groups: dict[int, list[PciDevice]] = {}
    for device in devices.values():
        if device.iommu_group is not None:
            groups.setdefault(device.iommu_group, []).append(device)
    for group in sorted({devices[address].iommu_group for address in binding if devices[address].iommu_group is not None}):
        members = [member for member in sorted(groups[group], key=lambda d: d.address) if not member.is_bridge]
        left_behind = [member for member in members
                       if member.address not in wanted and member.driver is not None and member.driver not in PASSTHROUGH_DRIVERS + (driver,)]
        if left_behind:
            plan.refusals.append(
                f'IOMMU group {group} would be left half bound: '
                + ', '.join(f'{m.address} ({m.driver})' for m in left_behind)
                + f' would stay with the host while {", ".join(str(a) for a in sorted(binding) if devices[a].iommu_group == group)} '
                + f'moves to {driver}; whitelist the whole group: {", ".join(str(m.address) for m in members)}')
            plan.changes = [change for change in plan.changes
                            if not (isinstance(change, Bind) and devices[change.address].iommu_group == group)]


# -- persistence ------------------------------------------------------------------------------------

DEFAULT_RULES_PATH = '/etc/udev/rules.d/90-passthrough-libvirt.rules'


def udev_rules(bindings: Mapping[str, str], vf_counts: Mapping[str, int]) -> str:
    """Rules that redo the bindings and VF counts when the devices appear again (boot, hot-plug).

    The override is set when a device is added; if a driver still got there first, the device is
    unbound and probed again. VF counts are set once the PF's own driver is bound (ACTION bind).
    """
    lines = ['# Written by passthrough.libvirt.pci_whitelist (persist: true). Changes here are overwritten.']
    for address, driver in sorted(bindings.items()):
        check_driver_name('driver', driver)
        PciAddress.parse(address)
        lines.append(f'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{address}", ATTR{{driver_override}}="{driver}"')
        lines.append(f'ACTION=="bind", SUBSYSTEM=="pci", KERNEL=="{address}", DRIVER!="{driver}", '
                     'RUN+="/bin/sh -c \'echo %k > /sys%p/driver/unbind; echo %k > /sys/bus/pci/drivers_probe\'"')
    for address, count in sorted(vf_counts.items()):
        PciAddress.parse(address)
        lines.append(f'ACTION=="bind", SUBSYSTEM=="pci", KERNEL=="{address}", ATTR{{sriov_numvfs}}="{int(count)}"')
    return '\n'.join(lines) + '\n'


# -- one run of pci_whitelist -------------------------------------------------------------------------

def _rollback(control: SysfsControl, applied: list[Bind | Restore | SetVfs]) -> list[str]:
    """Undo applied changes, newest first; returns what could not be undone."""
    problems = []
    for change in reversed(applied):
        try:
            if isinstance(change, Bind):
                control.restore(change.address, change.current)
            elif isinstance(change, Restore):
                if change.current is None:
                    control.unbind(change.address)
                else:
                    control.bind(change.address, change.current)
            else:
                control.set_numvfs(change.pf, change.current)
        except PassthroughError as exc:
            problems.append(f'{change.describe()}: {exc}')
    return problems


@dataclass
class Day2:
    """A pci_whitelist run's day-2 part: the hardware changes found (address -> what changed), those held back (not
    accepted), the out-of-service marks to store, and the identities recorded before the run."""

    changes: dict[PciAddress, list[str]]
    held: dict[PciAddress, list[str]]
    marks: list[ServiceMark]
    recorded: dict[PciAddress, dict[str, Any]]

    def identities(self, devices: Mapping[PciAddress, PciDevice], whitelist: Whitelist) -> dict[str, dict[str, Any]]:
        """What to record now: each whitelisted device as it is, except those held back (their old record stays, so
        the change is still seen; a held device that is gone keeps its record too)."""
        groups = iommu_groups(devices)
        found = {str(address): identity_of(device, devices, groups) for address, device in devices.items()
                 if not device.is_bridge and address not in self.held and whitelist.match(device, devices) is not None}
        for address in self.held:
            found[str(address)] = self.recorded[address]
        return dict(sorted(found.items()))

    def actions(self, state: Mapping[str, Any]) -> list[str]:
        """The run's day-2 actions in words."""
        done = [f'accept the hardware change of {address}: {"; ".join(found)}'
                for address, found in sorted(self.changes.items()) if address not in self.held]
        stored = [record for record in state.get('out_of_service') or [] if isinstance(record, dict)]
        wanted = [mark.stored() for mark in self.marks]
        done += [f'mark {mark.label} out of service ({mark.mode}): {mark.reason}' for mark in self.marks if mark.stored() not in stored]
        for record in stored:
            if record not in wanted:
                kind = next((key for key in ('address', 'pf', 'alias') if key in record), None)
                done.append(f'put {"the host" if kind is None else f"{kind} {record[kind]}"} back in service')
        return done


class WhitelistRun:
    """Apply a whitelist to the host: ``run()`` returns the module result.

    ``writer``, ``net`` and ``proc_root`` are the seams tests use (a kernel double on a fixture tree,
    fixed network facts); a module run uses the real ones.
    """

    def __init__(self, params: dict[str, Any], check_mode: bool, writer: SysfsWriter | None = None,
                 net: Any = None, proc_root: str = '/proc') -> None:
        self.params = params
        self.check_mode = check_mode
        self.writer = writer
        self.net = net
        self.proc_root = proc_root

    def run(self) -> dict[str, Any]:
        params = self.params
        present = params['state'] == 'present'
        driver = params['driver']
        if driver is not None:
            check_driver_name('driver', driver)
        sriov = [dict(item, numvfs=item['numvfs'] if present else 0) for item in (params['sriov'] or [])]
        # The snapshot's whitelist is the one this run stores: statuses are judged by it (device_spec omitted with
        # present: the stored one stays, for a run that only marks devices or accepts hardware changes).
        snapshot = HostSnapshot.read(params['sysfs_root'], params['uri'], params.get('device_spec') if present else [],
                                     params['config_path'], proc_root=self.proc_root, net=self.net, read_host_use=True)
        control = SysfsControl(snapshot.sysfs, self.writer)
        with HostLock(params['config_path'], check_mode=self.check_mode):
            return self._run_locked(snapshot, control, present, driver, sriov)

    def _run_locked(self, snapshot: HostSnapshot, control: SysfsControl, present: bool, driver: str | None,
                    sriov: list[dict[str, Any]]) -> dict[str, Any]:
        params = self.params
        state = load_state(params['config_path'])
        whitelist = snapshot.whitelist
        allocated = set(snapshot.allocations)
        host_use = snapshot.host_use
        force = params['force']

        devices = snapshot.devices
        day2 = self._day2(snapshot, present)
        vf_plan = plan_sriov(sriov, devices, allocated, host_use, force)
        bind_plan = plan_bindings(devices, whitelist, driver, state['original_drivers'], allocated, host_use, force, day2.held)
        refusals = vf_plan.refusals + bind_plan.refusals
        if refusals:
            raise Refused('nothing was changed: ' + ' | '.join(refusals))

        before = self._snapshot(devices, state)
        applied: list[Bind | Restore | SetVfs] = []
        new_state = state
        state_changed = rules_changed = saved = False
        try:
            if not self.check_mode:
                # A change counts as applied before it is tried: one that fails half-way (unbound, not
                # yet probed) is undone with the others.
                for change in vf_plan.changes:
                    applied.append(change)
                    control.set_numvfs(change.pf, change.count)
                if vf_plan.changes:
                    # New VFs exist now: the whitelist may match them.
                    devices = snapshot.refresh_devices()
                    bind_plan = plan_bindings(devices, whitelist, driver, state['original_drivers'], allocated, host_use, force,
                                              day2.held)
                    if bind_plan.refusals:
                        raise Refused(' | '.join(bind_plan.refusals))
                for change in bind_plan.changes:
                    applied.append(change)
                    if isinstance(change, Bind):
                        control.bind(change.address, change.driver)
                    else:
                        control.restore(change.address, change.driver)
            new_state = dict(state, device_spec=(params['device_spec'] if params.get('device_spec') is not None
                                                 else state.get('device_spec')) if present else None,
                             original_drivers=bind_plan.original_drivers,
                             sriov=dict(state.get('sriov', {}), **vf_plan.vf_counts) if present else {},
                             identities=day2.identities(devices, whitelist) if present else {},
                             out_of_service=[mark.stored() for mark in day2.marks])
            state_changed = any(new_state.get(key) != state.get(key, {} if key == 'sriov' else None)
                                for key in ('device_spec', 'original_drivers', 'sriov', 'identities', 'out_of_service'))
            # The bindings are only as good as the record of the drivers to give back: a state file that
            # cannot be written undoes them too.
            if state_changed and not self.check_mode:
                save_state(params['config_path'], new_state)
                saved = True
            rules_changed = self._persist(new_state, driver, present)
        except PassthroughError as exc:
            problems = _rollback(control, applied)
            if saved:
                try:
                    save_state(params['config_path'], state)
                except PassthroughError as undo:
                    problems.append(f'the state file: {undo}')
            undone = f'rolled back {len(applied)} change(s); nothing is left changed' if not problems else \
                'rollback FAILED for: ' + '; '.join(problems)
            raise ChangeFailed(f'{exc}; {undone}') from None

        changes = vf_plan.changes + bind_plan.changes
        result: dict[str, Any] = {
            'changed': bool(changes) or state_changed or rules_changed,
            'actions': [change.describe() for change in changes] + day2.actions(state)
            + (['store the whitelist'] if state_changed else []) + (['write the udev rules'] if rules_changed else []),
            'bound': [str(c.address) for c in bind_plan.changes if isinstance(c, Bind)],
            'restored': [str(c.address) for c in bind_plan.changes if isinstance(c, Restore)],
            'sriov': [{'pf': str(c.pf), 'numvfs': c.count, 'previous': c.current} for c in vf_plan.changes],
            'whitelist': new_state['device_spec'],
            'hardware_changes': [{'address': str(address), 'changes': changes_of, 'accepted': address not in day2.held}
                                 for address, changes_of in sorted(day2.changes.items())],
            'out_of_service': [mark.result() for mark in day2.marks],
            'warnings': vf_plan.warnings + bind_plan.warnings,
        }
        if changes and not self.check_mode:
            snapshot.refresh_devices()      # the drivers and VFs as they are now
        snapshot.use_day2(parse_identities(new_state['identities']), day2.marks)   # as stored now (or, in check mode, would be)
        result['unavailable'] = self._unavailable(snapshot)
        # Devices under a drain mark that domains hold, and mdevs under one (by their UUIDs; a domain may hold them): the
        # module takes them out (pci_attachment's drain, after this lock).
        result['drain_addresses'] = sorted(self._drained_mdevs(snapshot, day2.marks) | {
            str(address) for address, device_state in snapshot.states().items()
            if device_state.allocation is not None and device_state.out_of_service is not None
            and device_state.out_of_service.mode == MODE_DRAIN})
        if params.get('_diff'):
            after_devices = snapshot.devices if not self.check_mode else None
            result['diff'] = {'before': before, 'after': self._snapshot(after_devices, new_state) if after_devices is not None
                              else self._predicted(before, changes, new_state)}
        return result

    @staticmethod
    def _drained_mdevs(snapshot: HostSnapshot, marks: list[ServiceMark]) -> set[str]:
        """What of the mediated devices a drain mark covers: the UUIDs of the existing mdevs, and the addresses of the
        NVIDIA vGPU VFs domains hold. A mark covers them when it is on the host, on the parent's PCI function (address,
        PF; the parent need not be whitelisted), or is an alias of mediated devices that asks for their type (judged
        with the tags of the whitelist entry that admits it)."""
        drains = [mark for mark in marks if mark.mode == MODE_DRAIN]
        if not drains:
            return set()
        types = {(parent.name, mdev_type.type_id): (parent, mdev_type) for parent in snapshot.mdev_parents for mdev_type in parent.types}
        found = set()
        for mdev in snapshot.mdevs:
            parent, mdev_type = types.get((mdev.parent, mdev.type_id), (None, None))
            try:
                device = snapshot.devices.get(PciAddress.parse(mdev.parent))
            except PciAddressError:
                device = None        # a virtual parent (mtty)
            spec = snapshot.whitelist.mdev_match(parent, mdev_type, device, snapshot.devices) if parent is not None else None
            # Without a whitelist entry (or its type no longer listed) only marks on the host or the parent's address or PF.
            if mdev_mark_of(drains, device, mdev_type, spec.tags if spec is not None else None) is not None:
                found.add(mdev.uuid)
        held = snapshot.allocations or {}
        for address, vgpu in snapshot.vgpus.items():
            if address not in held or vgpu.current is None:
                continue
            device = snapshot.devices[address]
            mdev_type, spec = vgpu_type(snapshot.whitelist, address, device, snapshot.devices, vgpu.current,
                                        vgpu.creatable.get(vgpu.current))
            if mdev_mark_of(drains, device, mdev_type, spec.tags if spec is not None else None) is not None:
                found.add(str(address))
        return found

    def _day2(self, snapshot: HostSnapshot, present: bool) -> Day2:
        """The run's hardware changes (held back unless accepted) and out-of-service marks (the option's, else the
        stored ones; none after state=absent)."""
        params = self.params
        accept = parse_accept(params.get('accept_hardware_changes'))
        changes = snapshot.hardware_changes() if present else {}
        held = {address: found for address, found in changes.items() if accept is not None and address not in accept}
        if not present:
            marks: list[ServiceMark] = []
        elif params.get('out_of_service') is not None:
            devices = snapshot.devices
            marks = parse_marks(params['out_of_service'], parse_aliases(params.get('aliases')), params.get('aliases'),
                                resolve_pf=lambda where, value: resolve_pf(where, value, devices).address)
        else:
            marks = snapshot.marks
        return Day2(changes, held, marks, dict(snapshot.identities))

    @staticmethod
    def _unavailable(snapshot: HostSnapshot) -> list[dict[str, str]]:
        """The whitelisted devices guests cannot have, and why: the same judgement as every other module's."""
        states = snapshot.states()
        return [{'address': str(address), 'reason': state.reason} for address, state in sorted(states.items())
                if state.status == STATUS_UNAVAILABLE]

    def _snapshot(self, devices: Mapping[PciAddress, PciDevice], state: Mapping[str, Any]) -> dict[str, Any]:
        tracked = set(state.get('original_drivers', {}))
        return {
            'device_spec': state.get('device_spec'),
            'out_of_service': state.get('out_of_service') or [],
            'drivers': {str(a): d.driver for a, d in sorted(devices.items()) if str(a) in tracked},
            'sriov_numvfs': {str(a): d.sriov_numvfs for a, d in sorted(devices.items()) if d.sriov_totalvfs},
        }

    @staticmethod
    def _predicted(before: dict[str, Any], changes: list[Bind | Restore | SetVfs], state: Mapping[str, Any]) -> dict[str, Any]:
        after = {'device_spec': state.get('device_spec'), 'out_of_service': state.get('out_of_service') or [],
                 'drivers': dict(before['drivers']), 'sriov_numvfs': dict(before['sriov_numvfs'])}
        for change in changes:
            if isinstance(change, SetVfs):
                after['sriov_numvfs'][str(change.pf)] = change.count
            else:
                after['drivers'][str(change.address)] = change.driver
        return after

    def _persist(self, state: Mapping[str, Any], driver: str | None, present: bool) -> bool:
        """Write (or remove) the udev rules file; returns whether it changed."""
        path = self.params['persist_path']
        current = read_text(path)
        if self.params['persist'] and present:
            wanted = udev_rules({address: driver for address in state['original_drivers']} if driver else {}, state.get('sriov', {}))
            if current == wanted:
                return False
            if not self.check_mode:
                write_atomic('persist_path', path, wanted)
            return True
        if current is None:
            return False
        if not self.check_mode:
            try:
                os.unlink(path)
            except OSError as exc:
                raise ChangeFailed(f'persist_path {path!r} cannot be removed: {exc.strerror}') from None
        return True
