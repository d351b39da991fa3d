# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The host view every module uses: sysfs devices + names + whitelist + libvirt allocations."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils import _hoststate, _pciids
from ansible_collections.passthrough.libvirt.plugins.module_utils._hostuse import HostUseReader
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import DeviceState, assess
from ansible_collections.passthrough.libvirt.plugins.module_utils._address import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import (
    Allocation,
    DomainInfo,
    Libvirt,
    LibvirtUnavailable,
    allocations as domain_allocations,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._spec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs, SysfsDevice

DEV_TYPES = ('type-PCI', 'type-PF', 'type-VF')


@dataclass
class HostView:
    """Everything the modules report about one host."""

    hostname: str
    devices: list[dict[str, Any]]
    allocations_known: bool
    libvirt_error: str | None = None
    domains: list[DomainInfo] = field(default_factory=list)
    states: dict[PciAddress, DeviceState] = field(default_factory=dict)   # every device, not only those listed
    numa_sockets: dict[int, int] = field(default_factory=dict)


def extra_info(device: SysfsDevice, allocation: Allocation | None, group_members: list[PciAddress]) -> dict[str, Any]:
    """Facts that apply to this device only, like Nova's extra_info: a key is absent when it does not apply.

    Keeping records small matters: Ansible walks and serialises every value of a module's result.
    """
    info: dict[str, Any] = {'revision': device.revision}
    if device.physfn is not None:
        info['phys_function'] = str(device.physfn)
    if device.sriov_totalvfs is not None:
        info['sriov_totalvfs'] = device.sriov_totalvfs
        info['sriov_numvfs'] = device.sriov_numvfs
        info['virt_functions'] = [str(vf) for vf in device.virtfns]
    if device.link:
        info['link'] = device.link
    if device.netdevs:
        info['netdevs'] = device.netdevs
    if device.is_bridge:
        info['is_bridge'] = True
    if group_members:
        info['iommu_group_members'] = [str(member) for member in group_members]
    if allocation is not None:
        info['allocated_live'] = allocation.live
        info['allocated_persistent'] = allocation.persistent
        if allocation.inner_address:
            info['inner_address'] = allocation.inner_address
    return info


def device_record(state: DeviceState, names: _pciids.PciIds, group_members: list[PciAddress]) -> dict[str, Any]:
    """One device record, with the fields pci_device_info documents under pci_devices."""
    device, spec, allocation = state.device, state.spec, state.allocation
    address = device.address
    return {
        'address': str(address),
        'dev_id': address.dev_id,
        'dev_type': device.dev_type,
        'vendor_id': device.vendor_id,
        'product_id': device.product_id,
        'vendor_name': names.vendor_name(device.vendor_id),
        'product_name': names.device_name(device.vendor_id, device.product_id),
        'class_id': device.class_id,
        'subsystem_vendor_id': device.subsystem_vendor_id,
        'subsystem_product_id': device.subsystem_product_id,
        'driver': device.driver,
        'numa_node': device.numa_node,
        'iommu_group': device.iommu_group,
        'parent_addr': str(device.physfn) if device.physfn else None,
        'label': f'label_{device.vendor_id}_{device.product_id}',
        'status': state.status,
        'unavailable_reason': state.reason,
        'whitelisted': spec is not None,
        'tags': dict(spec.tags) if spec is not None else {},
        'instance_uuid': allocation.domain_uuid if allocation else None,
        'instance_name': allocation.domain_name if allocation else None,
        'attachment_id': allocation.attachment_id if allocation else None,
        'extra_info': extra_info(device, allocation, group_members),
    }


def read_allocations(uri: str) -> tuple[str | None, list[DomainInfo]]:
    """libvirt's hostname and its domains; raises LibvirtUnavailable."""
    conn = Libvirt(uri)
    try:
        return conn.hostname(), conn.domains()
    finally:
        conn.close()


def collect(sysfs_root: str = '/sys', uri: str = 'qemu:///system', device_spec: Any = None,
            config_path: str = _hoststate.DEFAULT_CONFIG_PATH, require_libvirt: bool = True,
            addresses: list[PciAddress] | None = None, pci_ids_path: str | None = None,
            pcie_link: bool = False, proc_root: str = '/proc', host_use: bool = True) -> HostView:
    """Read the host. ``device_spec`` None means the stored whitelist (none stored: every device unmanaged).

    ``host_use``: whitelisted devices the host uses (addresses, default route, mounts, boot VGA) are unavailable.
    Raises SysfsError, SpecError, HostStateError, and LibvirtUnavailable when ``require_libvirt``.
    """
    sysfs = Sysfs(sysfs_root, pcie_link=pcie_link)
    sysfs.check()
    if device_spec is None:
        whitelist = Whitelist.parse(_hoststate.load(config_path).get('device_spec'))
    else:
        whitelist = Whitelist.parse(device_spec)

    libvirt_error = None
    hostname = None
    domains: list[DomainInfo] = []
    try:
        hostname, domains = read_allocations(uri)
        allocations_known = True
    except LibvirtUnavailable as exc:
        if require_libvirt:
            raise
        libvirt_error = str(exc)
        allocations_known = False
    allocations = domain_allocations(domains) if allocations_known else None

    devices = sysfs.read_devices()
    by_address = {device.address: device for device in devices}
    groups: dict[int, list[PciAddress]] = {}
    for device in devices:
        if device.iommu_group is not None:
            groups.setdefault(device.iommu_group, []).append(device.address)
    use = HostUseReader(sysfs_root, proc_root).read() if host_use and whitelist.entries else None
    states = assess(by_address, whitelist, allocations, use)
    if addresses is not None:
        wanted = set(addresses)
        devices = [device for device in devices if device.address in wanted]
    names = _pciids.load(pci_ids_path)
    records = [
        device_record(states[device.address], names,
                      groups.get(device.iommu_group, []) if device.iommu_group is not None else [])
        for device in devices
    ]
    return HostView(
        hostname=hostname or socket.gethostname(),
        devices=records,
        allocations_known=allocations_known,
        libvirt_error=libvirt_error,
        domains=domains,
        states=states,
        numa_sockets=sysfs.numa_sockets(),
    )
