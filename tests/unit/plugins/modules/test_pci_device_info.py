# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_device_info run as a real module process on fixture trees.

Allocations come from libvirt's own `test:///<file>` driver loaded with domains that hold fixture
devices: real libvirt XML through the real bindings, without a daemon.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

pytest.importorskip('libvirt')

ATTACHMENT = '3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10'
NODE_XML = f"""<node>
  <domain type='test'>
    <name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x3b' slot='0x02' function='0x2'/></source>
        <alias name='ua-pci-{ATTACHMENT}'/>
        <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
      </hostdev>
    </devices>
  </domain>
  <domain type='test'>
    <name>vm-b</name><uuid>66666666-7777-8888-9999-000000000000</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <devices>
      <interface type='hostdev' managed='yes'>
        <source><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></source>
      </interface>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x86' slot='0x00' function='0x0'/></source>
      </hostdev>
    </devices>
  </domain>
</node>
"""
WHITELIST = [
    {'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'},
    {'vendor_id': '0x10DE', 'product_id': '20b5'},
    {'address': '0000:3a:00.0'},        # a root port: bridges are never whitelisted
]


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    node = tmp_path / 'node.xml'
    node.write_text(NODE_XML)
    return {'sysfs_root': str(tmp_path / 'sys'), 'uri': f'test://{node}', 'config_path': str(tmp_path / 'state.json')}


def by_address(run):
    return {device['address']: device for device in run.result['pci_devices']}


def test_statuses_from_whitelist_and_allocations(run_module, host):
    run = run_module('pci_device_info', device_spec=WHITELIST, **host)
    assert run.rc == 0, run.msg
    assert run.result['changed'] is False and run.result['allocations_known'] is True
    devices = by_address(run)
    assert len(devices) == 30

    held = devices['0000:3b:02.2']
    assert (held['status'], held['instance_name'], held['attachment_id']) == ('allocated', 'vm-a', ATTACHMENT)
    assert held['instance_uuid'] == '11111111-2222-3333-4444-555555555555'
    assert held['extra_info']['allocated_live'] and held['extra_info']['allocated_persistent']
    assert held['extra_info']['inner_address'] == '0000:07:00.0'
    assert held['tags'] == {'physical_network': 'physnet1'}

    sriov_port = devices['0000:3b:02.3']
    assert (sriov_port['status'], sriov_port['instance_name'], sriov_port['attachment_id']) == ('allocated', 'vm-b', None)
    assert devices['0000:86:00.0']['status'] == 'allocated'

    free_vf = devices['0000:3b:02.0']
    assert (free_vf['status'], free_vf['whitelisted'], free_vf['tags']) == ('available', True, {'physical_network': 'physnet1'})
    assert free_vf['dev_type'] == 'type-VF' and free_vf['parent_addr'] == '0000:3b:00.0'
    assert free_vf['label'] == 'label_8086_154c' and free_vf['dev_id'] == 'pci_0000_3b_02_0'
    assert devices['0000:3c:00.0']['status'] == 'available' and devices['0000:3c:00.0']['tags'] == {}
    assert devices['0000:3b:00.0']['status'] == 'unmanaged' and devices['0000:3b:00.0']['dev_type'] == 'type-PF'
    assert devices['0000:3b:00.0']['extra_info']['virt_functions'] == ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']
    assert devices['0000:3a:00.0']['whitelisted'] is False and devices['0000:3a:00.0']['status'] == 'unmanaged'
    assert devices['0000:af:00.0']['extra_info']['iommu_group_members'] == ['0000:af:00.0', '0000:af:00.1']
    assert devices['0000:d8:00.0']['numa_node'] is None
    assert devices['0000:3b:00.0']['vendor_name'] == 'Intel Corporation'
    assert {d['status'] for d in devices.values()} == {'allocated', 'available', 'unmanaged'}


def test_without_a_whitelist_every_free_device_is_unmanaged(run_module, host):
    devices = by_address(run_module('pci_device_info', **host))
    assert {d['status'] for a, d in devices.items() if a not in ('0000:3b:02.2', '0000:3b:02.3', '0000:86:00.0')} == {'unmanaged'}
    assert devices['0000:3b:02.2']['status'] == 'allocated' and devices['0000:3b:02.2']['whitelisted'] is False


def test_stored_whitelist_is_used_when_none_is_given(run_module, host, tmp_path):
    (tmp_path / 'state.json').write_text(json.dumps({'version': 1, 'device_spec': [{'address': '0000:19:00.0'}]}))
    devices = by_address(run_module('pci_device_info', **host))
    assert [a for a, d in devices.items() if d['status'] == 'available'] == ['0000:19:00.0']
    inline = by_address(run_module('pci_device_info', device_spec=[{'address': '0000:18:00.0'}], **host))
    assert [a for a, d in inline.items() if d['status'] == 'available'] == ['0000:18:00.0']


@pytest.mark.parametrize('filters, expected', [
    ({'vendor_id': '0x10DE'}, ['0000:3c:00.0', '0000:86:00.0', '0000:af:00.0', '0000:af:00.1']),
    ({'vendor_id': '10de', 'product_id': '20B5'}, ['0000:3c:00.0', '0000:86:00.0']),
    ({'dev_type': 'type-PF'}, ['0000:3b:00.0', '0000:3b:00.1', '0000:5e:00.0']),
    ({'dev_type': 'type-VF', 'status': 'available'}, ['0000:3b:02.0', '0000:3b:02.1']),
    ({'status': 'allocated'}, ['0000:3b:02.2', '0000:3b:02.3', '0000:86:00.0']),
    ({'domain': 'vm-b'}, ['0000:3b:02.3', '0000:86:00.0']),
    ({'domain': '11111111-2222-3333-4444-555555555555'}, ['0000:3b:02.2']),
])
def test_filters(run_module, host, filters, expected):
    run = run_module('pci_device_info', device_spec=WHITELIST, **filters, **host)
    assert run.rc == 0, run.msg
    assert [d['address'] for d in run.result['pci_devices']] == expected


