# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Statuses, pools and fitting on the dual-socket fixture tree.

Allocations are given as data (what libvirt's domains would say); every device comes from the
fixture tree read by the real sysfs reader.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import HostUse
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import Allocation
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import (
    assess,
    candidates,
    candidates_from_pools,
    fit,
    free_per_alias,
    pools,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

A = PciAddress.parse
VM_A = '11111111-1111-1111-1111-111111111111'
VM_B = '22222222-2222-2222-2222-222222222222'
X710 = [{'address': '0000:3b:00.0'}, {'address': '0000:3b:00.1'}]            # PF 3b:00.0 with its 4 VFs, PF 3b:00.1
A100 = [{'vendor_id': '10de', 'product_id': '20b5'}]                          # 3c:00.0 NUMA 0 (nvidia), 86:00.0 NUMA 1 (vfio-pci)


@pytest.fixture(scope='module')
def devices(tmp_path_factory):
    root = tmp_path_factory.mktemp('sys')
    sysfs_tree.dual_socket_server(root)
    return {device.address: device for device in Sysfs(str(root)).read_devices()}


def held(*pairs) -> dict:
    """held(('0000:3b:00.0', 'vm-a'), ...) -> allocations as libvirt's domains give them."""
    uuids = {'vm-a': VM_A, 'vm-b': VM_B}
    return {A(address): Allocation(A(address), uuids[name], name, None, None, persistent=True) for address, name in pairs}


def status(states, address):
    state = states[A(address)]
    return state.status, state.reason


def on_vfio(devices, *addresses):
    """The same host with these devices bound to vfio-pci."""
    changed = dict(devices)
    for address in addresses:
        changed[A(address)] = dataclasses.replace(devices[A(address)], driver='vfio-pci')
    return changed


# -- statuses -----------------------------------------------------------------------------------

def test_statuses_without_blocks(devices):
    states = assess(devices, Whitelist.parse(A100), held(('0000:19:00.0', 'vm-a')))
    assert status(states, '0000:3c:00.0') == ('available', None)
    assert status(states, '0000:19:00.0') == ('allocated', None)        # not whitelisted, still allocated
    assert status(states, '0000:5e:00.0') == ('unmanaged', None)
    assert status(states, '0000:3a:00.0') == ('unmanaged', None)        # a root port: never whitelisted
    unknown = assess(devices, Whitelist.parse(A100), None)
    assert {state.status for state in unknown.values()} == {'unknown'}


def test_a_vf_is_unavailable_while_its_pf_is_allocated(devices):
    states = assess(devices, Whitelist.parse(X710), held(('0000:3b:00.0', 'vm-a')))
    for vf in ('0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3'):
        assert status(states, vf) == ('unavailable', 'its PF 0000:3b:00.0 is allocated to domain vm-a')
    assert status(states, '0000:3b:00.1') == ('available', None)


def test_a_pf_is_unavailable_while_one_of_its_vfs_is_allocated(devices):
    states = assess(devices, Whitelist.parse(X710), held(('0000:3b:02.1', 'vm-b')))
    assert status(states, '0000:3b:00.0') == ('unavailable', 'its VF 0000:3b:02.1 is allocated to domain vm-b')
    assert status(states, '0000:3b:02.0') == ('available', None)        # siblings VFs are not blocked


def test_an_iommu_group_sibling_in_another_domain(devices):
    rtx = on_vfio(devices, '0000:af:00.0', '0000:af:00.1')
    spec = Whitelist.parse([{'vendor_id': '10de', 'product_id': '2204'}])
    states = assess(rtx, spec, held(('0000:af:00.1', 'vm-b')))
    assert status(states, '0000:af:00.0') == ('unavailable', 'IOMMU group 24: 0000:af:00.1 is in domain vm-b')
    # for vm-b itself the group is already its own
    assert status(assess(rtx, spec, held(('0000:af:00.1', 'vm-b')), for_domain=VM_B), '0000:af:00.0') == ('available', None)


def test_an_iommu_group_sibling_on_a_host_driver(devices):
    spec = Whitelist.parse([{'vendor_id': '10de', 'product_id': '2204'}, {'vendor_id': '10de', 'product_id': '1aef'}])
    states = assess(devices, spec, {})
    assert status(states, '0000:af:00.0') == ('unavailable', 'IOMMU group 24: 0000:af:00.1 is held by the host driver snd_hda_intel')
    assert status(states, '0000:af:00.1') == ('unavailable', 'IOMMU group 24: 0000:af:00.0 is held by the host driver nvidia')
    both = assess(on_vfio(devices, '0000:af:00.0', '0000:af:00.1'), spec, {})
    assert status(both, '0000:af:00.0') == status(both, '0000:af:00.1') == ('available', None)


def test_managed_off_needs_the_device_on_vfio_pci(devices):
    states = assess(devices, Whitelist.parse([dict(A100[0], managed='no')]), {})
    assert status(states, '0000:3c:00.0') == (
        'unavailable', 'bound to nvidia, not vfio-pci, and device_spec[0] has managed off (libvirt will not rebind it)')
    assert status(states, '0000:86:00.0') == ('available', None)
    assert status(assess(devices, Whitelist.parse([dict(A100[0], managed=True)]), {}), '0000:3c:00.0') == ('available', None)


def test_a_device_the_host_uses(devices):
    use = HostUse()
    use.add(A('0000:3b:00.1'), 'network interface ens1f1 carries the default route')
    states = assess(devices, Whitelist.parse(X710), {}, host_use=use)
    assert status(states, '0000:3b:00.1') == ('unavailable', 'the host uses it: network interface ens1f1 carries the default route')


# -- pools ----------------------------------------------------------------------------------------

def test_pools_count_free_allocated_and_unavailable(devices):
    spec = Whitelist.parse([{'address': '0000:3b:00.0', 'physical_network': 'physnet1'}] + A100)
    states = assess(devices, spec, held(('0000:3b:02.1', 'vm-a'), ('0000:86:00.0', 'vm-b')))
    summary = [(p['product_id'], p['dev_type'], p['numa_node'], p['parent_addr'], p['tags'],
                p['count'], p['total'], p['allocated'], p['unavailable'], p['free_addresses']) for p in pools(states)]
    assert summary == [
        ('20b5', 'type-PCI', 0, None, {}, 1, 1, 0, 0, ['0000:3c:00.0']),
        ('20b5', 'type-PCI', 1, None, {}, 0, 1, 1, 0, []),
        ('154c', 'type-VF', 0, '0000:3b:00.0', {'physical_network': 'physnet1'}, 3, 4, 1, 0,
         ['0000:3b:02.0', '0000:3b:02.2', '0000:3b:02.3']),
        ('1572', 'type-PF', 0, None, {'physical_network': 'physnet1'}, 0, 1, 0, 1, []),
    ]


def test_tags_split_pools_and_unknown_allocations_give_none(devices):
    spec = Whitelist.parse([{'address': '0000:3b:02.0', 'trusted': 'true'}, {'vendor_id': '8086', 'product_id': '154c'}])
    assert [(p['tags'], p['count']) for p in pools(assess(devices, spec, {}))] == [({}, 3), ({'trusted': 'true'}, 1)]
    assert pools(assess(devices, spec, None)) == []


def test_candidates_rebuilt_from_pools_are_the_free_devices(devices):
    states = assess(devices, Whitelist.parse(X710 + A100), held(('0000:3b:02.1', 'vm-a')))
    host = [(c.address, c.dev_type, c.physfn, dict(c.tags)) for c in candidates(states)]
    controller = [(c.address, c.dev_type, c.physfn, dict(c.tags)) for c in candidates_from_pools(pools(states))]
    assert controller == host and len(host) == 6


# -- fitting ----------------------------------------------------------------------------------------

ALIASES = parse_aliases([
    {'name': 'pf', 'vendor_id': '8086', 'product_id': '1572', 'device_type': 'type-PF'},
    {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
    {'name': 'any-x710', 'vendor_id': '8086', 'product_id': '1572'},
    {'name': 'rtx', 'vendor_id': '10de', 'product_id': '2204'},
    {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'required'},
    {'name': 'gpu-legacy', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'legacy'},
    {'name': 'gpu-preferred', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'preferred'},
    {'name': 'gpu-socket', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'socket'},
    {'name': 'nic', 'vendor_id': '14e4', 'product_id': '16d8', 'numa_policy': 'required'},
    {'name': 'nic-legacy', 'vendor_id': '14e4', 'product_id': '16d8', 'numa_policy': 'legacy'},
])


def fitted(devices, spec, request, allocations=None, **kwargs):
    states = assess(devices, Whitelist.parse(spec), allocations or {})
    result = fit(parse_request(request, ALIASES), ALIASES, candidates(states), **kwargs)
    return {alias: [str(a) for a in chosen] for alias, chosen in result.devices.items()}, result.problems, [str(a) for a in result.reserved]


def test_pfs_only_when_the_alias_asks_for_them(devices):
    assert fitted(devices, X710, 'any-x710:1') == ({'any-x710': []}, ['any-x710: 1 requested, 0 free'], [])
    assert fitted(devices, X710, 'pf:2')[0] == {'pf': ['0000:3b:00.0', '0000:3b:00.1']}


def test_a_vf_taken_excludes_its_pf(devices):
    chosen, problems, reserved = fitted(devices, X710, 'vf:1,pf:2')
    assert chosen == {'vf': ['0000:3b:02.0'], 'pf': []}
    assert problems == ['pf: 2 requested, 1 free: 0000:3b:00.0 excluded by a PF or VF taken for this request'] and reserved == []
    assert fitted(devices, X710, 'vf:1,pf:1')[:2] == ({'vf': ['0000:3b:02.0'], 'pf': ['0000:3b:00.1']}, [])


def test_a_pf_taken_excludes_its_vfs(devices):
    chosen, problems, reserved = fitted(devices, X710, 'pf:2,vf:1')
    assert chosen == {'pf': ['0000:3b:00.0', '0000:3b:00.1'], 'vf': []}
    assert problems == ['vf: 1 requested, 0 free: 4 excluded by a PF or VF taken for this request '
                        '(0000:3b:02.0, 0000:3b:02.1, 0000:3b:02.2 and 1 more)'] and reserved == []


def test_iommu_group_siblings_are_taken_together(devices):
    rtx = on_vfio(devices, '0000:af:00.0', '0000:af:00.1')
    spec = [{'vendor_id': '10de', 'product_id': '2204'}, {'vendor_id': '10de', 'product_id': '1aef'}]
    assert fitted(rtx, spec, 'rtx:1') == ({'rtx': ['0000:af:00.0']}, [], ['0000:af:00.1'])
    # once the GPU is in vm-a, its audio function is not free for anyone else
    states = assess(rtx, Whitelist.parse(spec), held(('0000:af:00.0', 'vm-a')))
    assert status(states, '0000:af:00.1') == ('unavailable', 'IOMMU group 24: 0000:af:00.0 is in domain vm-a')


@pytest.mark.parametrize('request_text, numa_nodes, sockets, chosen, problems', [
    # required: only devices on the guest's nodes; a device without NUMA information is refused
    ('gpu:1', {1}, None, ['0000:86:00.0'], []),
    ('gpu:2', {1}, None, [], ['gpu: 2 requested, 1 free on numa_node 1: 0000:3c:00.0 on numa_node 0, not allowed by numa_policy required']),
    ('nic:1', {1}, None, [], ['nic: 1 requested, 0 free on numa_node 1: 0000:d8:00.0 on no NUMA node, not allowed by numa_policy required']),
    # legacy: the guest's nodes, or no NUMA information
    ('nic-legacy:1', {1}, None, ['0000:d8:00.0'], []),
    ('gpu-legacy:2', {0}, None, [], ['gpu-legacy: 2 requested, 1 free on numa_node 0: 0000:86:00.0 on numa_node 1, not allowed by numa_policy legacy']),
    # preferred: the guest's node first, then anything (here above the lower address)
    ('gpu-preferred:2', {1}, None, ['0000:86:00.0', '0000:3c:00.0'], []),
    # socket: any node of the guest's socket(s); sub-NUMA clustering puts nodes 0 and 1 on socket 0
    ('gpu-socket:2', {1}, {0: 0, 1: 0}, ['0000:86:00.0', '0000:3c:00.0'], []),
    ('gpu-socket:2', {1}, {0: 0, 1: 1}, [], ['gpu-socket: 2 requested, 1 free on numa_node 1: 0000:3c:00.0 on numa_node 0, not allowed by numa_policy socket']),
    # no placement given: no constraint, lowest address first
    ('gpu:2', None, None, ['0000:3c:00.0', '0000:86:00.0'], []),
])
def test_numa_policies(devices, request_text, numa_nodes, sockets, chosen, problems):
    spec = A100 + [{'vendor_id': '14e4', 'product_id': '16d8'}]
    result, found, reserved = fitted(devices, spec, request_text, numa_nodes=numa_nodes, sockets=sockets)
    assert list(result.values())[0] == chosen and found == problems and reserved == []


def test_the_choice_is_deterministic(devices):
    states = assess(devices, Whitelist.parse(X710 + A100), {})
    free = candidates(states)
    request = parse_request('vf:2,gpu-preferred:2', ALIASES)
    first = fit(request, ALIASES, free, numa_nodes={0})
    shuffled = list(free)
    for seed in range(20):
        random.Random(seed).shuffle(shuffled)
        again = fit(request, ALIASES, shuffled, numa_nodes={0})
        assert again.devices == first.devices
    assert {k: [str(a) for a in v] for k, v in first.devices.items()} == {
        'vf': ['0000:3b:02.0', '0000:3b:02.1'], 'gpu-preferred': ['0000:3c:00.0', '0000:86:00.0']}


def test_a_count_of_zero_and_free_per_alias(devices):
    assert fitted(devices, X710, 'vf:0') == ({'vf': []}, [], [])
    free = candidates(assess(devices, Whitelist.parse(X710 + A100), held(('0000:3b:02.3', 'vm-a'))))
    counts = free_per_alias(ALIASES, free)
    assert (counts['vf'], counts['pf'], counts['gpu'], counts['any-x710'], counts['nic']) == (3, 1, 2, 0, 0)


def test_numa_sockets_from_sysfs(tmp_path):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    for node, cpus, package in ((0, '0-3', 0), (1, '4-7', 0), (2, '8-11', 1), (3, '', 1)):
        (root / f'devices/system/node/node{node}').mkdir(parents=True)
        (root / f'devices/system/node/node{node}/cpulist').write_text(cpus + '\n')
        if cpus:
            first = int(cpus.split('-', maxsplit=1)[0])
            (root / f'devices/system/cpu/cpu{first}/topology').mkdir(parents=True)
            (root / f'devices/system/cpu/cpu{first}/topology/physical_package_id').write_text(f'{package}\n')
    assert Sysfs(str(root)).numa_sockets() == {0: 0, 1: 0, 2: 1}      # node 3 has memory only
    assert Sysfs(str(tmp_path)).numa_sockets() == {}


# -- why a shortage: the devices the alias matches that are not free ------------------------------

def test_a_shortage_names_held_and_unavailable_devices(devices):
    spec = X710 + [{'vendor_id': '10de', 'product_id': '2204'}]
    states = assess(devices, Whitelist.parse(spec), held(('0000:3b:02.0', 'vm-a'), ('0000:3b:02.1', 'vm-a'), ('0000:3b:00.1', 'vm-b')))
    request = parse_request('vf:4,rtx:1,pf:1', ALIASES)
    result = fit(request, ALIASES, candidates(states), others=states)
    assert result.problems == [
        'vf: 4 requested, 2 free: 2 held by domain vm-a (0000:3b:02.0, 0000:3b:02.1)',
        'rtx: 1 requested, 0 free: 0000:af:00.0 unavailable (IOMMU group 24: 0000:af:00.1 is held by the host driver snd_hda_intel)',
        'pf: 1 requested, 0 free: 0000:3b:00.1 held by domain vm-b, 0000:3b:00.0 unavailable (its VF 0000:3b:02.0 is allocated to domain vm-a)',
    ]
    # the domain's own devices of the alias are counted, not listed as held
    mine = fit(parse_request('vf:3', ALIASES), ALIASES, candidates(states), others=states,
               held={'vf': [A('0000:3b:02.0'), A('0000:3b:02.1')]})
    assert mine.problems == ['vf: 5 requested, the domain holds 2, 2 more free']


def test_a_device_outside_the_whitelist_is_named(devices):
    states = assess(devices, Whitelist.parse(X710), {})
    result = fit(parse_request('rtx:1', ALIASES), ALIASES, candidates(states), others=states)
    assert result.problems == ['rtx: 1 requested, 0 free: 0000:af:00.0 not in the whitelist']


def test_many_reasons_are_counted_per_kind_with_examples(tmp_path):
    sysfs_tree.synthetic(tmp_path, 400)
    devices = {device.address: device for device in Sysfs(str(tmp_path)).read_devices()}
    pfs = sorted(a for a, d in devices.items() if (d.vendor_id, d.product_id) == ('8086', '1572') and d.virtfns)[:6]
    vfs = sorted(a for a, d in devices.items() if (d.vendor_id, d.product_id) == ('8086', '154c') and d.physfn not in pfs)
    allocations = {pf: Allocation(pf, f'uuid-{n}', f'vm-{n}', None, None, persistent=True) for n, pf in enumerate(pfs)}
    allocations.update({vf: Allocation(vf, VM_A, 'vm-a', None, None, persistent=True) for vf in vfs})
    states = assess(devices, Whitelist.parse([{'vendor_id': '8086', 'product_id': '154c'}]), allocations)
    result = fit(parse_request('vf:1', ALIASES), ALIASES, candidates(states), others=states)
    blocked = sum(len(devices[pf].virtfns) for pf in pfs)
    first_vf = devices[pfs[0]].virtfns[0]
    # seven groups (one domain holding VFs, six PFs each in its own domain): the PF/VF ones become one count
    assert result.problems == [
        f'vf: 1 requested, 0 free: {len(vfs)} held by domain vm-a ({", ".join(map(str, vfs[:3]))} and {len(vfs) - 3} more), '
        f'{blocked} unavailable while their PF or VF is allocated '
        f'(e.g. {first_vf} unavailable (its PF {pfs[0]} is allocated to domain vm-0))']
