# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_fleet's action plugin with task_vars as Ansible hands them over.

The task, connection and play context are stand-ins (MagicMock): the plugin touches none of them
beyond its arguments and check mode. The hosts' facts are the shape hypervisor_pci_stats sets;
a real playbook run of both is tests/integration/test_fleet_playbook.py.
"""

from __future__ import annotations

import json
from unittest.mock import MagicMock

import pytest

from ansible_collections.passthrough.libvirt.plugins.action.pci_fleet import ActionModule

ALIASES = [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
           {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'}]


def pool(product, dev_type, free, total=None, allocated=0, unavailable=0, numa=0, parent=None, tags=None, base=0):
    vendor = '10de' if product == '20b5' else '8086'
    addresses = [f'0000:{base + i:02x}:00.0' for i in range(free)] if dev_type != 'type-VF' else \
        [f'0000:3b:02.{i}' for i in range(free)]
    return {'count': free, 'total': total if total is not None else free + allocated + unavailable, 'allocated': allocated,
            'unavailable': unavailable, 'vendor_id': vendor, 'product_id': product, 'dev_type': dev_type, 'numa_node': numa,
            'parent_addr': parent, 'tags': tags or {}, 'free_addresses': addresses}


HOSTVARS = {
    # 1 free A100 (1 allocated) and 3 free VFs tagged physnet1
    'compute-a': {'ansible_facts': {'pci_hypervisor_hostname': 'compute-a.example', 'pci_stats': [
        pool('20b5', 'type-PCI', 1, allocated=1, base=0x3c),
        pool('154c', 'type-VF', 3, allocated=1, parent='0000:3b:00.0', tags={'physical_network': 'physnet1'})]}},
    # 2 free A100s on NUMA 1, no VFs
    'compute-b': {'ansible_facts': {'pci_hypervisor_hostname': 'compute-b', 'pci_stats': [
        pool('20b5', 'type-PCI', 2, unavailable=1, numa=1, base=0x86)]}},
    # hypervisor_pci_stats never ran here
    'compute-c': {'ansible_facts': {'distribution': 'Debian'}},
    # not in the play: its facts come from the fact cache
    'compute-d': {'ansible_facts': {'pci_stats': [pool('20b5', 'type-PCI', 4, base=0x10)]}},
}


def run(args, hosts=('compute-a', 'compute-b', 'compute-c'), check_mode=False, hostvars=None):
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    action = ActionModule(task, MagicMock(), MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    return action.run(task_vars={'ansible_play_hosts_all': list(hosts), 'hostvars': hostvars or HOSTVARS})


def test_three_hosts_one_without_facts():
    result = run({})
    fleet = result['fleet']
    assert not result.get('failed') and result['changed'] is False
    assert [(h['name'], h['status'], h['hypervisor_hostname']) for h in fleet['hosts']] == [
        ('compute-a', 'ok', 'compute-a.example'), ('compute-b', 'ok', 'compute-b'), ('compute-c', 'missing', None)]
    assert fleet['missing'] == ['compute-c']
    assert fleet['hosts'][2]['reason'].startswith('no pci_stats fact')
    assert fleet['totals'] == {'count': 6, 'total': 9, 'allocated': 2, 'unavailable': 1}
    assert [(p['product_id'], p['count'], p['total'], p['hosts']) for p in fleet['pools']] == [
        ('20b5', 3, 5, ['compute-a', 'compute-b']), ('154c', 3, 4, ['compute-a'])]


def test_a_request_only_one_host_can_satisfy():
    result = run({'request': 'gpu:1,vf:2', 'aliases': ALIASES})
    assert result['candidates'] == [{'host': 'compute-a', 'hypervisor_hostname': 'compute-a.example', 'free': {'gpu': 1, 'vf': 3},
                                     'devices': {'gpu': ['0000:3c:00.0'], 'vf': ['0000:3b:02.0', '0000:3b:02.1']}}]
    assert result['rejected'] == {'compute-b': 'vf: 2 requested, 0 free: no whitelisted device of this host matches it',
                                  'compute-c': 'its pci_stats are missing'}


def test_candidates_best_first_and_hosts_from_the_fact_cache():
    # under --limit the play has compute-a only; hosts: names the others, read from cached facts
    result = run({'request': [{'alias': 'gpu', 'count': 1}], 'aliases': ALIASES,
                  'hosts': ['compute-a', 'compute-b', 'compute-d']}, hosts=['compute-a'])
    assert [(c['host'], c['free']) for c in result['candidates']] == [
        ('compute-d', {'gpu': 4}), ('compute-b', {'gpu': 2}), ('compute-a', {'gpu': 1})]


def test_a_jmespath_query():
    result = run({'query': "hosts[?status=='ok'].{name: name, free: totals.count}"})
    assert result['query_result'] == [{'name': 'compute-a', 'free': 4}, {'name': 'compute-b', 'free': 2}]
    with_candidates = run({'query': 'candidates[0].host', 'request': 'gpu:2', 'aliases': ALIASES})
    assert with_candidates['query_result'] == 'compute-b'


def test_a_host_outside_the_inventory_is_missing_not_an_error():
    """A sliced job's inventory holds its slice only: the other hosts named in hosts are missing."""
    result = run({'hosts': ['compute-a', 'compute-z']})
    assert not result.get('failed'), result
    assert result['fleet']['missing'] == ['compute-z']
    assert [host['name'] for host in result['fleet']['hosts'] if host['status'] == 'ok'] == ['compute-a']


