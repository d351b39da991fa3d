# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Decisions of pci_whitelist, free of side effects: what to bind, restore and resize, or why not.

The module reads the host, asks these functions for a plan, and applies it. Every decision is a
pure function of its inputs, so it is tested as tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._address import PciAddress, PciAddressError
from ansible_collections.passthrough.libvirt.plugins.module_utils._hostuse import HostUse
from ansible_collections.passthrough.libvirt.plugins.module_utils._spec import SpecError, Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import SysfsDevice, check_driver_name

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
    original_drivers: dict[str, str | None] = field(default_factory=dict)


def resolve_pf(where: str, value: Any, devices: Mapping[PciAddress, SysfsDevice]) -> SysfsDevice:
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


def plan_sriov(sriov: list[dict[str, Any]], devices: Mapping[PciAddress, SysfsDevice], allocated: set[PciAddress],
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
        current = pf.sriov_numvfs or 0
        if current == count:
            continue
        held = [vf for vf in pf.virtfns if vf in allocated]
        if held:
            plan.refusals.append(f'{pf.address}: cannot change its VFs from {current} to {count}: a domain holds '
                                 f'{", ".join(map(str, held))} (changing the count destroys every VF first)')
            continue
        used = [(vf, reason) for vf in pf.virtfns for reason in host_use.of(vf)]
        if used and not force:
            plan.refusals.append(f'{pf.address}: cannot change its VFs from {current} to {count}: the host uses '
                                 + '; '.join(f'{vf} ({reason})' for vf, reason in used) + ' (force: true to do it anyway)')
            continue
        plan.changes.append(SetVfs(pf.address, count, current))
    return plan


def plan_bindings(devices: Mapping[PciAddress, SysfsDevice], whitelist: Whitelist, driver: str | None,
                  original_drivers: Mapping[str, str | None], allocated: set[PciAddress], host_use: HostUse,
                  force: bool) -> Plan:
    """Bind what the whitelist matches to ``driver``; give back what left it (with the driver it had).

    ``original_drivers``: the drivers recorded when this collection bound devices before
    (address -> driver or None). ``driver`` None records the whitelist without binding.
    """
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
        reasons = host_use.of(address)
        if reasons and not force:
            plan.refusals.append(f'{address}: the host uses it: {"; ".join(reasons)} (force: true to take it anyway)')
            continue
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
        if address in allocated:
            plan.refusals.append(f'{address}: left the whitelist but a domain holds it; detach it first')
            continue
        plan.original_drivers.pop(text, None)
        if device.driver != original:
            plan.changes.append(Restore(address, original, device.driver))
    return plan


def _check_groups(plan: Plan, devices: Mapping[PciAddress, SysfsDevice], wanted: set[PciAddress], driver: str) -> None:
    """Never leave an IOMMU group half bound: a guest gets the whole group or nothing of it."""
    binding = {change.address for change in plan.changes if isinstance(change, Bind)}
    groups: dict[int, list[SysfsDevice]] = {}
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
