# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hypervisor_pci_stats as a process on the dual-socket fixture; allocations from libvirt's test:/// driver."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

pytest.importorskip('libvirt')

NODE_XML = """<node><domain type='test'><name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
<memory>65536</memory><os><type>hvm</type></os><devices>
<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></source></hostdev>
</devices></domain></node>"""
SPEC = [{'address': '0000:3b:00.0', 'physical_network': 'physnet1'}, {'vendor_id': '10de', 'product_id': '20b5'}]
ALIASES = [{'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
           {'name': 'pf', 'vendor_id': '8086', 'product_id': '1572', 'device_type': 'type-PF'},
           {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    (tmp_path / 'node.xml').write_text(NODE_XML)
    return {'sysfs_root': str(tmp_path / 'sys'), 'uri': f'test://{tmp_path}/node.xml', 'config_path': str(tmp_path / 'state.json')}


def test_pools_facts_and_alias_counts(run_module, host):
    run = run_module('hypervisor_pci_stats', device_spec=SPEC, aliases=ALIASES, **host)
    assert run.rc == 0, run.msg
    result = run.result
    assert result['changed'] is False
    stats = result['hypervisor']['pci_stats']
    assert result['ansible_facts'] == {'pci_stats': stats, 'pci_hypervisor_hostname': result['hypervisor']['hypervisor_hostname'],
                                       'pci_hardware_changes': [], 'pci_out_of_service': []}
    assert [(p['product_id'], p['numa_node'], p['count'], p['total'], p['allocated'], p['unavailable']) for p in stats] == [
        ('20b5', 0, 1, 1, 0, 0), ('20b5', 1, 1, 1, 0, 0),
        ('154c', 0, 3, 4, 1, 0),     # 3b:02.1 is in vm-a
        ('1572', 0, 0, 1, 0, 1),     # its PF: a VF is allocated
    ]
    assert result['aliases_free'] == {'gpu': 2, 'pf': 0, 'vf': 3}


def test_the_stored_whitelist_and_no_aliases(run_module, host):
    run = run_module('hypervisor_pci_stats', **host)
    assert run.rc == 0 and run.result['hypervisor']['pci_stats'] == [] and 'aliases_free' not in run.result


@pytest.mark.parametrize('args, message', [
    ({'aliases': [{'name': 'a1', 'colour': 'red'}]}, "aliases[0]: unknown key(s) 'colour'"),
    ({'aliases': [{'name': 'a1', 'numa_policy': 'required'}, {'name': 'a1', 'numa_policy': 'legacy'}]},
     "aliases: alias 'a1' has entries with different numa_policy"),
    ({'device_spec': [{'vendor_id': 8086}]}, 'device_spec[0].vendor_id: 8086 must be'),
    ({'uri': 'test:///nonexistent/node.xml'}, "cannot connect to libvirt at uri 'test:///nonexistent/node.xml'"),
])
def test_bad_input_is_one_clear_message(run_module, host, args, message):
    run = run_module('hypervisor_pci_stats', **dict(host, **args))
    assert run.rc == 1 and run.msg.startswith(message), run.msg
    assert 'Traceback' not in run.stderr
