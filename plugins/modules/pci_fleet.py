#!/usr/bin/python
# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pci_fleet
short_description: The PCI pools of the whole fleet, on the controller - totals, per pool, per host, and where a request fits
version_added: 0.1.0
description:
  - Reads the C(pci_stats) fact that M(passthrough.libvirt.hypervisor_pci_stats) sets on each host, from hostvars,
    and aggregates it - per host, per pool across the fleet (vendor, product, device type and tags), and in total.
  - Runs on the controller, once for the play, whatever the number of hosts; it connects to no host.
  - Hosts whose C(pci_stats) are missing (the module has not run on them, or failed, or their facts are not cached)
    are listed in RV(fleet.missing) and shown with C(status=missing), never silently dropped.
  - For a host whose facts lack C(pci_stats), it reads the C(jsonfile) fact cache directory itself, in both the plain
    form AWX and ansible-runner write and the wrapped form of ansible-core 2.19, since ansible-core 2.19 reads only its
    own. See O(plain_cache) for the other direction.
  - With O(request) and O(aliases), lists the hosts that can satisfy the request, best first, with the devices each
    would give.
  - With O(dest), writes C(fleet.json) and C(fleet.html) there - one self-contained page (no script, no request
    to any other place) with a table per pool and per host and bars for free, allocated and unavailable devices.
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
options:
  hosts:
    description:
      - The inventory hosts to aggregate.
      - Defaults to every host of the play (C(ansible_play_hosts_all)), including hosts that failed, which then
        show as missing.
      - Under C(--limit), name the hosts (for example C("{{ groups['compute'] }}")) and use a fact cache, so the
        hosts left out of this run are read from the cache.
      - A named host that is not in this run's inventory (in AWX, a host of another slice of a sliced job) does not
        fail the task; its C(pci_stats) are read from the published records (O(records)) or the fact cache, and
        without them it is listed in RV(fleet.missing) with the reason.
      - With O(records) and without O(hosts), the hosts of the published records, in name order.
    type: list
    elements: str
  records:
    description:
      - Also use the per-host records that the C(pci_inventory) role publishes with C(set_stats) (the variables
        C(pci_fleet_host_<name>_<hash>), each with C(name), C(pci_stats) and C(pci_hypervisor_hostname)). In an AWX workflow the
        artifacts of the earlier nodes arrive as extra variables, and one variable per host survives the merge of
        the artifacts of a sliced job's slices, so a later node rebuilds the whole fleet whichever slice finished last.
      - A host's own C(pci_stats) fact, when it has one, wins over its record; the record wins over the fact cache.
    type: bool
    default: false
  plain_cache:
    description:
      - With the C(jsonfile) fact cache and ansible-core 2.19 or newer, merge each host's C(pci_stats) and
        C(pci_hypervisor_hostname) facts of this run into the plain JSON file C(<prefix><host>) of the cache directory.
      - ansible-core 2.19 writes its cache as C(s1_<host>), the facts wrapped in a C(__payload__) JSON string; AWX's fact
        storage and ansible-runner read and write C(<host>) as plain JSON. Without this file AWX stores no facts of the
        job (and clears those of a host that had none). Other keys of the file are kept. Not in check mode.
      - Hosts without C(pci_stats) in their facts are read from the cache directory in either form (the newer file
        wins, the cache's timeout applies), whatever this option says.
    type: bool
    default: true
  request:
    description:
      - Devices a domain needs, as C("alias:count[,alias:count]") or a list of C({alias, count}) (the request
        grammar of the collection's C(docs/whitelist.md)). Needs O(aliases).
      - The fitting uses the pools' free devices, PFs only when an alias asks for them, and a PF and its VFs never in
        one request. NUMA policies and IOMMU groups are for the host to apply when it attaches (the controller has
        neither the domain's placement nor the groups), so a host listed here can still refuse.
    type: raw
  aliases:
    description:
      - Nova-style aliases (C(name), C(vendor_id), C(product_id), C(device_type), C(numa_policy), C(tags)), as on the
        hosts. See the collection's C(docs/whitelist.md).
    type: list
    elements: dict
  query:
    description:
      - A JMESPath expression applied to the report (RV(fleet), with RV(candidates) as key C(candidates) when
        O(request) is given); the answer is RV(query_result).
      - Needs the C(jmespath) Python library on the controller.
    type: str
  dest:
    description:
      - A directory on the controller to write C(fleet.json) and C(fleet.html) to; created when missing.
      - A file is only rewritten when its content changes, and only then is the task C(changed).
    type: path
  title:
    description: The title of the HTML page.
    type: str
    default: PCI fleet
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: full
    details: The task runs once for the play, however many hosts it targets.
  check_mode:
    support: full
    details: Nothing is written; C(changed) says whether the files would change.
  diff_mode:
    support: none
  platform:
    platforms: all
requirements:
  - C(jmespath) on the controller, for O(query) only.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
seealso:
  - module: passthrough.libvirt.hypervisor_pci_stats
'''

EXAMPLES = r'''
- name: Pools of every compute host
  hosts: compute
  tasks:
    - name: Pools of this host (sets the pci_stats fact)
      passthrough.libvirt.hypervisor_pci_stats:

    - name: The fleet, on the controller, once
      passthrough.libvirt.pci_fleet:
        dest: "{{ playbook_dir }}/pci-report"
        request: "a100:2"
        aliases:
          - {name: a100, vendor_id: "10de", product_id: "20b5"}
        query: "pools[?count > `0`].{product: product_id, free: count}"
      register: fleet
      run_once: true   # pci_fleet runs once anyway; run_once also registers its result on every host

    - name: Where two A100s fit, best first
      ansible.builtin.debug:
        msg: "{{ fleet.candidates | map(attribute='host') }}"
'''

RETURN = r'''
fleet:
  description: The aggregated report.
  returned: success
  type: dict
  contains:
    totals:
      description: C(count) (free), C(total), C(allocated) and C(unavailable) over every pool of every host.
      type: dict
      sample: {count: 12, total: 20, allocated: 6, unavailable: 2}
    pools:
      description: One entry per C(vendor_id), C(product_id), C(dev_type) and C(tags) across hosts, with the summed
        counters and C(hosts), the names of the hosts that have it.
      type: list
      elements: dict
    hosts:
      description: One entry per host, in the order given - C(name), C(status) (C(ok) or C(missing)), C(reason) (why
        missing), C(hypervisor_hostname), C(totals), C(pools) (the host's C(pci_stats)), C(hardware_changes) and
        C(out_of_service) (the host's facts C(pci_hardware_changes) and C(pci_out_of_service) from
        M(passthrough.libvirt.hypervisor_pci_stats); the HTML page lists them per host). A host marked out of service
        as a whole is never a candidate.
      type: list
      elements: dict
    missing:
      description: The hosts without usable C(pci_stats).
      type: list
      elements: str
candidates:
  description: With O(request), the hosts that can satisfy it, best first (most free devices of the requested aliases,
    then name) - C(host), C(hypervisor_hostname), C(free) (per alias) and C(devices) (the addresses it would give, per alias).
  returned: when O(request) is given
  type: list
  elements: dict
rejected:
  description: With O(request), for each host that cannot satisfy it, why (for example C(a1 - 2 requested, 1 free)).
  returned: when O(request) is given
  type: dict
query_result:
  description: The answer of O(query).
  returned: when O(query) is given
  type: raw
records:
  description:
    - The records of the hosts of this run's play whose C(pci_stats) came from their facts (failed hosts with
      C(pci_stats=null)), keyed by the variable they are published as (C(pci_fleet_host_<name>_<hash>), the name
      with every character other than a letter, digit or C(_) made C(_), and the first 8 hex digits of its SHA-1).
      The C(pci_inventory) role publishes them with C(set_stats).
  returned: always
  type: dict
  sample: {pci_fleet_host_compute_01_0a1b2c3d: {name: compute-01, pci_hypervisor_hostname: compute-01.example.com, pci_stats: []}}
cache_written:
  description: The hosts whose plain fact cache file O(plain_cache) wrote.
  returned: always
  type: list
  elements: str
files:
  description: The files of O(dest).
  returned: when O(dest) is given
  type: list
  elements: str
  sample: [/srv/reports/fleet.json, /srv/reports/fleet.html]
'''
