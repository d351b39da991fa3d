#!/usr/bin/python
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pci_device_info
short_description: List the PCI devices of a libvirt/KVM host and who holds them
version_added: 0.1.0
description:
  - Reads every PCI function of the host from sysfs (C(<sysfs_root>/bus/pci/devices)) - ids, vendor and product
    names, class, subsystem ids, driver, NUMA node, IOMMU group and its members, SR-IOV physical and virtual
    functions, and on request the PCIe link - and tells for each whether a libvirt domain holds it.
  - By default only the kernel's cached attributes are read. The module never runs C(lspci) and reads no PCI
    config space unless O(pcie_link=true), so it does not wake devices from low-power states and cannot hang on a
    broken device.
  - A device is C(allocated) when any domain, running or not, names it in a C(<hostdev type='pci'>) or an
    C(<interface type='hostdev'>) of its live or persistent XML. libvirt itself is the record of allocations.
  - A device that is not allocated is C(available) when the whitelist matches it and C(unmanaged) otherwise.
    With no whitelist given or stored every device that is not allocated is C(unmanaged). PCI bridges are never
    whitelisted.
  - This module never changes anything on the host.
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
extends_documentation_fragment:
  - passthrough.libvirt.common
  - passthrough.libvirt.common.attributes
  - passthrough.libvirt.common.info_module
options:
  address:
    description:
      - Report only the device at this PCI address, as C(DDDD:BB:SS.F) or C(BB:SS.F) (domain 0000), hex in
        either case. 32-bit domains such as C(10000:e0:00.0) (Intel VMD) are valid.
      - Its record is also returned as RV(pci_device).
    type: str
  domain:
    description:
      - Report only the devices held by this libvirt domain, given by name or UUID.
      - Fails when no such domain exists.
    type: str
  vendor_id:
    description:
      - Report only devices of this vendor, 4 hex digits (C(8086), C(0x8086) and C(10DE) are accepted).
    type: str
  product_id:
    description:
      - Report only devices with this product (device) id, 4 hex digits.
    type: str
  dev_type:
    description:
      - Report only devices of this type.
    type: str
    choices: [type-PCI, type-PF, type-VF]
  status:
    description:
      - Report only devices with this status.
    type: str
    choices: [available, allocated, unavailable, unmanaged, unknown]
  device_spec:
    description:
      - The whitelist to judge devices against, in place of the one stored on the host by
        M(passthrough.libvirt.pci_whitelist). Nothing is stored.
      - A list of entries in the form of Nova's C([pci] device_spec). An entry matches a device when every
        key it gives matches; the first matching entry wins and its other keys are the device's RV(pci_devices[].tags).
      - Match keys are C(vendor_id), C(product_id), C(subsystem_vendor_id), C(subsystem_product_id) (hex strings,
        C(*) for any), C(address) (a glob C([[[[domain]:]bus]:][slot][.[func]]) or a dict of regular expressions
        for C(domain), C(bus), C(slot), C(function), each matching the whole field), C(devname) (a network interface
        name), C(class_id) (a hex class prefix such as C(0302)), C(driver) and C(numa_node).
      - When omitted, the whitelist stored in O(config_path) is used.
    type: list
    elements: dict
  pcie_link:
    description:
      - Also read the PCIe link of each device (current and maximum speed and width) into
        RV(pci_devices[].extra_info.link).
      - The kernel answers these attributes by reading the device's PCIe capability registers, that is config
        space, which can wake a device from a low-power state (D3cold). Off by default for that reason.
    type: bool
    default: false
  require_libvirt:
    description:
      - When V(true), the module fails if libvirt cannot be reached at O(uri).
      - When V(false), it still lists the devices, with RV(allocations_known=false), a warning, and status
        C(unknown) for every device, since it cannot tell which ones domains hold. Useful on hosts where
        libvirt is not installed or not running yet.
    type: bool
    default: true
  fields:
    description:
      - Return only these keys of each record of RV(pci_devices) (and of RV(pci_device)), in the order given. When
        omitted, every key is returned.
      - The names are those of the elements of RV(pci_devices). Include C(address) to know which device each record
        is. An empty list is an error.
      - The filters (O(address), O(domain), O(vendor_id), O(product_id), O(dev_type), O(status)) work whatever keys
        are returned. RV(server), RV(mdev_parents) and RV(mdevs) are not affected.
      - Ansible checks, copies and encodes every value of a module's result. On a host with thousands of PCI functions
        the full records make a result of megabytes, and a short list makes the task markedly faster. What no key
        asked for needs is not read either (pci.ids without C(vendor_name) and C(product_name); IOMMU group members,
        network interfaces and mdev types without C(extra_info)).
    type: list
    elements: str
    choices: [address, dev_id, dev_type, vendor_id, product_id, vendor_name, product_name, class_id, subsystem_vendor_id,
              subsystem_product_id, driver, numa_node, iommu_group, parent_addr, label, status, unavailable_reason,
              whitelisted, tags, instance_uuid, instance_name, attachment_id, extra_info]