def test_the_server_view_of_a_domain(run_module, host):
    run = run_module('pci_device_info', domain='vm-a', **host)
    assert run.result['server'] == {'id': '11111111-2222-3333-4444-555555555555', 'name': 'vm-a', 'pci_devices': [{
        'attachment_id': ATTACHMENT, 'serverId': '11111111-2222-3333-4444-555555555555', 'dev_id': 'pci_0000_3b_02_2',
        'address': '0000:3b:02.2', 'inner_address': '0000:07:00.0', 'vendor_id': '8086', 'product_id': '154c',
        # a NIC VF given as a <hostdev>: its settings are its PF's, unknown here (ip knows no fixture interface)
        'interface': False, 'mac_address': None, 'vlan': None, 'trust': None, 'spoofchk': None}]}
    assert 'server' not in run_module('pci_device_info', **host).result


def test_one_address(run_module, host):
    run = run_module('pci_device_info', address=' 10000:E0:00.0 ', **host)
    assert run.result['pci_device']['address'] == '10000:e0:00.0'
    assert run.result['pci_device']['dev_id'] == 'pci_10000_e0_00_0'
    assert run.result['pci_devices'] == [run.result['pci_device']]
    absent = run_module('pci_device_info', address='0000:99:00.0', **host)
    assert absent.rc == 0 and absent.result['pci_device'] is None and absent.result['pci_devices'] == []


def test_check_mode_reports_the_same(run_module, host):
    normal = run_module('pci_device_info', **host)
    checked = run_module('pci_device_info', _ansible_check_mode=True, **host)
    assert checked.rc == 0 and checked.result['changed'] is False
    assert checked.result['pci_devices'] == normal.result['pci_devices']


@pytest.mark.parametrize('args, message', [
    ({'address': '../../etc'}, "address: invalid PCI address '../../etc': expected DDDD:BB:SS.F in hex (for example 0000:3b:00.0)"),
    ({'address': '0000:zz:00.0'}, "address: invalid PCI address '0000:zz:00.0': expected DDDD:BB:SS.F in hex (for example 0000:3b:00.0)"),
    ({'sysfs_root': '/nonexistent/sys'}, "sysfs_root '/nonexistent/sys' does not exist or is not a directory"),
    ({'sysfs_root': '/etc'}, "sysfs_root '/etc' has no bus/pci/devices directory: not a sysfs tree with a PCI bus"),
    ({'vendor_id': 'intel'}, "vendor_id: 'intel' is not a 4-digit hex id like \"8086\" or \"*\""),
    ({'device_spec': [{'vendor_id': 8086}]}, 'device_spec[0].vendor_id: 8086 must be a string of up to 4 hex digits, like "8086" (quote it in YAML)'),
    ({'device_spec': [{'address': '0000:3b:00.0.1'}]}, "device_spec[0].address: '0000:3b:00.0.1' has an invalid function '0.1' (hex or \"*\")"),
    ({'domain': 'web99'}, "domain: domain 'web99' does not exist (no domain has that name or UUID)"),
    ({'dev_type': 'type-GPU'}, 'value of dev_type must be one of: type-PCI, type-PF, type-VF, got: type-GPU'),
])
def test_bad_input_is_one_clear_message(run_module, host, args, message):
    run = run_module('pci_device_info', **{**host, **args})
    assert run.rc == 1 and run.result['failed'] is True
    assert run.msg == message
    assert 'Traceback' not in run.stderr and 'exception' not in run.result


def test_unreadable_state_file_is_named(run_module, host, tmp_path):
    (tmp_path / 'state.json').write_text('{not json')
    run = run_module('pci_device_info', **host)
    assert run.rc == 1 and run.msg.startswith(f"config_path '{tmp_path / 'state.json'}' cannot be read as a state file")


def test_pcie_link_only_on_request(run_module, host):
    plain = run_module('pci_device_info', address='0000:3c:00.0', **host).result['pci_device']
    assert 'link' not in plain['extra_info']
    linked = run_module('pci_device_info', address='0000:3c:00.0', pcie_link=True, **host).result['pci_device']
    assert linked['extra_info']['link'] == {'speed': '8.0 GT/s PCIe', 'width': 16, 'max_speed': '16.0 GT/s PCIe', 'max_width': 16}


def test_extra_info_holds_only_what_applies(run_module, host):
    devices = by_address(run_module('pci_device_info', **host))
    assert set(devices['0000:3b:02.0']['extra_info']) == {'revision', 'phys_function', 'netdevs', 'iommu_group_members',
                                                          'pf_netdev', 'vf_index'}
    assert (devices['0000:3b:02.1']['extra_info']['pf_netdev'], devices['0000:3b:02.1']['extra_info']['vf_index']) == ('ens1f0', 1)
    # a NIC PF names its interface; its VFs' settings come from ip, which knows no fixture interface (see the integration tests)
    assert set(devices['0000:5e:00.0']['extra_info']) == {'revision', 'sriov_totalvfs', 'sriov_numvfs', 'virt_functions', 'netdevs',
                                                          'iommu_group_members', 'netdev', 'link_state'}
    assert devices['0000:5e:00.0']['extra_info']['sriov_numvfs'] == 0
    assert devices['0000:3a:00.0']['extra_info']['is_bridge'] is True
    assert set(devices['10000:e0:00.0']['extra_info']) == {'revision'}
    assert {'allocated_live', 'allocated_persistent', 'inner_address'} <= set(devices['0000:3b:02.2']['extra_info'])