@pytest.mark.parametrize('args, message', [
    ({'request': 'gpu:1'}, 'request: needs aliases to say what each alias name means'),
    ({'request': 'gpu:x', 'aliases': ALIASES}, "request: count 'x' in 'gpu:x' is not a whole number"),
    ({'request': 'tpu:1', 'aliases': ALIASES}, "request: 'tpu:1' names unknown alias 'tpu' (known: gpu, vf)"),
    ({'query': 'hosts[?'}, "query: 'hosts[?' is not a valid JMESPath expression"),
    ({'aliases': [{'name': 'gpu', 'vendor_id': 10}]}, "aliases[0].vendor_id: 10 must be exactly 4 hex digits"),
])
def test_bad_input_is_one_clear_message(args, message):
    result = run(args)
    assert result['failed'] is True and result['msg'].startswith(message), result['msg']


def test_facts_that_are_not_pools_make_the_host_missing():
    hostvars = dict(HOSTVARS, **{'compute-c': {'ansible_facts': {'pci_stats': [{'count': 'two'}]}}})
    fleet = run({}, hostvars=hostvars)['fleet']
    assert fleet['missing'] == ['compute-c']
    assert fleet['hosts'][2]['reason'] == 'pci_stats[0] lacks total, allocated, unavailable, vendor_id, product_id, dev_type'


def test_dest_written_once_and_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / 'report'
    checked = run({'dest': str(dest)}, check_mode=True)
    assert checked['changed'] is True and not dest.exists()
    first = run({'dest': str(dest)})
    assert first['changed'] is True and first['files'] == [str(dest / 'fleet.json'), str(dest / 'fleet.html')]
    assert json.loads((dest / 'fleet.json').read_text())['totals']['count'] == 6
    page = (dest / 'fleet.html').read_text()
    assert '<title>PCI fleet</title>' in page and 'compute-a.example' in page and 'compute-c: no pci_stats fact' in page
    assert run({'dest': str(dest)})['changed'] is False
    assert run({'dest': str(dest)}, check_mode=True)['changed'] is False
    assert run({'dest': str(dest), 'title': 'Rack 7'})['changed'] is True and '<title>Rack 7</title>' in (dest / 'fleet.html').read_text()
    (tmp_path / 'file').write_text('')
    assert run({'dest': str(tmp_path / 'file')})['msg'] == f"dest: '{tmp_path / 'file'}' exists and is not a directory"


def test_the_page_escapes_what_it_shows(tmp_path):
    hostvars = {'<b>x</b>': {'ansible_facts': {'pci_stats': [pool('20b5', 'type-PCI', 1, tags={'note': '<script>'})]}}}
    run({'dest': str(tmp_path)}, hosts=['<b>x</b>'], hostvars=hostvars)
    page = (tmp_path / 'fleet.html').read_text()
    assert '<script>' not in page and '&lt;script&gt;' in page and '&lt;b&gt;x&lt;/b&gt;' in page


