#!/usr/bin/python
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pci_attachment
short_description: Attach PCI devices to a libvirt domain by alias and count, and detach them
version_added: 0.1.0
description:
  - Gives a libvirt domain PCI devices from the host's whitelist, chosen by alias and count (C("a1:2,b1:1")) or
    named by address, and takes them back - live, in the persistent configuration, or both.
  - O(state=present) is declarative per alias - the domain ends with exactly C(count) devices of each alias named;
    a second identical run changes nothing, a larger count adds the difference, a smaller one removes the
    surplus, most recently attached first. Aliases not named are left alone.
  - Devices are chosen from the free whitelisted devices (see M(passthrough.libvirt.hypervisor_pci_stats)) - PFs
    only when an alias asks for them, a PF and its VFs never together, IOMMU groups whole, and the alias's NUMA
    policy against the domain's C(<numatune>) nodes when it has them. The same inputs choose the same devices.
  - Each device is a C(<hostdev mode='subsystem' type='pci' managed='yes'>) with the user alias
    C(ua-pci-<attachment id>); the request's alias name is kept in the domain's C(<metadata>) under the
    collection's namespace C(urn:passthrough-libvirt:attachments:1).
  - Atomic - if any device of a run fails to attach, every device the run attached is detached again and the
    message says so (or exactly what was left). A host lock serialises runs, so two jobs at once never get the
    same device.
  - A live detach is confirmed by libvirt's device-removed event or by the device leaving the live XML; when
    neither comes within O(timeout) the module fails with "still attached", and the device stays reported.
  - Crash-safe - before the first device is attached, the records of every device the run will attach (attachment
    id, address, alias) are written into the domain's metadata. Every run starts by reconciling - a C(ua-pci-)
    device with a record counts for its alias, a record whose device never landed is dropped (RV(stale_records)),
    and a C(ua-pci-) device without a record is reported (RV(orphans), with a warning) and counts for no alias; it
    can be removed with O(attachment_ids) or O(addresses). Whatever point a run is killed at (an OOM, a lost SSH
    session, a cancelled job, libvirtd restarting), the next identical run ends with exactly the requested count.
  - Never gives a guest a device the host uses (a NIC with an address or the default route, a disk holding a
    mounted filesystem, the boot VGA) - by alias or by address - unless O(force=true). Every module of the
    collection judges this the same way.
  - Mediated devices (mdevs, vGPU slices) are asked for by an alias with C(mdev_type) - a free mdev of a whitelisted
    type is used, or one is created on a parent that can still create one (its UUID is the attachment id), and given
    as C(<hostdev mode='subsystem' type='mdev' model='vfio-pci'>); the mdevs this collection created are removed
    again when they are detached. The collection's C(docs/mdev.md) describes it.
  - NVIDIA SR-IOV vGPU VFs (kernel 6.8 and later) are asked for the same way - the VF's type is set
    (C(nvidia/current_vgpu_type)) before it is attached as a C(<hostdev managed='no'>), and put back after the detach.
  - NIC VFs can be given as network interfaces - an alias's C(interface) key or O(interface) makes each device an
    C(<interface type='hostdev' managed='yes'>) with a MAC address, a VLAN, and the VF's trust, spoof checking and
    link state set on its PF. The collection's C(docs/attachment.md) ("NIC VFs") describes it.
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
extends_documentation_fragment:
  - passthrough.libvirt.common
  - passthrough.libvirt.common.attributes
attributes:
  check_mode:
    support: full
    details: Reports the devices it would attach (without attachment ids) and detach; changes nothing.
  diff_mode:
    support: full
    details:
      - The domain's PCI devices before and after, one line each (address, hostdev or interface, alias, attachment
        id, and an interface's MAC and VLAN); in check mode the after is what the run would leave.
  platform:
    platforms: posix