notes:
  - Reading sysfs needs no privileges; listing every domain needs access to the libvirt daemon at O(uri).
seealso:
  - name: Nova PCI passthrough
    description: The whitelist and alias semantics this collection follows.
    link: https://docs.openstack.org/nova/latest/admin/pci-passthrough.html
  - name: libvirt host device assignment
    description: The C(<hostdev>) element this collection reads and writes.
    link: https://libvirt.org/formatdomain.html#host-device-assignment
'''

EXAMPLES = r'''
- name: List every PCI device of the host
  passthrough.libvirt.pci_device_info:
  register: pci

- name: Show the free NVIDIA devices of the whitelist stored on the host
  ansible.builtin.debug:
    msg: "{{ pci.pci_devices | selectattr('vendor_id', 'eq', '10de') | selectattr('status', 'eq', 'available') | map(attribute='address') }}"

- name: One device, with its IOMMU group members, SR-IOV details and PCIe link
  passthrough.libvirt.pci_device_info:
    address: "0000:3b:00.0"
    pcie_link: true
  register: nic

- name: Which devices does a domain hold?
  passthrough.libvirt.pci_device_info:
    domain: web01
  register: web01_devices

- name: Judge devices against a whitelist without storing it
  passthrough.libvirt.pci_device_info:
    device_spec:
      - vendor_id: "8086"
        product_id: "154c"
        physical_network: physnet1
      - address: "0000:af:00.*"
    status: available

- name: Inventory a host where libvirt is not running yet
  passthrough.libvirt.pci_device_info:
    require_libvirt: false

- name: Only the keys a report needs (a much smaller result on a host with thousands of VFs)
  passthrough.libvirt.pci_device_info:
    fields: [address, vendor_id, product_id, status]
  register: summary
'''

RETURN = r'''
hypervisor_hostname:
  description: The host's name as libvirt reports it (the system hostname when libvirt cannot be reached).
  returned: always
  type: str
  sample: compute-0.example.com
stored_device_spec:
  description:
    - The whitelist stored on the host by M(passthrough.libvirt.pci_whitelist) (its O(device_spec) as given), read from
      O(config_path); V(null) when none is stored.
    - It is what the statuses are judged by when O(device_spec) is not given. When O(device_spec) is given, compare the
      two to find a whitelist in the inventory that was changed but not applied (the C(pci_inventory) role warns).
  returned: always
  type: list
  elements: dict
  sample: [{vendor_id: "8086", product_id: "154c", physical_network: physnet1}]
allocations_known:
  description:
    - Whether libvirt could be asked which domains hold which devices.
    - V(false) only with O(require_libvirt=false) when libvirt cannot be reached; every status is then C(unknown).
  returned: always
  type: bool
  sample: true
