# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The faster paths give the answers of the plain ones: pci.ids looked up by index as parsed whole, requests
fitted once per kind of host as fitted host by host, the large-fleet page. No timing here (bench/ measures)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from ansible_collections.passthrough.libvirt.plugins.module_utils import _fleet, _pciids
from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request

# -- pci.ids ------------------------------------------------------------------------------------------

LINES = st.sampled_from([
    '8086  Intel Corporation', '10de  NVIDIA Corporation', '10DE  NVIDIA upper case', '8086  Intel again', '8086  ',
    '\t154c  Ethernet Virtual Function 700 Series', '\t154C  Upper case device', '\t1572  X710', '\t1572  ', '\t1572   spaced  ',
    '\t\t8086 0006  a subsystem', '\t', '', '# comment', '#8086  commented vendor', 'C 02  Network controller',
    '\t00  Ethernet controller', 'zzzz  not hex', 'c 02  lower c is a vendor line', '  ', '1af4  Red Hat, Inc. \u00e9',
    '\t1000  Virtio \u00fc network device', '10de  NVIDIA\tCorporation', '\t20b5  GA100 [A100 PCIe 80GB]',
])
IDS = st.sampled_from(['8086', '10de', '1af4', 'zzzz', 'c 02', '154c', '1572', '20b5', '1000', '0000', '00'])


@settings(max_examples=200, deadline=None)
@given(st.lists(LINES, max_size=14), st.booleans(), IDS, IDS)
def test_indexed_lookup_answers_as_the_whole_parse(lines, final_newline, vendor, product):
    text = '\n'.join(lines) + ('\n' if final_newline else '')
    whole = _pciids.PciIds.parse(text)
    indexed = _pciids.from_bytes(text.encode('utf-8'))
    assert indexed.vendor_name(vendor) == whole.vendor_name(vendor)
    assert indexed.device_name(vendor, product) == whole.device_name(vendor, product)
    assert indexed.device_name(vendor, product) == whole.device_name(vendor, product)     # remembered
    assert indexed.vendors == whole.vendors and indexed.devices == whole.devices


def test_other_line_ends_are_read_as_before():
    text = b'8086  Intel Corporation\r\n\t154c  Ethernet Virtual Function 700 Series\r\n10de  NVIDIA\r\n'
    ids = _pciids.from_bytes(text)
    assert ids.vendor_name('8086') == 'Intel Corporation' and ids.vendor_name('10de') == 'NVIDIA'
    assert ids.device_name('8086', '154c') == 'Ethernet Virtual Function 700 Series'


def test_the_system_database_answers_as_parsed_whole():
    path = _pciids.load().path
    if path is None:
        return      # no pci.ids on this machine: nothing to compare
    whole = _pciids.PciIds.parse(_pciids._read(path).decode('utf-8', 'replace'))   # pylint: disable=protected-access
    indexed = _pciids.from_bytes(_pciids._read(path))   # pylint: disable=protected-access
    for vendor, name in list(whole.vendors.items())[::7]:
        assert indexed.vendor_name(vendor) == name
    for (vendor, product), name in list(whole.devices.items())[::13]:
        assert indexed.device_name(vendor, product) == name
    assert indexed.device_name('8086', 'fffe') == whole.device_name('8086', 'fffe')
    assert indexed.vendor_name('fff0') == whole.vendor_name('fff0')


# -- the fleet ----------------------------------------------------------------------------------------

ALIASES = parse_aliases([{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
                         {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF',
                          'tags': {'physical_network': 'physnet1'}}])


def _host(index: int, free_gpus: int, free_vfs: int, parent: str = '0000:3b:00.0') -> tuple[str, dict]:
    bus = parent.split(':')[1]
    return (f'h{index:02d}', {'pci_stats': [
        {'count': free_gpus, 'total': 2, 'allocated': 2 - free_gpus, 'unavailable': 0, 'vendor_id': '10de', 'product_id': '20b5',
         'dev_type': 'type-PCI', 'numa_node': 0, 'parent_addr': None, 'tags': {},
         'free_addresses': [f'0000:17:00.{n}' for n in range(free_gpus)]},
        {'count': free_vfs, 'total': 4, 'allocated': 4 - free_vfs, 'unavailable': 0, 'vendor_id': '8086', 'product_id': '154c',
         'dev_type': 'type-VF', 'numa_node': 1, 'parent_addr': parent, 'tags': {'physical_network': 'physnet1'},
         'free_addresses': [f'0000:{bus}:02.{n}' for n in range(free_vfs)]},
    ]})


def _fit_one_by_one(fleet, request):
    """candidates() with nothing remembered from one host to the next."""
    found, rejected = [], {}
    for host in fleet['hosts']:
        alone, why = _fleet.candidates(dict(fleet, hosts=[host]), request, ALIASES)
        found += alone
        rejected.update(why)
    found.sort(key=lambda entry: (-sum(entry['free'].values()), entry['host']))
    return found, rejected


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4), st.sampled_from(['0000:3b:00.0', '0000:5e:00.0'])), min_size=1, max_size=8),
       st.sampled_from(['gpu:1', 'gpu:2,vf:2', 'vf:3', 'gpu:1,vf:4', 'gpu:0,vf:1']))
def test_hosts_alike_are_fitted_once_with_the_same_answer(shapes, text):
    fleet = _fleet.aggregate([_host(index, *shape) for index, shape in enumerate(shapes)])
    request = parse_request(text, ALIASES)
    assert _fleet.candidates(fleet, request, ALIASES) == _fit_one_by_one(fleet, request)


def test_a_fit_is_not_shared_between_the_entries_of_two_hosts():
    fleet = _fleet.aggregate([_host(1, 2, 4), _host(2, 2, 4)])
    found, _rejected = _fleet.candidates(fleet, parse_request('gpu:1', ALIASES), ALIASES)
    found[0]['devices']['gpu'].append('changed')
    assert found[1]['devices']['gpu'] == ['0000:17:00.0']


def test_a_large_fleet_page_has_one_line_per_host():
    fleet = _fleet.aggregate([_host(index, 1, 2) for index in range(5)] + [('gone', None)])
    full = _fleet.render_html(fleet)
    summary = _fleet.render_html(fleet, host_detail_limit=4)
    assert full.count('<table class="host">') == 5 and 'id="hosts-summary"' not in full
    assert '<table class="host">' not in summary and summary.count('<tr id="host-h0') == 5
    assert 'id="hosts-summary"' in summary and 'id="missing-gone"' in summary
    assert _fleet.render_html(fleet, host_detail_limit=5) == full


def test_rows_of_odd_facts_are_drawn_as_before():
    odd = dict(_host(1, 1, 2)[1]['pci_stats'][0], count=True, allocated=1, vendor_id=4318, tags={'rack': 7})
    fleet = _fleet.aggregate([('a', {'pci_stats': [odd]}), _host(2, 1, 2)])
    page = _fleet.render_html(fleet, aliases=ALIASES)
    assert '<td class="n">True</td>' in page and '4318' in page and 'rack=7' in page