def test_pools_with_unreadable_addresses_reject_that_host_only():
    broken = pool('20b5', 'type-PCI', 1, base=0x3c)
    broken['free_addresses'] = ['../../etc']
    hostvars = dict(HOSTVARS, **{'compute-b': {'ansible_facts': {'pci_stats': [broken]}}})
    result = run({'request': 'gpu:1', 'aliases': ALIASES}, hostvars=hostvars)
    assert [c['host'] for c in result['candidates']] == ['compute-a']
    assert result['rejected']['compute-b'].startswith("its pci_stats cannot be fitted: PciAddressError: invalid PCI address '../../etc'")


IOMMU = 'IOMMU group 24: 0000:86:00.1 is held by the host driver snd_hda_intel'


def test_when_no_host_fits_the_reasons_are_in_the_result_the_json_and_the_page(tmp_path):
    named = dict(pool('20b5', 'type-PCI', 2, unavailable=1, numa=1, base=0x86), unavailable_reasons={IOMMU: 1},
                 vendor_name='NVIDIA Corporation', product_name='GA100 [A100 PCIe 40GB]')
    hostvars = dict(HOSTVARS, **{'compute-b': {'ansible_facts': {'pci_hypervisor_hostname': 'compute-b', 'pci_stats': [named]}}})
    result = run({'request': 'gpu:3', 'aliases': ALIASES, 'dest': str(tmp_path)}, hostvars=hostvars)
    rejected = {'compute-a': 'gpu: 3 requested, 1 free: 1 allocated',
                'compute-b': f'gpu: 3 requested, 2 free: 1 unavailable ({IOMMU})',
                'compute-c': 'its pci_stats are missing'}
    assert result['candidates'] == [] and result['rejected'] == rejected
    report = json.loads((tmp_path / 'fleet.json').read_text())
    assert report['rejected'] == rejected and report['candidates'] == [] and report['request'] == 'gpu:3'
    stamp = report['generated_at']
    assert stamp.endswith(' UTC')
    page = (tmp_path / 'fleet.html').read_text()
    assert 'None.' not in page and 'No host can satisfy the request' in page
    assert '<td>compute-b</td><td class="why">gpu: 3 requested, 2 free: 1 unavailable (IOMMU group 24: ' in page
    assert f'<p class="meta" id="generated-at">Report of {stamp}</p>' in page
    assert '<p id="request"><b>gpu:3</b></p>' in page and '10de:20b5, type-PCI or type-VF, numa_policy legacy' in page
    # names over the ids, the aliases that match, why the grey part of the bar is grey, and its legend
    assert 'NVIDIA Corporation GA100 [A100 PCIe 40GB]<br><span class="ids">10de:20b5</span>' in page
    assert '<td>gpu</td>' in page and f'<td class="why">1 &times; {IOMMU}</td>' in page
    assert '<b>unavailable</b> (grey)' in page
    # the same content again: nothing changes, the report keeps its time
    again = run({'request': 'gpu:3', 'aliases': ALIASES, 'dest': str(tmp_path)}, hostvars=hostvars)
    assert again['changed'] is False and json.loads((tmp_path / 'fleet.json').read_text())['generated_at'] == stamp


def test_the_fleet_pools_sum_the_reasons_and_keep_the_names():
    named = dict(pool('20b5', 'type-PCI', 0, unavailable=2), unavailable_reasons={IOMMU: 1, 'the host uses it: boot VGA': 1},
                 vendor_name='NVIDIA Corporation', product_name='GA100')
    other = dict(pool('20b5', 'type-PCI', 1, unavailable=1), unavailable_reasons={IOMMU: 1})
    hostvars = {'h1': {'ansible_facts': {'pci_stats': [named]}}, 'h2': {'ansible_facts': {'pci_stats': [other]}}}
    [merged] = run({}, hosts=['h1', 'h2'], hostvars=hostvars)['fleet']['pools']
    assert merged['unavailable_reasons'] == {IOMMU: 2, 'the host uses it: boot VGA': 1}
    assert (merged['vendor_name'], merged['product_name']) == ('NVIDIA Corporation', 'GA100')