options:
  domain:
    description:
      - The libvirt domain, by name or UUID. Required with O(state=present), V(absent) and V(query).
      - With O(state=drained) or V(restored), only this domain; omitted, every domain of the host (drained) or every
        drain record (restored).
    type: str
  state:
    description:
      - V(present) - the domain ends with exactly the requested devices of each alias named, or holds every one of
        O(addresses).
      - V(absent) - detach O(attachment_ids), or O(addresses), or up to C(count) devices of each alias of O(request)
        (most recently attached first).
      - V(query) - change nothing, report the domain's devices.
      - V(drained) - for host maintenance - take every attachment of this collection out of every domain of the host
        (or O(domain)), from the running domain and from the persistent definition as each domain has them. Every
        unplug of every domain is asked for first, the domains side by side, and all are confirmed together by their
        device-removed events, so that the guests release their devices together (libvirt's own work on each removal
        follows one after another per domain). What each domain held (aliases and counts, devices attached by address) is written to
        O(config_path) before the first unplug, so that a run that dies half-way leaves it on record, then rewritten
        with what was drained and returned in RV(drained). A device a guest does not release within O(timeout) stays
        attached and recorded, and the run fails naming it (RV(stuck)); the others are drained. Devices attached by
        others are left alone, unless O(force=true).
      - V(restored) - give each drained domain back what it held - the same aliases and counts, on top of what it
        holds now, chosen afresh from the free devices, live and/or persistent as they were (a domain shut off since gets
        them in its definition) - from the records kept on this host, or from O(drained) (the
        records of a drain on another host, for a domain that moved). A device the domain still holds (a drain that
        died before its unplug) is not given twice. Every domain is planned before any change; if one cannot be met
        nothing is attached, and if one fails half-way the earlier ones are undone. The records it restored are
        dropped. Needs O(aliases) for records with aliases.
    type: str
    choices: [present, absent, query, drained, restored]
    default: present
  drained:
    description:
      - With O(state=restored), the drain records to restore (RV(drained) of a drain, possibly on another host) in place
        of the ones kept on this host. The domains must exist here.
    type: list
    elements: dict
  request:
    description:
      - C("alias:count[,alias:count]") or a list of C({alias, count}); needs O(aliases).
    type: raw
  aliases:
    description:
      - Nova-style aliases (C(name), C(vendor_id), C(product_id), C(device_type), C(numa_policy), C(tags)); the
        collection's C(docs/whitelist.md) describes them.
      - The collection's extension C(interface) (a dict with the keys of O(interface), C(mac) only V(auto)) makes the
        alias's devices network interfaces; entries of one alias must agree on it.
    type: list
    elements: dict
  addresses:
    description:
      - PCI addresses to attach (O(state=present)) or detach (O(state=absent)). Each must be whitelisted and free to
        be attached.
    type: list
    elements: str
  attachment_ids:
    description: With O(state=absent), the attachment ids to detach.
    type: list
    elements: str
  live:
    description:
      - Change the running domain. Defaults to V(true) when the domain runs; V(true) on a shut-off domain is an error.
    type: bool
  persistent:
    description:
      - Change the persistent configuration. Defaults to V(true) when the domain is defined; V(true) on a transient
        domain is an error.
    type: bool
  timeout:
    description: Seconds to wait for the guest to release a device on a live detach; more than 0, at most 3600.
    type: float
    default: 30
  device_spec:
    description:
      - The whitelist to choose from, in place of the one stored on the host by M(passthrough.libvirt.pci_whitelist).
    type: list
    elements: dict
  force:
    description:
      - Attach a whitelisted device although the host uses it (its only block). Each such device is named in a
        warning. By alias, such devices are chosen only when no other device fits.
      - Any other block (allocated elsewhere, its PF or VF taken, its IOMMU group) still refuses the device.
      - With O(state=drained), also take out every other tool's PCI device (C(<hostdev type='pci'>) without this
        collection's alias), live and from the persistent definition, recorded by address (C(foreign) in
        RV(drained)); a restore gives it back by address - it must be whitelisted - as an attachment of this
        collection. Another tool's network interface (C(<interface type='hostdev'>)) or mediated device is named in a
        warning and left alone.
    type: bool
    default: false
  mdevctl_dir:
    description:
      - Where mdevctl keeps its mdev definitions. A mediated device this collection creates for a persistent attachment
        gets a definition there (C(<mdevctl_dir>/<parent>/<uuid>), its type and C(start) set to C(auto)), so that
        mdevctl creates it again when its parent appears after a host reboot, before libvirt starts the domain; the
        definition is removed with the mdev. Needs mdevctl on the host to take effect. An empty value writes none.
    type: path
    default: /etc/mdevctl.d
  interface:
    description:
      - Give every device this run attaches as a network interface, C(<interface type='hostdev' managed='yes'>)
        with C(<driver name='vfio'/>), the way Nova gives SR-IOV ports (C(vnic_type=direct)). Each device must be a
        VF of a network controller (class C(02xx)). Only with O(state=present).
      - The keys given here take the place of the same keys of the alias's C(interface); keys left out keep the
        alias's. Devices already attached keep what they were given; a run only sets what it attaches.
      - libvirt sets the MAC address and the VLAN on the VF through its PF when the guest gets the device (a live
        attach, or the domain's start for a persistent-only one) and puts them back when it releases it.
        O(interface.trust), O(interface.spoofchk) and O(interface.link_state) are the PF's settings of the VF, which
        libvirt does not set - the module sets them (with iproute2's C(ip link set <pf> vf <n>)) before the attach,
        records what they were in the attachment's record, and puts them back after the detach (or on a rollback).
    type: dict
    suboptions:
      vlan:
        description: The VLAN tag the PF puts the VF's traffic on (C(<vlan><tag id=...>)), 1 to 4094.
        type: int
      mac:
        description:
          - V(auto) (the default when O(interface) or the alias's C(interface) is set) - a locally administered
            unicast address derived from the attachment id, recorded with the attachment, so the device keeps it
            across domain restarts and re-runs, and never one another interface of the domain has.
          - A list of MAC addresses - one per device the request asks for (for O(request), the sum of its counts;
            for O(addresses), one each), taken in order by the devices this run attaches, skipping those the
            domain's attachments already have. Fewer addresses than devices, a multicast or malformed address,
            or one another interface of the domain already uses is refused before any change.
        type: raw
      trust:
        description: The VF's trust on its PF (lets the guest set promiscuous mode or change its MAC); left as it is when not given.
        type: bool
      spoofchk:
        description: The PF's spoof checking of the VF's source MAC address; left as it is when not given.
        type: bool
      link_state:
        description: The VF's link state on its PF - V(auto) (follows the PF), V(enable) or V(disable); left as it is when not given.
        type: str
        choices: [auto, enable, disable]
seealso:
  - module: passthrough.libvirt.hypervisor_pci_stats
  - module: passthrough.libvirt.pci_device_info
'''

EXAMPLES = r'''
- name: Two A100s and one VF on physnet1 for web01
  passthrough.libvirt.pci_attachment:
    domain: web01
    request: "a100:2,vf-physnet1:1"
    aliases:
      - {name: a100, vendor_id: "10de", product_id: "20b5", numa_policy: preferred}
      - {name: vf-physnet1, vendor_id: "8086", product_id: "154c", device_type: type-VF, tags: {physical_network: physnet1}}
  register: attached

- name: Two NIC VFs on physnet1 as network interfaces on VLAN 100, trusted, with stable MACs
  passthrough.libvirt.pci_attachment:
    domain: web01
    request: "sriov-nic:2"
    aliases:
      - name: sriov-nic
        vendor_id: "8086"
        product_id: "154c"
        device_type: type-VF
        tags: {physical_network: physnet1}
        interface: {vlan: 100, mac: auto, trust: true}

- name: The same with the MAC addresses the network team handed out
  passthrough.libvirt.pci_attachment:
    domain: web01
    request: "sriov-nic:2"
    aliases:
      - {name: sriov-nic, vendor_id: "8086", product_id: "154c", device_type: type-VF, interface: {vlan: 100}}
    interface:
      mac: ["02:00:0a:00:64:01", "02:00:0a:00:64:02"]
      spoofchk: true

- name: Take one device back by its attachment id
  passthrough.libvirt.pci_attachment:
    domain: web01
    state: absent
    attachment_ids: ["{{ attached.attached[0].attachment_id }}"]

- name: Maintenance - take every device of this collection out of web01 (without domain - of every domain of the host)
  passthrough.libvirt.pci_attachment:
    domain: web01
    state: drained
    timeout: 60
  register: drain

- name: After the maintenance - give web01 back what it held (the same aliases and counts)
  passthrough.libvirt.pci_attachment:
    domain: web01
    state: restored
    aliases:
      - {name: a100, vendor_id: "10de", product_id: "20b5"}
      - {name: vf-physnet1, vendor_id: "8086", product_id: "154c", device_type: type-VF, tags: {physical_network: physnet1}}
      - {name: sriov-nic, vendor_id: "8086", product_id: "154c", device_type: type-VF, interface: {vlan: 100}}
'''

RETURN = r'''
pci_devices:
  description: The domain's PCI devices after the run, in the shape of Nova's C(os-pci) attachments.
  returned: with O(state=present), V(absent) and V(query)
  type: list
  elements: dict
  contains:
    attachment_id:
      description: The attachment's id; V(null) for a device this collection did not attach.
      type: str
      sample: 3f1c2a9e-6b0d-4f57-9a7e-2d51c8e0b4a1
    serverId:
      description: The domain's UUID.
      type: str
      sample: 8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e
    dev_id:
      description: C(pci_<domain>_<bus>_<slot>_<function>).
      type: str
      sample: pci_0000_3b_02_1
    address:
      description: The host PCI address.
      type: str
      sample: "0000:3b:02.1"
    inner_address:
      description:
        - The guest-side PCI address libvirt assigned - from the live definition when the domain runs, else from the
          persistent one (libvirt assigns addresses there too). V(null) when it has assigned none.
      type: str
      sample: "0000:07:00.0"
    vendor_id:
      description: Vendor id from the host's sysfs.
      type: str
      sample: "8086"
    product_id:
      description: Product id from the host's sysfs.
      type: str
      sample: 154c
    alias:
      description: The request's alias the device serves; V(null) when attached by address or by someone else.
      type: str
      sample: vf
    interface:
      description: Whether the device is a network interface (C(<interface type='hostdev'>)) rather than a C(<hostdev>).
      type: bool
      returned: for VFs of network controllers (class C(02xx))
    mac_address:
      description:
        - The VF's MAC address - the interface's C(<mac>) when it is one, else what its PF reports for it.
      type: str
      returned: for VFs of network controllers (class C(02xx))
      sample: "02:5a:1c:3e:07:9d"
    vlan:
      description: The VF's VLAN - the interface's C(<vlan><tag>) when it is one, else its PF's; V(null) for none.
      type: int
      returned: for VFs of network controllers (class C(02xx))
      sample: 100
    trust:
      description: The VF's trust as its PF reports it (read with C(ip -json link show)); V(null) when unknown.
      type: bool
      returned: for VFs of network controllers (class C(02xx))
    spoofchk:
      description: The PF's spoof checking of the VF; V(null) when unknown.
      type: bool
      returned: for VFs of network controllers (class C(02xx))
    mdev_uuid:
      description:
        - A mediated device's UUID. A mediated device has no C(address), C(dev_id), C(vendor_id) or C(product_id) (all
          V(null)); its C(inner_address) is the guest-side address of its vfio-pci device.
      type: str
      returned: for mediated devices
    mdev_type:
      description: A mediated device's type id.
      type: str
      returned: for mediated devices
      sample: mtty-2
    mdev_parent:
      description: A mediated device's parent (a PCI address, or a virtual parent such as C(mtty)).
      type: str
      returned: for mediated devices
attached:
  description: The devices this run attached (in check mode, would attach).
  returned: with O(state=present), V(absent) and V(query)
  type: list
  elements: dict
  contains:
    attachment_id:
      description: The new attachment's id; V(null) in check mode, where none is made.
      type: str
      sample: 3f1c2a9e-6b0d-4f57-9a7e-2d51c8e0b4a1
    address:
      description: The host PCI address.
      type: str
      sample: "0000:3b:02.1"
    alias:
      description: The request's alias; V(null) for a device named by address.
      type: str
      sample: vf
    interface:
      description: V(true) for a network interface; absent for a plain C(<hostdev>).
      type: bool
      returned: for network interfaces
    mac_address:
      description: Its MAC address; V(null) in check mode when it is V(auto) (chosen with the attachment id).
      type: str
      returned: for network interfaces
      sample: "02:5a:1c:3e:07:9d"
    vlan:
      description: Its VLAN tag; V(null) for none.
      type: int
      returned: for network interfaces
    trust:
      description: The trust this run set on its PF; V(null) when left as it was.
      type: bool
      returned: for network interfaces
    spoofchk:
      description: The spoof checking this run set on its PF; V(null) when left as it was.
      type: bool
      returned: for network interfaces
    link_state:
      description: The link state this run set on its PF; V(null) when left as it was.
      type: str
      returned: for network interfaces
    mdev_uuid:
      description: A mediated device's UUID (V(null) in check mode for one that would be created).
      type: str
      returned: for mediated devices
    mdev_type:
      description: A mediated device's type id.
      type: str
      returned: for mediated devices
      sample: mtty-2
    mdev_parent:
      description: A mediated device's parent (a PCI address, or a virtual parent such as C(mtty)).
      type: str
      returned: for mediated devices
    vgpu_type:
      description: The vGPU type id an NVIDIA vGPU VF was given.
      type: int
      returned: for NVIDIA vGPU VFs
detached:
  description: The devices this run detached (in check mode, would detach).
  returned: with O(state=present), V(absent) and V(query)
  type: list
  elements: dict
  contains:
    attachment_id:
      description: The attachment's id; V(null) for a device this collection did not attach.
      type: str
      sample: 3f1c2a9e-6b0d-4f57-9a7e-2d51c8e0b4a1
    address:
      description: The host PCI address.
      type: str
      sample: "0000:3b:02.1"
    alias:
      description: The alias the device served; V(null) when unknown.
      type: str
      sample: vf
    confirmed_by:
      description:
        - What showed the device gone - V(device-removed event) or V(gone from the live XML) for a live detach,
          V(persistent configuration) for a configuration-only one. Absent in check mode.
      type: str
      sample: device-removed event
    interface:
      description: V(true) for a network interface; absent for a plain C(<hostdev>).
      type: bool
      returned: for network interfaces
    mac_address:
      description: Its MAC address.
      type: str
      returned: for network interfaces
      sample: "02:5a:1c:3e:07:9d"
    vlan:
      description: Its VLAN tag; V(null) for none.
      type: int
      returned: for network interfaces
    trust:
      description: The trust it was given (put back to what it was before, after the detach).
      type: bool
      returned: for network interfaces
    spoofchk:
      description: The spoof checking it was given (put back after the detach).
      type: bool
      returned: for network interfaces
    link_state:
      description: The link state it was given (put back after the detach).
      type: str
      returned: for network interfaces
    mdev_uuid:
      description: A mediated device's UUID; the mdev is removed when this collection created it.
      type: str
      returned: for mediated devices
    mdev_type:
      description: A mediated device's type id.
      type: str
      returned: for mediated devices
      sample: mtty-2
    mdev_parent:
      description: A mediated device's parent (a PCI address, or a virtual parent such as C(mtty)).
      type: str
      returned: for mediated devices
    vgpu_type:
      description: The vGPU type id an NVIDIA vGPU VF was given.
      type: int
      returned: for NVIDIA vGPU VFs
orphans:
  description:
    - Devices in the domain with this collection's C(ua-pci-) alias but no record in its metadata (left by an older
      version's crash, or added by another tool). They count for no alias; O(attachment_ids) or O(addresses) remove
      them. Each is also named in a warning.
  returned: with O(state=present), V(absent) and V(query)
  type: list
  elements: dict
  contains:
    attachment_id:
      description: The id in its alias.
      type: str
    address:
      description: The host PCI address; V(null) for a mediated device.
      type: str
    mdev_uuid:
      description: A mediated device's UUID.
      type: str
      returned: for mediated devices
  sample: []
stale_records:
  description:
    - Ids of metadata records whose device is not in the domain (a run died between recording its intent and
      attaching), dropped by this run (in check mode and with O(state=query), that would be dropped).
  returned: with O(state=present), V(absent) and V(query)
  type: list
  elements: str
  sample: []
domain:
  description: The domain.
  returned: with O(state=present), V(absent) and V(query)
  type: dict
  contains:
    name:
      description: Its name.
      type: str
      sample: web01
    uuid:
      description: Its UUID.
      type: str
      sample: 8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e
drained:
  description:
    - With O(state=drained), what each domain gave up - C(domain), C(uuid), C(aliases) (alias name to count),
      C(request) (the same as C("alias:count,...")), C(addresses) (devices it had by address, without an alias) and
      C(devices) (each detached device's entry, as in RV(detached), with C(live), C(persistent) and C(confirmed_by);
      another tool's, drained with O(force), has C(foreign=true) and no C(attachment_id), and is in C(addresses)).
      The same records are kept in O(config_path) for O(state=restored); give them as O(drained) to restore on
      another host.
  returned: with O(state=drained)
  type: list
  elements: dict
  sample: [{domain: web01, uuid: 8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e, aliases: {a100: 2}, request: "a100:2", addresses: [], devices: []}]
stuck:
  description:
    - With O(state=drained), each device a guest did not release within O(timeout) - C(domain), C(uuid),
      C(attachment_id) (null for another tool's device, drained with O(force)), C(label), C(reason). It stays attached
      and recorded; the run fails.
  returned: with O(state=drained)
  type: list
  elements: dict
seconds:
  description: With O(state=drained), how long the detaches took, from the first unplug asked for to the last confirmed.
  returned: with O(state=drained)
  type: float
  sample: 0.62
restored:
  description: With O(state=restored), each domain given back what it held - C(domain), C(uuid), C(request) and C(attached).
  returned: with O(state=restored)
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.passthrough.libvirt.plugins.module_utils._argspec import PCI_ATTACHMENT_RULES, with_host_options
from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import AttachmentRun, DrainRun, parse_options
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import DomainHandle
from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs


def argument_spec() -> dict:
    return with_host_options(
        domain=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent', 'query', 'drained', 'restored'], default='present'),
        drained=dict(type='list', elements='dict'),
        request=dict(type='raw'),
        aliases=dict(type='list', elements='dict'),
        addresses=dict(type='list', elements='str'),
        attachment_ids=dict(type='list', elements='str'),
        live=dict(type='bool'),
        persistent=dict(type='bool'),
        timeout=dict(type='float', default=30),
        force=dict(type='bool', default=False),
        device_spec=dict(type='list', elements='dict'),
        mdevctl_dir=dict(type='path', default='/etc/mdevctl.d'),
        interface=dict(type='dict', options=dict(
            vlan=dict(type='int'),
            mac=dict(type='raw'),
            trust=dict(type='bool'),
            spoofchk=dict(type='bool'),
            link_state=dict(type='str', choices=['auto', 'enable', 'disable']),
        )),
    )


def run(params: dict, check_mode: bool, open_domain=DomainHandle, mdev_sysfs=MdevSysfs) -> dict:
    """The module's work, free of AnsibleModule; raises the collection's errors."""
    if params['state'] in ('drained', 'restored'):
        return DrainRun(params, check_mode, open_domain, mdev_sysfs).run()
    return AttachmentRun(params, parse_options(params), check_mode, open_domain, mdev_sysfs).run()


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **PCI_ATTACHMENT_RULES)
    try:
        result = run(dict(module.params, _diff=module._diff), module.check_mode)
    except PassthroughError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop('warnings'):
        module.warn(warning)
    if result.get('failed'):
        module.fail_json(**result)       # a drain a guest did not let finish: what was drained is still returned
    module.exit_json(**result)


if __name__ == '__main__':
    main()