server:
  description:
    - The domain of O(domain) in the shape of the server view of Nova's C(os-pci) extension
      (C(os-pci:pci_devices), here under the Ansible-friendly key C(pci_devices)).
  returned: when O(domain) is given
  type: dict
  contains:
    id:
      description: The domain's UUID.
      type: str
      sample: 6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20
    name:
      description: The domain's name.
      type: str
      sample: web01
    pci_devices:
      description:
        - One entry per PCI device the domain holds - C(attachment_id) (null when this collection did not attach it),
          C(serverId) (the domain's UUID), C(dev_id), C(address), C(inner_address) (the guest-side PCI address,
          null until libvirt assigns one), C(vendor_id), C(product_id).
        - A VF of a network controller also carries C(interface) (true when the domain has it as an
          C(<interface type='hostdev'>)), C(mac_address) and C(vlan) (the interface's when it is one, else its PF's),
          C(trust) and C(spoofchk) (its PF's; null when unknown) - the same keys as the devices of
          M(passthrough.libvirt.pci_attachment).
      type: list
      elements: dict
      sample:
        - attachment_id: 0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11
          serverId: 6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20
          dev_id: pci_0000_3b_02_2
          address: "0000:3b:02.2"
          inner_address: "0000:07:00.0"
          vendor_id: "8086"
          product_id: "154c"
mdev_parents:
  description:
    - The devices that can create mediated devices (mdevs) - PCI functions (Intel GVT-g, NVIDIA vGPU before kernel 6.8)
      and virtual parents (a test driver such as C(mtty)) - each with the types it offers, from
      C(/sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/). Empty on hosts without mdev support.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The parent's device name - a PCI address, or a virtual device's name.
      type: str
      sample: "0000:00:02.0"
    address:
      description: The PCI address of a PCI parent; V(null) for a virtual one.
      type: str
    types:
      description:
        - Each type - C(type_id) (the directory name, for example C(nvidia-470) or C(mtty-2)), C(name),
          C(description), C(device_api) (C(vfio-pci) for what libvirt attaches as C(model='vfio-pci')),
          C(available_instances) (how many more the parent can create now), C(mdevs) (the UUIDs of those of this
          type that exist). A value the kernel does not give is V(null).
      type: list
      elements: dict
  sample:
    - name: mtty
      address: null
      types:
        - {type_id: mtty-2, name: Dual port serial, description: null, device_api: vfio-pci, available_instances: 11,
           mdevs: [6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20]}
hardware_changes:
  description:
    - Every device M(passthrough.libvirt.pci_whitelist) recorded that is not what it was - C(address) and C(changes)
      (C(vendor_id), C(product_id), C(subsystem_vendor_id), C(subsystem_product_id), C(class), C(IOMMU group),
      C(IOMMU group members), C(PF), C(VF index), C(VF count), each C(old → new); or C(device removed)). Empty when
      nothing changed. M(passthrough.libvirt.pci_whitelist) with O(passthrough.libvirt.pci_whitelist#module:accept_hardware_changes)
      accepts a change.
  returned: success
  type: list
  elements: dict
  sample: [{address: "0000:3c:00.0", changes: ["subsystem_product_id 1533 → 1534"]}, {address: "0000:3b:02.3", changes: ["device removed"]}]
out_of_service:
  description:
    - The out-of-service marks stored on the host by M(passthrough.libvirt.pci_whitelist) - C(kind) (V(address),
      V(pf), V(alias) or V(host)), C(target) (the address or alias name; V(null) for the host), C(mode) (V(no-new) or
      V(drain)) and C(reason).
  returned: success
  type: list
  elements: dict
  sample: [{kind: pf, target: "0000:3b:00.0", mode: no-new, reason: "flapping link, ticket 4711"}]
mdevs:
  description:
    - Every mediated device that exists (C(/sys/bus/mdev/devices/<uuid>)) - C(uuid), C(parent) (its parent's name),
      C(type_id), C(status) (C(allocated) when a domain's live or persistent definition has it as a
      C(<hostdev type='mdev'>), else C(free); C(unknown) when libvirt cannot be read), C(instance_uuid) and
      C(instance_name) (that domain), C(attachment_id) (when this collection attached it).
  returned: success
  type: list
  elements: dict
  sample:
    - {uuid: 6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20, parent: mtty, type_id: mtty-2, status: allocated,
       instance_uuid: 8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e, instance_name: web01, attachment_id: null}
pci_device:
  description:
    - The record of the device at O(address), in the form of the elements of RV(pci_devices).
    - V(null) when there is no device at that address.
  returned: when O(address) is given
  type: dict
  sample:
    address: "0000:3b:02.0"
    dev_id: pci_0000_3b_02_0
    dev_type: type-VF
    vendor_id: "8086"
    product_id: "154c"
pci_devices:
  description:
    - The PCI devices of the host that pass the filters, sorted by address.
    - With O(fields), each record has only those keys.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: PCI address, C(DDDD:BB:SS.F), lowercase hex, domain at least 4 digits.
      type: str
      sample: "0000:3b:02.0"
    dev_id:
      description: libvirt's node device name (Nova's C(dev_id)).
      type: str
      sample: pci_0000_3b_02_0
    dev_type:
      description: C(type-VF) for an SR-IOV virtual function, C(type-PF) for an SR-IOV capable physical function, C(type-PCI) otherwise.
      type: str
      sample: type-VF
    vendor_id:
      description: Vendor id, 4 lowercase hex digits.
      type: str
      sample: "8086"
    product_id:
      description: Device (product) id, 4 lowercase hex digits.
      type: str
      sample: "154c"
    vendor_name:
      description: Vendor name from pci.ids; V(null) when the database is missing or does not know the vendor.
      type: str
      sample: Intel Corporation
    product_name:
      description: Device name from pci.ids; V(null) when unknown.
      type: str
      sample: Ethernet Virtual Function 700 Series
    class_id:
      description: PCI class code, 6 lowercase hex digits (class, subclass, programming interface).
      type: str
      sample: "020000"
    subsystem_vendor_id:
      description: Subsystem vendor id, 4 hex digits; V(null) when the device has none.
      type: str
      sample: "8086"
    subsystem_product_id:
      description: Subsystem device id, 4 hex digits; V(null) when the device has none.
      type: str
      sample: "0000"
    driver:
      description: The kernel driver bound to the device; V(null) when none is.
      type: str
      sample: vfio-pci
    numa_node:
      description: NUMA node of the device; V(null) when the platform does not say (the kernel's -1).
      type: int
      sample: 0
    iommu_group:
      description: IOMMU group number; V(null) when the IOMMU is off.
      type: int
      sample: 42
    parent_addr:
      description: For a VF, the address of its PF; V(null) otherwise.
      type: str
      sample: "0000:3b:00.0"
    label:
      description: C(label_<vendor_id>_<product_id>), the device's label in Nova's form.
      type: str
      sample: label_8086_154c
    status:
      description:
        - C(allocated) when a libvirt domain holds it (live or persistent configuration), whether whitelisted or not.
        - C(available) when whitelisted and free; C(unmanaged) when not whitelisted and free.
        - C(unknown) when libvirt could not be reached (see RV(allocations_known)).
        - C(unavailable) when whitelisted and free but not assignable; RV(pci_devices[].unavailable_reason) says why
          (its PF or one of its VFs is allocated, an IOMMU group sibling is in a domain or on a host driver, the entry
          has C(managed) off and the device is not on vfio-pci, or the host uses it).
      type: str
      sample: available
    unavailable_reason:
      description: Why the device is C(unavailable); V(null) for every other status.
      type: str
      sample: "its PF 0000:3b:00.0 is allocated to domain vm-a"
    whitelisted:
      description: Whether an entry of the whitelist matches the device.
      type: bool
      sample: true
    tags:
      description: The keys of the matching whitelist entry that are not match keys (C(physical_network), C(trusted), ...).
      type: dict
      sample: {physical_network: physnet1}
    instance_uuid:
      description: UUID of the domain that holds the device; V(null) when free.
      type: str
      sample: 8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e
    instance_name:
      description: Name of the domain that holds the device; V(null) when free.
      type: str
      sample: web01
    attachment_id:
      description:
        - The attachment's id when this collection attached the device (its C(ua-pci-<uuid>) alias in the domain XML).
        - V(null) when free or attached by other means.
      type: str
      sample: 3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10
    extra_info:
      description:
        - Further facts about the device. A key is present only when it applies to the device, as in Nova's
          C(extra_info); use the C(default) filter when reading an optional key.
      type: dict
      contains:
        revision:
          description: Revision id, 2 hex digits. Always present.
          type: str
        phys_function:
          description: The PF's address. VFs only.
          type: str
        sriov_totalvfs:
          description: How many VFs the PF can have. SR-IOV PFs only.
          type: int
        sriov_numvfs:
          description: How many VFs the PF has now. SR-IOV PFs only.
          type: int
        virt_functions:
          description: The addresses of the PF's VFs now created. SR-IOV PFs only.
          type: list
          elements: str
        link:
          description:
            - PCIe link, C(speed), C(width), C(max_speed), C(max_width).
            - Only with O(pcie_link=true), and only for PCI Express devices.
          type: dict
        netdevs:
          description: Names of the device's network interfaces. Network devices with a driver only.
          type: list
          elements: str
        netdev:
          description: The network interface the PF's settings are read from (the first of C(netdevs)). Network PFs and
            plain network devices with an interface only.
          type: str
        link_state:
          description: That interface's operational state as the kernel reports it (C(up), C(down), ...); V(null) when
            C(ip) cannot tell. Only with C(netdev).
          type: str
        vfs:
          description:
            - The PF's VFs by index, with the settings its driver reports for each - C(index), C(address),
              C(mac_address), C(vlan) (null for none), C(trust), C(spoofchk), C(link_state) (C(auto), C(enable),
              C(disable)); null where the driver does not report it.
            - The kernel gives these over rtnetlink only; the module reads them with iproute2's C(ip -json link show)
              (one call per run). Network PFs with VFs and an interface only; absent when C(ip) cannot read them.
          type: list
          elements: dict
        pf_netdev:
          description: The network interface of the VF's PF (where its MAC, VLAN and trust are set); V(null) when the
            PF has none (for example bound to vfio-pci). VFs of network controllers only.
          type: str
        vf_index:
          description: The VF's index on its PF (C(N) of the PF's C(virtfnN)). VFs of network controllers only.
          type: int
        mdev_types:
          description: The mdev types the device offers as a parent (see RV(mdev_parents)). mdev parents only.
          type: list
          elements: str
        vgpu:
          description:
            - An NVIDIA SR-IOV vGPU VF (kernel 6.8 and later, NVIDIA's vfio variant driver) - C(creatable_types), a list
              of C({id, name}) from C(nvidia/creatable_vgpu_types), and C(current_type), the id in
              C(nvidia/current_vgpu_type) (V(null) for none). NVIDIA VFs with these attributes only.
          type: dict
        is_bridge:
          description: V(true) for PCI bridges; absent for other devices.
          type: bool
        iommu_group_members:
          description: Every address in the device's IOMMU group, itself included. Absent when the IOMMU is off.
          type: list
          elements: str
        allocated_live:
          description: Whether a running domain holds the device now. Allocated devices only.
          type: bool
        allocated_persistent:
          description: Whether a domain's persistent configuration holds the device. Allocated devices only.
          type: bool
        inner_address:
          description: The guest-side PCI address libvirt gave the device. Only while a running domain holds it.
          type: str
        hardware_changes:
          description:
            - How the device differs from what M(passthrough.libvirt.pci_whitelist) recorded when it took it (for
              example C(product_id 10d3 → 10d4)). Whitelisted devices with a change only; such a device is
              V(unavailable) until the change is accepted.
          type: list
          elements: str
        out_of_service:
          description:
            - The out-of-service mark that covers the device - C(kind), C(target), C(mode), C(reason) (see
              RV(out_of_service)). Whitelisted devices under a mark only; a free one is V(unavailable), one a domain
              holds stays V(allocated).
          type: dict
      sample:
        revision: "02"
        phys_function: "0000:3b:00.0"
        iommu_group_members: ["0000:3b:02.0"]
        allocated_live: true
        allocated_persistent: true
        inner_address: "0000:07:00.0"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.passthrough.libvirt.plugins.module_utils._argspec import with_host_options
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import ANY, parse_id
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError, Refused
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostSnapshot
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import LibvirtUnavailable, find_domain
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    DEV_TYPES, STATUSES, DeviceState, NicInfo, PciAddress, PciAddressError, PciDevice,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pciids import PciIds
from ansible_collections.passthrough.libvirt.plugins.module_utils._records import day2_records, device_record, mdev_records, server_device

# The keys of a record of pci_devices (device_record's), in their order: what fields may name.
DEVICE_FIELDS = ('address', 'dev_id', 'dev_type', 'vendor_id', 'product_id', 'vendor_name', 'product_name', 'class_id',
                 'subsystem_vendor_id', 'subsystem_product_id', 'driver', 'numa_node', 'iommu_group', 'parent_addr', 'label',
                 'status', 'unavailable_reason', 'whitelisted', 'tags', 'instance_uuid', 'instance_name', 'attachment_id',
                 'extra_info')


def argument_spec() -> dict:
    return with_host_options(
        address=dict(type='str'),
        domain=dict(type='str'),
        vendor_id=dict(type='str'),
        product_id=dict(type='str'),
        dev_type=dict(type='str', choices=list(DEV_TYPES)),
        status=dict(type='str', choices=list(STATUSES)),
        device_spec=dict(type='list', elements='dict'),
        pcie_link=dict(type='bool', default=False),
        require_libvirt=dict(type='bool', default=True),
        fields=dict(type='list', elements='str', choices=list(DEVICE_FIELDS)),
    )


def run(params: dict) -> tuple[dict, list[str]]:
    """The module's work, free of AnsibleModule: returns (result, warnings); raises the collection's errors."""
    try:
        address = PciAddress.parse(params['address']) if params['address'] is not None else None
    except PciAddressError as exc:
        raise PciAddressError(f'address: {exc}') from None
    filters = {}
    for key in ('vendor_id', 'product_id'):
        if params[key] is not None:
            filters[key] = parse_id(key, params[key])
    for key in ('dev_type', 'status'):
        if params[key] is not None:
            filters[key] = params[key]
    filters = {key: value for key, value in filters.items() if value != ANY}
    fields = _fields(params.get('fields'))

    snapshot = HostSnapshot.read(params['sysfs_root'], params['uri'], params['device_spec'], params['config_path'],
                                 require_libvirt=params['require_libvirt'], pcie_link=params['pcie_link'])
    warnings = []
    if not snapshot.allocations_known:
        warnings.append(f'allocations unknown: {snapshot.libvirt_error}; every device has status "unknown"')
    states = snapshot.states()
    listed = [states[address]] if address is not None and address in states else [] if address is not None else list(states.values())
    domain = None
    if params['domain'] is not None:
        if not snapshot.allocations_known:
            raise LibvirtUnavailable(f'domain: {params["domain"]!r} cannot be looked up: {snapshot.libvirt_error}')
        domain = find_domain(snapshot.domains, params['domain'])
        listed = [state for state in listed if state.allocation is not None and state.allocation.domain_uuid == domain.uuid]
    # The filters are judged on the device states, before any record is built: a host of thousands of functions
    # asked for a few builds a few records.
    matching = [state for state in listed if all(_filtered_value(state, key) == value for key, value in filters.items())]
    matching.sort(key=lambda s: s.device.address)
    devices = _records(snapshot, matching, fields)

    result = dict(
        changed=False,
        hypervisor_hostname=snapshot.hostname,
        allocations_known=snapshot.allocations_known,
        pci_devices=devices,
        stored_device_spec=snapshot.stored_device_spec,
    )
    result.update(day2_records(snapshot.hardware_changes(), snapshot.marks))
    mdevs = snapshot.mdevs
    result['mdev_parents'], result['mdevs'] = mdev_records(snapshot.mdev_parents, mdevs, snapshot.domains if mdevs else [])
    if address is not None:
        result['pci_device'] = devices[0] if devices else None
    if domain is not None:
        held = {hostdev.address: hostdev for hostdev in domain.hostdevs_config + domain.hostdevs_live}   # live wins
        result['server'] = dict(id=domain.uuid, name=domain.name, pci_devices=[
            server_device(domain.uuid, state.device.address, state.allocation.attachment_id, state.allocation.inner_address,
                          state.device, hostdev=held.get(state.device.address), vf_config=snapshot.vf_of(state.device)[2])
            for state in sorted(listed, key=lambda s: s.device.address)])
    return result, warnings


def _filtered_value(state: DeviceState, key: str) -> str:
    """The value a filter compares, as the device's record has it."""
    return state.status if key == 'status' else getattr(state.device, key)


def _fields(given: list[str] | None) -> tuple[str, ...] | None:
    """The record keys asked for, in the order given, each once; None for every key."""
    if given is None:
        return None
    if not given:
        raise Refused('fields: [] selects no key of the records; omit fields to return every key')
    return tuple(dict.fromkeys(given))


def _records(snapshot: HostSnapshot, states: list[DeviceState], fields: tuple[str, ...] | None) -> list[dict]:
    """The devices' records, with the keys of ``fields`` only (None: every key).

    What no asked-for key needs is not read: pci.ids without vendor_name and product_name, IOMMU group
    members, network facts (ip), vGPU and mdev types without extra_info.
    """
    names = snapshot.names if fields is None or 'vendor_name' in fields or 'product_name' in fields else PciIds()
    if fields is not None and 'extra_info' not in fields:
        records = [device_record(state, names, []) for state in states]
    else:
        types_of = {str(parent.address): [t.type_id for t in parent.types] for parent in snapshot.mdev_parents if parent.address}
        records = [device_record(state, names, snapshot.group_members(state.device), *_nic_of(snapshot, state.device),
                                 vgpu=snapshot.vgpu(state.device), mdev_types=types_of.get(str(state.device.address)))
                   for state in states]
    if fields is None:
        return records
    return [{key: record[key] for key in fields} for record in records]


def _nic_of(snapshot: HostSnapshot, device: PciDevice) -> tuple[NicInfo | None, int | None]:
    """A NIC PF's network facts, or a NIC VF's PF's with the VF's index; (None, None) for anything else."""
    if not device.class_id.startswith('02'):
        return None, None
    if device.physfn is None:
        return (snapshot.nic(device.address), None) if device.netdevs else (None, None)
    nic, index, _config = snapshot.vf_of(device)
    return nic, index


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result, warnings = run(module.params)
    except PassthroughError as exc:
        module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
