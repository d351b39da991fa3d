# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hypervisor_pci_stats' mdev pools, run as a real module process on a fixture tree with mdev parents.

Which domain holds an mdev comes from libvirt's own `test:///<file>` driver.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.passthrough.libvirt.tests import mdev_tree, sysfs_tree

pytest.importorskip('libvirt')

HELD, FREE = '6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20', '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11'
NODE_XML = f"""<node>
  <domain type='test'>
    <name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{HELD}'/></source></hostdev>
    </devices>
  </domain>
</node>
"""
SPEC = [{'mdev_parent': 'mtty', 'mdev_types': ['mtty-2'], 'purpose': 'serial'},
        {'vendor_id': '10de', 'product_id': '20b5', 'mdev_types': ['GRID A100-4*']},
        {'vendor_id': '10de', 'product_id': '20b5'}]
ALIASES = [{'name': 'serial', 'mdev_type': 'mtty-2'}, {'name': 'vgpu', 'mdev_type': 'GRID A100-4C', 'vendor_id': '10de'},
           {'name': 'a100', 'vendor_id': '10de', 'product_id': '20b5'}]


@pytest.fixture
def host(tmp_path):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    gpu = mdev_tree.device_dir(root, '0000:3c:00.0')
    mdev_tree.mdev_parent(root, gpu, {'nvidia-470': {'name': 'GRID A100-4C', 'device_api': 'vfio-pci', 'available_instances': 9},
                                      'nvidia-471': {'name': 'GRID A100-8C', 'device_api': 'vfio-pci', 'available_instances': 4}})
    mtty = mdev_tree.virtual_parent(root)
    mdev_tree.mdev_parent(root, mtty, {'mtty-1': {'name': 'Single port serial', 'device_api': 'vfio-pci', 'available_instances': 24},
                                       'mtty-2': {'name': 'Dual port serial', 'device_api': 'vfio-pci', 'available_instances': 10}})
    mdev_tree.mdev(root, mtty, 'mtty-2', HELD)
    mdev_tree.mdev(root, mtty, 'mtty-2', FREE)
    node = tmp_path / 'node.xml'
    node.write_text(NODE_XML)
    return {'sysfs_root': str(root), 'uri': f'test://{node}', 'config_path': str(tmp_path / 'state.json'), 'device_spec': SPEC}


def test_mdev_pools_per_parent_and_admitted_type(run_module, host):
    result = run_module('hypervisor_pci_stats', aliases=ALIASES, **host).result
    slices = [p for p in result['hypervisor']['pci_stats'] if p['dev_type'] == 'type-MDEV']
    assert [(p['parent_addr'], p['mdev_type'], p['mdev_name'], p['count'], p['total'], p['allocated'], p['free_mdevs'], p['tags'])
            for p in slices] == [
        ('0000:3c:00.0', 'nvidia-470', 'GRID A100-4C', 9, 9, 0, [], {}),            # nvidia-471 is not admitted
        ('mtty', 'mtty-2', 'Dual port serial', 11, 12, 1, [FREE], {'purpose': 'serial'})]   # mtty-1 is not admitted
    gpu = slices[0]
    assert (gpu['vendor_id'], gpu['product_id'], gpu['numa_node'], gpu['device_api']) == ('10de', '20b5', 0, 'vfio-pci')
    assert slices[1]['vendor_id'] is None and slices[1]['vendor_name'] is None
    # the mdev entry never whitelists its parent whole: the A100 at 3c:00.0 (an mdev parent on nvidia) is in no PCI pool
    # through it; the third entry whitelists the A100s as whole devices (3c:00.0 and 86:00.0)
    whole = [p for p in result['hypervisor']['pci_stats'] if p['product_id'] == '20b5' and p['dev_type'] != 'type-MDEV']
    assert sum(p['total'] for p in whole) == 2
    assert result['aliases_free'] == {'a100': 2, 'serial': 11, 'vgpu': 9}


def test_a_parent_serving_mdevs_is_never_given_whole(run_module, host, tmp_path):
    root = tmp_path / 'sys'
    mdev_tree.mdev(root, mdev_tree.device_dir(root, '0000:3c:00.0'), 'nvidia-470', '11111111-2222-4333-8444-555555555555')
    result = run_module('hypervisor_pci_stats', aliases=ALIASES, **host).result
    assert result['aliases_free']['a100'] == 1
    (gpu,) = [p for p in result['hypervisor']['pci_stats'] if p['product_id'] == '20b5' and p['unavailable']]
    assert gpu['unavailable_reasons'] == {
        'the host uses it: it is the parent of mediated device 11111111-2222-4333-8444-555555555555 (nvidia-470)': 1}


def test_without_mdev_entries_no_mdev_pool(run_module, host):
    result = run_module('hypervisor_pci_stats', **dict(host, device_spec=SPEC[2:])).result
    assert all(p['dev_type'] != 'type-MDEV' for p in result['hypervisor']['pci_stats'])


@pytest.mark.parametrize('mark, held_back', [
    ({'host': True, 'mode': 'no-new', 'reason': 'BIOS update'}, {'nvidia-470', 'mtty-2'}),
    ({'address': '0000:3c:00.0', 'mode': 'no-new', 'reason': 'fan failure'}, {'nvidia-470'}),   # a virtual parent: only the host's mark
    # alias marks: an alias of mediated devices covers its type (on a virtual parent too), one of whole devices their parent
    ({'alias': 'serial', 'mode': 'no-new', 'reason': 'console rework', 'alias_entries': [ALIASES[0]]}, {'mtty-2'}),
    ({'alias': 'vgpu', 'mode': 'no-new', 'reason': 'driver update', 'alias_entries': [ALIASES[1]]}, {'nvidia-470'}),
    ({'alias': 'a100', 'mode': 'no-new', 'reason': 'RMA', 'alias_entries': [ALIASES[2]]}, {'nvidia-470'}),
])
def test_out_of_service_marks_cover_mdev_pools(run_module, host, tmp_path, mark, held_back):
    (tmp_path / 'state.json').write_text(json.dumps({'version': 1, 'out_of_service': [mark]}))
    result = run_module('hypervisor_pci_stats', aliases=ALIASES, **host).result
    slices = {p['mdev_type']: p for p in result['hypervisor']['pci_stats'] if p['dev_type'] == 'type-MDEV'}
    label = 'the host' if 'host' in mark else f'address {mark["address"]}' if 'address' in mark else f'alias {mark["alias"]}'
    for type_id, pool in slices.items():
        if type_id in held_back:
            assert pool['count'] == 0 and pool['free_mdevs'] == []
            assert pool['unavailable_reasons'] == {f'out of service (no-new, {label}): {mark["reason"]}': pool['unavailable']}
        else:
            assert pool['count'] > 0 and pool['unavailable'] == 0
    assert result['aliases_free']['serial'] == (0 if 'mtty-2' in held_back else 11)
    assert result['aliases_free']['vgpu'] == (0 if 'nvidia-470' in held_back else 9)
