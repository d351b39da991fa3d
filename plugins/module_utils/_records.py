# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The records modules return, built in one place: a device (pci_device_info's ``pci_devices``) and
a device of a server (the seed's ``os-pci`` server view, returned by pci_device_info with
``domain`` and by pci_attachment)."""

from __future__ import annotations

from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    Allocation,
    DeviceState,
    DomainInfo,
    Hostdev,
    Mdev,
    MdevHostdev,
    MdevParent,
    NicInfo,
    PciAddress,
    PciDevice,
    VfConfig,
    Vgpu,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pciids import PciIds


def vf_facts(config: VfConfig | None) -> dict[str, Any]:
    """A NIC VF's settings on its PF, under the names every record uses (null when the PF's driver did not say)."""
    return {'mac_address': config.mac if config else None, 'vlan': config.vlan if config else None,
            'trust': config.trust if config else None, 'spoofchk': config.spoofchk if config else None,
            'link_state': config.link_state if config else None}


def extra_info(device: PciDevice, allocation: Allocation | None, group_members: list[PciAddress],
               nic: NicInfo | None = None, vf_index: int | None = None, vgpu: Vgpu | None = None,
               mdev_types: list[str] | None = None, state: DeviceState | None = None) -> dict[str, Any]:
    """Facts that apply to this device only, like Nova's extra_info: a key is absent when it does not apply.

    ``nic``: a NIC PF's own network facts, or for a NIC VF its PF's (with ``vf_index``, the VF's index there).

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
    if nic is not None and device.physfn is None:
        info['netdev'] = nic.netdev
        info['link_state'] = nic.operstate
        if nic.vfs is not None and device.virtfns:
            info['vfs'] = [dict(vf_facts(nic.vfs.get(index)), index=index, address=str(address))
                           for index, address in enumerate(sorted(device.virtfns))]
    elif device.physfn is not None and device.class_id.startswith('02'):
        info['pf_netdev'] = nic.netdev if nic is not None else None
        info['vf_index'] = vf_index
    if vgpu is not None:
        info['vgpu'] = {'creatable_types': [{'id': number, 'name': name} for number, name in sorted(vgpu.creatable.items())],
                        'current_type': vgpu.current}
    if mdev_types:
        info['mdev_types'] = mdev_types
    if device.is_bridge:
        info['is_bridge'] = True
    if group_members:
        info['iommu_group_members'] = [str(member) for member in group_members]
    if state is not None and state.hardware_changes:
        info['hardware_changes'] = list(state.hardware_changes)
    if state is not None and state.out_of_service is not None:
        info['out_of_service'] = state.out_of_service.result()
    if allocation is not None:
        info['allocated_live'] = allocation.live
        info['allocated_persistent'] = allocation.persistent
        if allocation.inner_address:
            info['inner_address'] = allocation.inner_address
    return info


def device_record(state: DeviceState, names: PciIds, group_members: list[PciAddress],
                  nic: NicInfo | None = None, vf_index: int | None = None, vgpu: Vgpu | None = None,
                  mdev_types: list[str] | None = None) -> dict[str, Any]:
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
        'extra_info': extra_info(device, allocation, group_members, nic, vf_index, vgpu, mdev_types, state),
    }


_NO_ALIAS = object()


def server_device(domain_uuid: str, address: PciAddress, attachment_id: str | None, inner_address: str | None,
                  device: PciDevice | None, alias: Any = _NO_ALIAS, hostdev: Hostdev | None = None,
                  vf_config: VfConfig | None = None) -> dict[str, Any]:
    """One device of a server in the seed's shape; ``device`` None when the host no longer has it.

    pci_attachment adds ``alias`` (the request's alias the device serves); pci_device_info does not.
    A VF of a NIC also carries its network settings: the MAC and VLAN the domain gives it (an
    ``<interface type='hostdev'>``), else the PF's, and the PF's trust and spoof checking (``vf_config``).
    """
    record = {
        'attachment_id': attachment_id,
        'serverId': domain_uuid,
        'dev_id': address.dev_id,
        'address': str(address),
        'inner_address': inner_address,
        'vendor_id': device.vendor_id if device is not None else None,
        'product_id': device.product_id if device is not None else None,
    }
    if alias is not _NO_ALIAS:
        record['alias'] = alias
    if device is not None and device.physfn is not None and device.class_id.startswith('02'):
        facts = vf_facts(vf_config)
        del facts['link_state']
        if hostdev is not None and hostdev.kind == 'interface':
            facts['mac_address'], facts['vlan'] = hostdev.mac, hostdev.vlan
        record.update(facts)
        record['interface'] = hostdev is not None and hostdev.kind == 'interface'
    return record


def day2_records(snapshot_changes: dict[PciAddress, list[str]], marks: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """``hardware_changes`` (each recorded device that is not what it was, or is gone) and ``out_of_service`` (the
    stored marks) as pci_device_info and hypervisor_pci_stats return them."""
    return {'hardware_changes': [{'address': str(address), 'changes': changes} for address, changes in sorted(snapshot_changes.items())],
            'out_of_service': [mark.result() for mark in marks]}


def server_mdev(domain_uuid: str, mdev: MdevHostdev, alias: str | None, type_id: str | None, parent: str | None) -> dict[str, Any]:
    """A mediated device of a server, in the seed's shape (no PCI address of its own) with its UUID, type and parent."""
    return {'attachment_id': mdev.attachment_id, 'serverId': domain_uuid, 'dev_id': None, 'address': None, 'inner_address': mdev.inner_address,
            'vendor_id': None, 'product_id': None, 'alias': alias, 'mdev_uuid': mdev.uuid, 'mdev_type': type_id, 'mdev_parent': parent}


def mdev_records(parents: list[MdevParent], mdevs: list[Mdev], domains: list[DomainInfo] | None) -> tuple[list, list]:
    """pci_device_info's ``mdev_parents`` and ``mdevs``: each parent's types with the mdevs of each, and each mdev
    with the domain that holds it (live or persistent; ``domains`` None: unknown, status ``unknown``)."""
    held: dict[str, tuple[DomainInfo, str | None]] = {}
    for info in domains or ():
        for item in info.mdevs_live + info.mdevs_config:
            held.setdefault(item.uuid, (info, item.attachment_id))
    by_type: dict[tuple[str, str | None], list[str]] = {}
    for item in mdevs:
        by_type.setdefault((item.parent, item.type_id), []).append(item.uuid)
    parent_records = [{
        'name': parent.name, 'address': str(parent.address) if parent.address else None,
        'types': [{'type_id': t.type_id, 'name': t.name, 'description': t.description, 'device_api': t.device_api,
                   'available_instances': t.available_instances, 'mdevs': by_type.get((parent.name, t.type_id), [])}
                  for t in parent.types]} for parent in parents]
    mdev_list = []
    for item in mdevs:
        info, attachment_id = held.get(item.uuid, (None, None))
        status = 'unknown' if domains is None else 'allocated' if info is not None else 'free'
        mdev_list.append({'uuid': item.uuid, 'parent': item.parent, 'type_id': item.type_id, 'status': status,
                          'instance_uuid': info.uuid if info else None, 'instance_name': info.name if info else None,
                          'attachment_id': attachment_id})
    return parent_records, mdev_list
