#!/usr/bin/python
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pci_whitelist
short_description: Declare which PCI devices guests may have, and make the host ready for them
version_added: 0.1.0
description:
  - Stores the whitelist (Nova's C(device_spec)) on the host, binds the devices it matches to O(driver)
    (vfio-pci by default) and creates SR-IOV VFs; gives devices back to the driver they had before when they
    leave the whitelist or with O(state=absent).
  - Binding follows the kernel's recipe - C(driver_override), unbind, C(drivers_probe) - and checks the driver
    link afterwards. The driver each device had is recorded in O(config_path), so it can be given back.
  - Never takes a device the host itself uses, unless O(force=true) - a NIC with an address, or whose bond or
    bridge has one, or that carries the default route; a disk with a mounted filesystem or active swap (also
    under device-mapper or md); the boot VGA device - and never leaves an IOMMU group half bound. Each refusal
    names the device and the reason, and nothing at all is changed.
  - Every decision is made before the first change. If a change fails half-way, every change of this run is
    undone and the message says so, or says exactly what could not be undone.
  - Devices a libvirt domain holds are left alone (libvirt has them on vfio-pci while the domain runs).
  - Runs on the host are serialised with a lock beside O(config_path).
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
extends_documentation_fragment:
  - passthrough.libvirt.common
  - passthrough.libvirt.common.attributes
attributes:
  check_mode:
    support: full
    details:
      - VFs that O(sriov) would create do not exist yet in check mode, so whether the whitelist matches them
        is decided on the real run.
  diff_mode:
    support: full
  platform:
    support: full
    platforms: posix
options:
  state:
    description:
      - V(present) stores O(device_spec), binds what it matches and sets the VF counts of O(sriov).
      - V(absent) removes the stored whitelist, gives every device this collection bound back to its
        original driver, sets the PFs of O(sriov) back to 0 VFs, and removes the udev rules.
    type: str
    choices: [present, absent]
    default: present
  device_spec:
    description:
      - The whitelist, in the form of Nova's C([pci] device_spec); see
        M(passthrough.libvirt.pci_device_info) and the collection's C(docs/whitelist.md) for the keys.
      - A PF's exact C(address) or its C(devname) also names its VFs; C("0000:3b:00.0#0-3") names only
        those VFs.
      - With O(state=present) and no O(device_spec), the stored whitelist stays as it is (a run that only sets
        O(out_of_service) or O(accept_hardware_changes)); one of the three is required with O(state=present).
    type: list
    elements: dict
  accept_hardware_changes:
    description:
      - This module records what each whitelisted device is (ids, subsystem ids, class, IOMMU group and its
        members, PF, VF index and VF count). A device found different later - a card swapped, a firmware
        update that changed an id, a kernel that regrouped the IOMMU, a VF count changed by something else,
        the device gone - is V(unavailable) in every module with the reason C(hardware changed - <what, old →
        new>), and this module neither binds it nor gives it back, until the change is accepted here.
      - The PCI addresses whose changes to accept (their new identity is recorded; a gone device's record is
        dropped), or V(all). Changes this run makes itself (VF counts of O(sriov)) need no acceptance.
    type: list
    elements: str
  out_of_service:
    description:
      - Out-of-service marks, stored on the host; the list replaces the stored one (V([]) clears every mark,
        omitted keeps them). A marked device that no domain holds is V(unavailable) in every module with the
        reason C(out of service (<mode>, <what>) - <reason>); pools count it so and M(passthrough.libvirt.pci_fleet)
        never proposes it. Devices domains hold keep their status and report the mark.
      - Each mark names exactly one of C(address) (a device), C(pf) (a PF by address or interface name, with
        all its VFs), C(alias) (every device an alias of O(aliases) matches; for an alias of mediated devices, its
        C(mdev_type) on every parent it matches) or C(host=true) (every device of the host, and its mediated
        devices), with C(reason) (text, required) and C(mode) - V(no-new) (the default - nothing new is given, what
        guests hold stays) or V(drain) (the marked devices are also taken out of every domain that holds them, as
        by M(passthrough.libvirt.pci_attachment) with O(state=drained); so are the mediated devices domains hold
        that a mark covers - by their type for an alias mark, by their PCI parent for an address, PF or host mark).
      - O(state=absent) removes every mark.
    type: list
    elements: dict
  timeout:
    description:
      - Seconds a guest has to release a device that a V(drain) mark of O(out_of_service) takes out (more than 0, at
        most 3600). A device not released in time stays attached and the run fails naming it (RV(stuck)).
    type: float
    default: 30
  aliases:
    description:
      - The aliases that O(out_of_service) marks with C(alias) name, in the form of
        M(passthrough.libvirt.pci_attachment)'s O(passthrough.libvirt.pci_attachment#module:aliases). A mark keeps
        its alias's entries, so later runs match by them.
    type: list
    elements: dict
  driver:
    description:
      - The driver to bind whitelisted devices to.
      - V(null) (or an empty string, which is what Ansible makes of V(null) for a string option with a
        default) records the whitelist without touching any binding.
    type: str
    default: vfio-pci
  sriov:
    description:
      - VF counts to set, one entry per PF. Changing a count destroys every VF of the PF first (the kernel
        goes through 0), so it is refused while a domain holds one of its VFs or the host uses one.
    type: list
    elements: dict
    suboptions:
      pf:
        description: The PF, by PCI address or by one of its network interface names.
        type: str
        required: true
      numvfs:
        description: How many VFs, from 0 to the PF's C(sriov_totalvfs).
        type: int
        required: true
  persist:
    description:
      - Write udev rules to O(persist_path) so that the bindings and VF counts come back after a reboot or a
        hot-plug, in the way of C(driverctl). V(false) removes the rules file if this module wrote one.
    type: bool
    default: false
  persist_path:
    description: Where the udev rules are written with O(persist=true).
    type: path
    default: /etc/udev/rules.d/90-passthrough-libvirt.rules
  force:
    description:
      - Take devices the host uses (a NIC with an address or the default route, a disk with a mounted
        filesystem, the boot VGA device). The host may lose its network, its storage or its console.
      - Half-bound IOMMU groups and devices held by domains are refused even with V(true).
    type: bool
    default: false
notes:
  - Needs root. The vfio-pci module must be loaded (the C(pci_host) role loads it).
seealso:
  - module: passthrough.libvirt.pci_device_info
  - name: VFIO - the kernel's documentation
    description: How devices are given to user space (and guests) through vfio-pci, and what IOMMU groups mean.
    link: https://docs.kernel.org/driver-api/vfio.html
'''

EXAMPLES = r'''
- name: Give the A100s and VFs 0-3 of ens1f0 to guests, with 8 VFs on ens1f0
  passthrough.libvirt.pci_whitelist:
    device_spec:
      - vendor_id: "10de"
        product_id: "20b5"
      - devname: "ens1f0#0-3"
        physical_network: physnet1
    sriov:
      - pf: ens1f0
        numvfs: 8
    persist: true

- name: See what would change
  passthrough.libvirt.pci_whitelist:
    device_spec:
      - address: "0000:af:00.*"
  check_mode: true
  diff: true

- name: Take a flapping NIC's PF and its VFs out of service (nothing new lands on them; the whitelist stays)
  passthrough.libvirt.pci_whitelist:
    out_of_service:
      - {pf: ens1f0, reason: "flapping link, ticket 4711"}

- name: The card in 0000:3b:00.0 was replaced on purpose - accept its new identity
  passthrough.libvirt.pci_whitelist:
    accept_hardware_changes: ["0000:3b:00.0"]

- name: Give everything back to the host
  passthrough.libvirt.pci_whitelist:
    state: absent
'''

RETURN = r'''
actions:
  description: What the run did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: ["set 0000:3b:00.0 to 8 VFs (now 4)", "bind 0000:3c:00.0 to vfio-pci (now nvidia)", "store the whitelist"]
bound:
  description: Addresses bound to O(driver) by this run.
  returned: always
  type: list
  elements: str
  sample: ["0000:3c:00.0"]
restored:
  description: Addresses given back to their original driver by this run.
  returned: always
  type: list
  elements: str
  sample: ["0000:86:00.0"]
sriov:
  description: VF counts changed by this run.
  returned: always
  type: list
  elements: dict
  contains:
    pf:
      description: The PF's address.
      type: str
    numvfs:
      description: The new count.
      type: int
    previous:
      description: The count before.
      type: int
  sample: [{pf: "0000:3b:00.0", numvfs: 8, previous: 4}]
unavailable:
  description:
    - The devices the whitelist matches that no guest can be given now, and why - the same judgement
      M(passthrough.libvirt.pci_device_info), M(passthrough.libvirt.hypervisor_pci_stats) and
      M(passthrough.libvirt.pci_attachment) make (a device the host uses, a sibling on a host driver, ...).
    - Judged after the run's changes (in check mode, before them).
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The device.
      type: str
    reason:
      description: Why no guest can have it.
      type: str
  sample: [{address: "0000:19:00.0", reason: "the host uses it: network interface eno1 carries the default route"}]
drained:
  description:
    - What V(drain) marks of O(out_of_service) took out of domains (devices domains held that a drain mark covers),
      in the form of M(passthrough.libvirt.pci_attachment)'s RV(passthrough.libvirt.pci_attachment#module:drained);
      kept on the host for O(passthrough.libvirt.pci_attachment#module:state=restored). In check mode, what would be.
  returned: always
  type: list
  elements: dict
stuck:
  description: The devices a drain mark covers that a guest did not release within O(timeout), and why.
  returned: when a drain did not finish
  type: list
  elements: dict
hardware_changes:
  description:
    - The whitelisted devices found different from what this module recorded when it took them, with what
      changed - those accepted by O(accept_hardware_changes) in this run (recorded anew) and those still held
      back (never bound, V(unavailable) everywhere).
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The device.
      type: str
    changes:
      description: What changed, one phrase each (C(product_id 10d3 → 10d4), C(IOMMU group 12 → 14), C(device removed), ...).
      type: list
      elements: str
    accepted:
      description: Whether this run accepted the change.
      type: bool
  sample: [{address: "0000:3b:00.0", changes: ["subsystem_product_id 0000 → 1533"], accepted: false}]
out_of_service:
  description: The out-of-service marks now stored on the host.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(address), V(pf), V(alias) or V(host).
      type: str
    target:
      description: The device or PF address, or the alias name; V(null) for the host.
      type: str
    mode:
      description: V(no-new) or V(drain).
      type: str
    reason:
      description: Why, as the operator gave it.
      type: str
  sample: [{kind: pf, target: "0000:3b:00.0", mode: no-new, reason: "flapping link, ticket 4711"}]
whitelist:
  description: The whitelist now stored on the host; V(null) after O(state=absent).
  returned: always
  type: list
  elements: dict
  sample: [{vendor_id: "10de", product_id: "20b5"}]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.passthrough.libvirt.plugins.module_utils._argspec import PCI_WHITELIST_RULES, with_host_options
from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import DEFAULT_MDEVCTL_DIR, DrainRun, check_timeout
from ansible_collections.passthrough.libvirt.plugins.module_utils._binding import DEFAULT_RULES_PATH, WhitelistRun
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError


def argument_spec() -> dict:
    return with_host_options(
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        device_spec=dict(type='list', elements='dict'),
        driver=dict(type='str', default='vfio-pci'),
        sriov=dict(type='list', elements='dict', options=dict(pf=dict(type='str', required=True), numvfs=dict(type='int', required=True))),
        accept_hardware_changes=dict(type='list', elements='str'),
        out_of_service=dict(type='list', elements='dict'),
        aliases=dict(type='list', elements='dict'),
        timeout=dict(type='float', default=30),
        persist=dict(type='bool', default=False),
        persist_path=dict(type='path', default=DEFAULT_RULES_PATH),
        force=dict(type='bool', default=False),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True, **PCI_WHITELIST_RULES)
    # driver: null reaches a module as '' (Ansible's string conversion of None): both mean record only.
    params = dict(module.params, _diff=module._diff, driver=module.params['driver'] or None)
    try:
        result = run(params, module.check_mode)
    except PassthroughError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop('warnings'):
        module.warn(warning)
    if result.get('failed'):
        module.fail_json(**result)
    module.exit_json(**result)


def run(params: dict, check_mode: bool) -> dict:
    """The whitelist run, then the drain of what drain marks cover and domains hold."""
    check_timeout(params.get('timeout', 30))        # before any change: a refused drain must not follow a stored mark
    result = WhitelistRun(params, check_mode).run()
    to_drain = result.pop('drain_addresses')
    result['drained'] = []
    if to_drain:
        # force=False: this run's force is the whitelist's (take a device the host uses), not a drain's (other tools'
        # devices too); a drain mark takes this collection's attachments only.
        drain = DrainRun(dict(params, state='drained', domain=None, request=None, addresses=None, attachment_ids=None,
                              interface=None, live=None, persistent=None, drained=None, mdevctl_dir=DEFAULT_MDEVCTL_DIR,
                              force=False),
                         check_mode, only=set(to_drain)).run()
        result['drained'] = drain['drained']
        result['changed'] = result['changed'] or drain['changed']
        result['actions'] += [f'drain {len(entry["devices"])} device(s) from {entry["domain"]}' for entry in drain['drained']]
        result['warnings'] += drain['warnings']
        if drain.get('failed'):
            result.update(failed=True, msg=drain['msg'], stuck=drain['stuck'])
    return result


if __name__ == '__main__':
    main()
