#!/usr/bin/python
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: hypervisor_pci_stats
short_description: The PCI device pools of a libvirt/KVM host - free, allocated, unavailable
version_added: 0.1.0
description:
  - Groups the host's whitelisted PCI devices into pools, the way Nova's C(pci_stats) does - one pool per vendor,
    product, device type, NUMA node, tags of the matching whitelist entry, and for VFs their PF - and counts in
    each the free devices (RV(hypervisor.pci_stats[].count)), all of them, the allocated ones and the unavailable
    ones.
  - Sets the fact C(pci_stats) so that a fact cache, AWX and M(passthrough.libvirt.pci_fleet) keep it.
  - With O(aliases), also says how many devices of each alias the host can still give.
  - The statuses are those of M(passthrough.libvirt.pci_device_info); allocations are read from libvirt, so the
    module fails when libvirt cannot be reached rather than report devices as free that a domain may hold.
  - This module never changes anything on the host.
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
extends_documentation_fragment:
  - passthrough.libvirt.common
  - passthrough.libvirt.common.attributes
  - passthrough.libvirt.common.info_module
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
options:
  device_spec:
    description:
      - The whitelist to build pools from, in place of the one stored on the host by
        M(passthrough.libvirt.pci_whitelist). Same form as in M(passthrough.libvirt.pci_device_info). Nothing is stored.
    type: list
    elements: dict
  aliases:
    description:
      - Nova-style aliases (C(name), C(vendor_id), C(product_id), C(device_type), C(numa_policy), C(tags)); the
        collection's C(docs/whitelist.md) describes them.
      - When given, RV(aliases_free) says how many devices of each alias the host can still give.
    type: list
    elements: dict
seealso:
  - module: passthrough.libvirt.pci_device_info
  - module: passthrough.libvirt.pci_fleet
'''

EXAMPLES = r'''
- name: Pools of every compute host (the fact pci_stats is set)
  passthrough.libvirt.hypervisor_pci_stats:
    aliases:
      - {name: a100, vendor_id: "10de", product_id: "20b5"}
      - {name: x710-vf, vendor_id: "8086", product_id: "154c", device_type: type-VF}
  register: stats

- name: Free A100s on this host
  ansible.builtin.debug:
    msg: "{{ stats.aliases_free.a100 }}"
