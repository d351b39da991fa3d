# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_device_info's ``fields`` (the keys of each record to return) and its filters, run as a real module process.

Allocations come from libvirt's own `test:///<file>` driver: one domain holds a VF and a GPU.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.modules import pci_device_info
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

pytest.importorskip('libvirt')

NODE_XML = """<node>
  <domain type='test'>
    <name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x3b' slot='0x02' function='0x2'/></source>
      </hostdev>
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x86' slot='0x00' function='0x0'/></source>
      </hostdev>
    </devices>
  </domain>
</node>
"""
WHITELIST = [{'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}, {'vendor_id': '10de'}]
SMALL = ['address', 'vendor_id', 'product_id', 'status']


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    node = tmp_path / 'node.xml'
    node.write_text(NODE_XML)
    return {'sysfs_root': str(tmp_path / 'sys'), 'uri': f'test://{node}', 'config_path': str(tmp_path / 'state.json'),
            'device_spec': WHITELIST}


def test_every_field_can_be_named_and_none_is_missing(run_module, host):
    full = run_module('pci_device_info', **host)
    assert full.rc == 0, full.msg
    assert all(tuple(record) == pci_device_info.DEVICE_FIELDS for record in full.result['pci_devices'])
    named = run_module('pci_device_info', fields=list(pci_device_info.DEVICE_FIELDS), **host)
    assert named.rc == 0, named.msg
    assert named.result['pci_devices'] == full.result['pci_devices']


def test_only_the_fields_asked_for_in_their_order(run_module, host):
    full = run_module('pci_device_info', **host).result
    run = run_module('pci_device_info', fields=['status', 'address', 'status', 'extra_info'], **host)
    assert run.rc == 0, run.msg
    assert [list(record) for record in run.result['pci_devices']] == [['status', 'address', 'extra_info']] * len(full['pci_devices'])
    assert run.result['pci_devices'] == [{'status': record['status'], 'address': record['address'], 'extra_info': record['extra_info']}
                                         for record in full['pci_devices']]
    # what is not a device record keeps its shape
    assert (run.result['mdev_parents'], run.result['mdevs'], run.result['hypervisor_hostname']) == (
        full['mdev_parents'], full['mdevs'], full['hypervisor_hostname'])


def test_fields_without_names_or_extra_info_give_the_same_values(run_module, host):
    full = run_module('pci_device_info', **host).result['pci_devices']
    small = run_module('pci_device_info', fields=SMALL, **host)
    assert small.result['pci_devices'] == [{key: record[key] for key in SMALL} for record in full]
    named = run_module('pci_device_info', fields=['address', 'vendor_name', 'product_name'], **host)
    assert named.result['pci_devices'] == [{key: record[key] for key in ('address', 'vendor_name', 'product_name')} for record in full]
    nic = next(record for record in named.result['pci_devices'] if record['address'] == '0000:3b:00.0')
    assert nic['vendor_name'] == 'Intel Corporation' and nic['product_name']     # the names are read when asked for


@pytest.mark.parametrize('filters, count', [
    ({'status': 'allocated'}, 2),
    ({'vendor_id': '0x10DE', 'status': 'available'}, 1),
    ({'dev_type': 'type-VF', 'product_id': '154C'}, 4),
    ({'vendor_id': '*', 'dev_type': 'type-PF'}, 3),
    ({'domain': 'vm-a'}, 2),
    ({'address': '0000:86:00.0'}, 1),
    ({'address': '0000:86:00.0', 'status': 'available'}, 0),
])
def test_filters_pick_the_same_devices_whatever_the_fields(run_module, host, filters, count):
    full = run_module('pci_device_info', **filters, **host)
    small = run_module('pci_device_info', fields=['address', 'status'], **filters, **host)
    assert full.rc == 0 and small.rc == 0, (full.msg, small.msg)
    assert len(full.result['pci_devices']) == count
    assert small.result['pci_devices'] == [{'address': r['address'], 'status': r['status']} for r in full.result['pci_devices']]
    if 'address' in filters:
        expected = full.result['pci_device']
        assert small.result['pci_device'] == (None if expected is None else {'address': expected['address'], 'status': expected['status']})
    if 'domain' in filters:
        assert small.result['server'] == full.result['server']     # the server view is not a device record


def test_an_unknown_field_is_one_clear_message(run_module, host):
    run = run_module('pci_device_info', fields=['address', 'vendor'], **host)
    assert run.rc == 1 and run.result['failed'] is True
    assert run.msg.startswith('value of fields must be one or more of: address, dev_id, dev_type, vendor_id,')
    assert run.msg.endswith('Got no match for: vendor')
    assert 'Traceback' not in run.stderr


def test_an_empty_field_list_is_refused(run_module, host):
    run = run_module('pci_device_info', fields=[], **host)
    assert run.rc == 1 and run.msg == 'fields: [] selects no key of the records; omit fields to return every key'
    assert 'Traceback' not in run.stderr


def test_pci_ids_is_not_read_when_no_name_is_asked_for(host, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError('pci.ids read although no name was asked for')
    monkeypatch.setattr(pci_device_info.HostSnapshot, 'names', property(refuse))
    params = {key: None for key in pci_device_info.argument_spec()}
    params.update(pcie_link=False, require_libvirt=True, **host)
    result, _warnings = pci_device_info.run(dict(params, fields=SMALL))
    assert result['pci_devices'] and all(list(record) == SMALL for record in result['pci_devices'])
