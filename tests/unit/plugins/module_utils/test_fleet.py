# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fleet.aggregate on facts it did not write: whatever a host's facts hold, the host is counted or listed as missing."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import aggregate

GOOD = {'count': 1, 'total': 2, 'allocated': 1, 'unavailable': 0, 'vendor_id': '10de', 'product_id': '20b5',
        'dev_type': 'type-PCI', 'numa_node': 0, 'parent_addr': None, 'tags': {}, 'free_addresses': ['0000:3c:00.0']}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
                    max_leaves=12)
POOLISH = st.fixed_dictionaries({key: st.one_of(st.just(value), JSON) for key, value in GOOD.items()})
FACTS = st.one_of(st.none(), JSON, st.fixed_dictionaries({'pci_stats': st.one_of(JSON, st.lists(POOLISH, max_size=3))}))


@settings(max_examples=300, deadline=None)
@given(st.lists(FACTS, max_size=4))
def test_any_facts_are_counted_or_listed_missing(bad_facts):
    hosts = [('good', {'pci_stats': [GOOD]})]
    hosts += [(f'h{index}', facts if isinstance(facts, dict) else None) for index, facts in enumerate(bad_facts)]
    fleet = aggregate(hosts)
    assert [host['name'] for host in fleet['hosts']] == [name for name, _facts in hosts]
    ok = [host for host in fleet['hosts'] if host['status'] == 'ok']
    assert fleet['missing'] == [host['name'] for host in fleet['hosts'] if host['status'] == 'missing']
    assert all(isinstance(host['totals']['count'], int) for host in ok)
    assert fleet['totals']['count'] == sum(host['totals']['count'] for host in ok)
    assert fleet['hosts'][0]['status'] == 'ok'


def test_ids_of_another_type_still_sort():
    odd = dict(GOOD, vendor_id=4318, tags={'rack': 7})
    fleet = aggregate([('a', {'pci_stats': [GOOD]}), ('b', {'pci_stats': [odd]})])
    assert [pool['vendor_id'] for pool in fleet['pools']] == ['10de', 4318] and fleet['missing'] == []