'''

RETURN = r'''
hypervisor:
  description: The host in the shape of Nova's C(os-pci) hypervisor extension.
  returned: success
  type: dict
  contains:
    hypervisor_hostname:
      description: The hostname libvirt reports (the host's own name when libvirt gives none).
      type: str
      sample: compute-07
    pci_stats:
      description: One entry per pool, sorted by vendor, product, type, NUMA node, PF and tags.
      type: list
      elements: dict
      contains:
        count:
          description: Free devices (status C(available)), Nova's meaning of C(count).
          type: int
          sample: 2
        total:
          description: Every whitelisted device of the pool, whatever its status.
          type: int
          sample: 4
        allocated:
          description: Devices a domain holds (live or persistent configuration).
          type: int
          sample: 1
        unavailable:
          description: Whitelisted, free devices that cannot be given now (see M(passthrough.libvirt.pci_device_info)).
          type: int
          sample: 1
        vendor_id:
          description: Vendor id, 4 lowercase hex digits.
          type: str
          sample: "8086"
        product_id:
          description: Product (device) id, 4 lowercase hex digits.
          type: str
          sample: "154c"
        dev_type:
          description:
            - C(type-PCI), C(type-PF) or C(type-VF) for whole devices; C(type-MDEV) for a pool of mediated devices - one per
              whitelisted type of an mdev parent (a whitelist entry with C(mdev_types)), as Nova reports a VGPU
              inventory per physical GPU. Its C(count) is what the parent can still create (C(available_instances))
              plus the mdevs of the type that exist and no domain holds.
            - C(type-VGPU) for a pool of NVIDIA SR-IOV vGPU VFs (kernel 6.8 and later) - one per PF and whitelisted vGPU
              type; a free VF counts in the pool of every admitted type it can take.
          type: str
          sample: type-VF
        numa_node:
          description: NUMA node of the pool's devices; V(null) when the firmware gives none.
          type: int
          sample: 0
        parent_addr:
          description: For a pool of VFs, the address of their PF; for an mdev pool, its parent's name (a PCI address or a
            virtual parent such as C(mtty)); V(null) otherwise.
          type: str
          sample: "0000:3b:00.0"
        mdev_type:
          description: The mdev type id of an mdev pool (for example C(nvidia-470) or C(mtty-2)), the vGPU type id of a
            C(type-VGPU) pool. mdev and vGPU pools only.
          type: str
        mdev_name:
          description: The type's name as the parent gives it (for example C(GRID A100-4C)). mdev pools only.
          type: str
        device_api:
          description: The type's C(device_api) (C(vfio-pci) for what libvirt attaches). mdev pools only.
          type: str
        free_mdevs:
          description: The UUIDs of the mdevs of the type that exist and no domain holds. mdev pools only.
          type: list
          elements: str
        tags:
          description: The tags of the whitelist entry that matched the pool's devices.
          type: dict
          sample: {physical_network: physnet1}
        free_addresses:
          description: The addresses of the free devices, sorted.
          type: list
          elements: str
          sample: ["0000:3b:02.2", "0000:3b:02.3"]
        unavailable_reasons:
          description:
            - Why the pool's unavailable devices cannot be given now - each reason (the C(unavailable_reason) of
              M(passthrough.libvirt.pci_device_info)) with how many devices it holds back; empty when none is unavailable.
            - M(passthrough.libvirt.pci_fleet) adds them up across hosts and shows them in its report.
          type: dict
          sample: {"IOMMU group 24: 0000:af:00.1 is held by the host driver snd_hda_intel": 1}
        vendor_name:
          description: Vendor name from pci.ids; V(null) when the database is missing or does not know the vendor.
          type: str
          sample: Intel Corporation
        product_name:
          description: Device name from pci.ids; V(null) when unknown.
          type: str
          sample: Ethernet Virtual Function 700 Series
    hardware_changes:
      description:
        - The devices M(passthrough.libvirt.pci_whitelist) recorded that are not what they were - C(address) and
          C(changes) (C(product_id 10d3 → 10d4), C(IOMMU group 12 → 14), C(device removed), ...). Until the change
          is accepted (O(passthrough.libvirt.pci_whitelist#module:accept_hardware_changes)) such a device counts as
          unavailable in its pool.
      type: list
      elements: dict
      sample: [{address: "0000:3c:00.0", changes: ["subsystem_product_id 1533 → 1534"]}]
    out_of_service:
      description:
        - The out-of-service marks stored on the host (O(passthrough.libvirt.pci_whitelist#module:out_of_service)) -
          C(kind) (V(address), V(pf), V(alias) or V(host)), C(target), C(mode) and C(reason). The devices they
          cover count as unavailable, with the mark as the reason; a mark on the host covers its mdev and vGPU pools too.
      type: list
      elements: dict
      sample: [{kind: host, target: null, mode: drain, reason: "BIOS update, change 2231"}]
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    pci_stats:
      description: The same list as RV(hypervisor.pci_stats).
      type: list
      elements: dict
    pci_hypervisor_hostname:
      description: The same value as RV(hypervisor.hypervisor_hostname).
      type: str
    pci_hardware_changes:
      description: The same list as RV(hypervisor.hardware_changes).
      type: list
      elements: dict
    pci_out_of_service:
      description: The same list as RV(hypervisor.out_of_service).
      type: list
      elements: dict
aliases_free:
  description: For each alias of O(aliases), how many devices of it the host can still give (one alias at a time).
  returned: when O(aliases) is given
  type: dict
  sample: {a100: 1, x710-vf: 2}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases
from ansible_collections.passthrough.libvirt.plugins.module_utils._argspec import with_host_options
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostSnapshot
from ansible_collections.passthrough.libvirt.plugins.module_utils._records import day2_records
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import (
    candidates,
    free_per_alias,
    mdev_free_per_alias,
    mdev_pools,
    pools,
    vgpu_pools,
)


def argument_spec() -> dict:
    return with_host_options(
        device_spec=dict(type='list', elements='dict'),
        aliases=dict(type='list', elements='dict'),
    )


def run(params: dict) -> dict:
    """The module's work, free of AnsibleModule; raises the collection's errors."""
    aliases = parse_aliases(params['aliases'])
    snapshot = HostSnapshot.read(params['sysfs_root'], params['uri'], params['device_spec'], params['config_path'])
    states = snapshot.states()
    stats = pools(states, snapshot.names)
    slicing = any(entry.is_mdev for entry in snapshot.whitelist.entries)
    parents = snapshot.mdev_parents if slicing else []
    slices = mdev_pools(parents, snapshot.mdevs, snapshot.domains, snapshot.whitelist, snapshot.devices, snapshot.names,
                        snapshot.marks) if parents else []
    vgpus = snapshot.vgpus if slicing else {}
    if vgpus:
        slices += vgpu_pools(vgpus, snapshot.devices, snapshot.allocations, snapshot.whitelist, snapshot.names, snapshot.marks)
    stats += slices
    day2 = day2_records(snapshot.hardware_changes(), snapshot.marks)
    result = dict(
        changed=False,
        hypervisor=dict(hypervisor_hostname=snapshot.hostname, pci_stats=stats, **day2),
        ansible_facts=dict(pci_stats=stats, pci_hypervisor_hostname=snapshot.hostname,
                           pci_hardware_changes=day2['hardware_changes'], pci_out_of_service=day2['out_of_service']),
    )
    if params['aliases'] is not None:
        result['aliases_free'] = free_per_alias(aliases, candidates(states))
        result['aliases_free'].update(mdev_free_per_alias(aliases, slices, parents, snapshot.devices))
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run(module.params)
    except PassthroughError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
