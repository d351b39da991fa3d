# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Aliases (Nova's schema, strict) and requests for devices by alias and count."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import AliasRequest, parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import InterfaceOptions, PciDevice, auto_mac

ALIASES = parse_aliases([
    {'name': 'a1', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF', 'tags': {'physical_network': 'physnet1'}},
    {'name': 'a1', 'vendor_id': '15b3', 'product_id': '1018', 'device_type': 'type-VF'},
    {'name': 'b1', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'preferred'},
    {'name': 'pf', 'vendor_id': '8086', 'product_id': '1572', 'device_type': 'type-PF'},
])


def device(vendor, product, physfn=None, totalvfs=None):
    return PciDevice(address=PciAddress.parse('0000:3b:02.0'), vendor_id=vendor, product_id=product, class_id='020000',
                     subsystem_vendor_id=None, subsystem_product_id=None, revision='00', driver=None, numa_node=0,
                     iommu_group=1, physfn=PciAddress.parse(physfn) if physfn else None, sriov_totalvfs=totalvfs, sriov_numvfs=0)


@pytest.mark.parametrize('value, expected', [
    ('a1:2,b1:1', [AliasRequest('a1', 2), AliasRequest('b1', 1)]),
    (' a1 : 2 , b1:0 ', [AliasRequest('a1', 2), AliasRequest('b1', 0)]),
    ('pf:1', [AliasRequest('pf', 1)]),
    ([{'alias': 'a1', 'count': 2}, {'alias': 'b1', 'count': '1'}], [AliasRequest('a1', 2), AliasRequest('b1', 1)]),
    ([], []),
])
def test_valid_requests(value, expected):
    assert parse_request(value, ALIASES) == expected


@pytest.mark.parametrize('value, message', [
    ('a1', "request: 'a1' has no count (expected alias:count)"),
    ('a1:', "request: 'a1:' has no count (expected alias:count)"),
    ('a1:x', "request: count 'x' in 'a1:x' is not a whole number"),
    ('a1:-1', "request: count '-1' in 'a1:-1' must be 0 or more"),
    ('a1:2:3', "request: 'a1:2:3' has more than one \":\" (expected alias:count)"),
    ('a1,b1:2', "request: 'a1' has no count (expected alias:count)"),
    ('zz:1', "request: 'zz:1' names unknown alias 'zz' (known: a1, b1, pf)"),
    ('a1:1,,b1:1', "request: part 2 of 'a1:1,,b1:1' is empty"),
    ('a1:1,', "request: part 2 of 'a1:1,' is empty"),
    (':2', "request: ':2' has no alias name (expected alias:count)"),
    ('a1:1.5', "request: count '1.5' in 'a1:1.5' is not a whole number"),
    ('a1:1,a1:2', "request: alias 'a1' is requested twice; give one count per alias"),
    ('  ', "request: '  ' is empty (expected alias:count[,alias:count])"),
    ([{'alias': 'a1'}], "request[0]: {'alias': 'a1'} must be a dict with exactly the keys alias and count"),
    ([{'alias': 'a1', 'count': True}], 'request[0]: count True in '),
    ([{'alias': 'a1', 'count': -2}], "request[0]: count '-2' in 'a1:-2' must be 0 or more"),
    (3, 'request: 3 must be a string like "a1:2,b1:1" or a list of {alias, count}'),
])
def test_request_errors_name_the_part(value, message):
    with pytest.raises(SpecError) as info:
        parse_request(value, ALIASES)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize('value, message', [
    ('a1:0', "pci_request: count '0' in 'a1:0' must be 1 or more"),
    ('a1:2,b1:0', "pci_request: count '0' in 'b1:0' must be 1 or more"),
    ('a1:-1', "pci_request: count '-1' in 'a1:-1' must be 1 or more"),
    ([{'alias': 'b1', 'count': 0}], "pci_request[0]: count '0' in 'b1:0' must be 1 or more"),
])
def test_min_count_is_the_floor_the_message_names(value, message):
    with pytest.raises(SpecError) as info:
        parse_request(value, ALIASES, where='pci_request', min_count=1)
    assert str(info.value) == message
    assert parse_request('a1:1,b1:2', ALIASES, min_count=1) == [AliasRequest('a1', 1), AliasRequest('b1', 2)]


def test_alias_matching():
    assert ALIASES['a1'].matches(device('8086', '154c', physfn='0000:3b:00.0'), {'physical_network': 'physnet1'})
    assert not ALIASES['a1'].matches(device('8086', '154c', physfn='0000:3b:00.0'), {'physical_network': 'physnet2'})
    assert ALIASES['a1'].matches(device('15b3', '1018', physfn='0000:5e:00.0'), {})          # the OR-ed second entry
    assert not ALIASES['a1'].matches(device('15b3', '1018'), {})                              # not a VF
    assert ALIASES['b1'].matches(device('10de', '20b5'), {}) and ALIASES['b1'].numa_policy == 'preferred'
    assert not ALIASES['b1'].matches(device('10de', '20b5', totalvfs=4), {})                  # PFs only when asked for
    assert ALIASES['pf'].matches(device('8086', '1572', totalvfs=64), {}) and ALIASES['pf'].device_type == 'type-PF'
    assert ALIASES['a1'].numa_policy == 'legacy'


def test_tags_compare_as_text():
    aliases = parse_aliases([{'name': 't', 'tags': {'trusted': True}}])
    assert aliases['t'].matches(device('8086', '154c'), {'trusted': 'true'})
    assert not aliases['t'].matches(device('8086', '154c'), {'trusted': 'false'})


@pytest.mark.parametrize('entries, message', [
    ([{'name': 'a1', 'vendor': '8086'}], "aliases[0]: unknown key(s) 'vendor'"),
    ([{'vendor_id': '8086'}], 'aliases[0].name: None must be'),
    ([{'name': 'a:1'}], "aliases[0].name: 'a:1' must not contain \",\" or \":\""),
    ([{'name': 'a1', 'vendor_id': '0x8086'}], "aliases[0].vendor_id: '0x8086' must be exactly 4 hex digits"),
    ([{'name': 'a1', 'product_id': 1572}], 'aliases[0].product_id: 1572 must be exactly 4 hex digits'),
    ([{'name': 'a1', 'device_type': 'VF'}], "aliases[0].device_type: 'VF' must be one of type-PCI, type-PF, type-VF"),
    ([{'name': 'a1', 'numa_policy': 'strict'}], "aliases[0].numa_policy: 'strict' must be one of required, legacy, preferred, socket"),
    ([{'name': 'a1', 'capability_type': 'mdev'}], "aliases[0].capability_type: 'mdev' must be one of pci"),
    ([{'name': 'a1', 'tags': ['physnet1']}], 'aliases[0].tags: '),
    ([{'name': 'a1', 'device_type': 'type-VF'}, {'name': 'a1', 'device_type': 'type-PF'}],
     "aliases: alias 'a1' has entries with different device_type: 'type-VF' in aliases[0], 'type-PF' in aliases[1]"),
    ([{'name': 'a1'}, {'name': 'a1', 'numa_policy': 'required'}],
     "aliases: alias 'a1' has entries with different numa_policy: 'legacy' in aliases[0], 'required' in aliases[1] "
     "(an omitted numa_policy is legacy)"),
    ({'name': 'a1'}, 'aliases: '),
])
def test_alias_errors_name_the_field(entries, message):
    with pytest.raises(SpecError) as info:
        parse_aliases(entries)
    assert str(info.value).startswith(message)


def test_compatibility_keys_are_accepted():
    aliases = parse_aliases([{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20B5', 'capability_type': 'pci',
                              'live_migratable': 'no', 'resource_class': 'CUSTOM_A100', 'traits': 'HW_GPU'}])
    assert aliases['gpu'].entries[0].product_id == '20b5'


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@given(st.text(max_size=40))
def test_any_request_string_is_parsed_or_rejected_cleanly(text):
    try:
        requests = parse_request(text, ALIASES)
    except SpecError as exc:
        assert str(exc).startswith('request')
        return
    assert all(request.alias in ALIASES and request.count >= 0 for request in requests)


@given(st.lists(st.dictionaries(st.sampled_from(['alias', 'count', 'x']), values, max_size=3), max_size=3) | values)
def test_any_request_value_is_parsed_or_rejected_cleanly(value):
    try:
        parse_request(value, ALIASES)
    except SpecError as exc:
        assert str(exc).startswith('request')


@given(st.lists(st.dictionaries(st.sampled_from(['name', 'vendor_id', 'product_id', 'device_type', 'numa_policy', 'tags', 'bogus']),
                                values, max_size=4), max_size=3) | values)
def test_any_alias_list_is_parsed_or_rejected_cleanly(value):
    try:
        aliases = parse_aliases(value)
    except SpecError as exc:
        assert str(exc).startswith('aliases')
        return
    for alias in aliases.values():
        alias.matches(device('8086', '154c'), {})


# -- interface options (an alias's `interface`, pci_attachment's `interface`) -------------------------------

@pytest.mark.parametrize('value, expected', [
    ({'vlan': 100, 'mac': 'AUTO', 'trust': 'yes'}, InterfaceOptions(vlan=100, mac='auto', trust=True)),
    ({'vlan': '4094', 'spoofchk': False, 'link_state': 'disable'}, InterfaceOptions(vlan=4094, spoofchk=False, link_state='disable')),
    ({'mac': [' 02:AA:00:00:00:01 ', '52:54:00:00:00:02']}, InterfaceOptions(mac=('02:aa:00:00:00:01', '52:54:00:00:00:02'))),
    ({'vlan': None, 'mac': None, 'trust': None}, InterfaceOptions()),          # what Ansible's argument spec fills in
])
def test_interface_options(value, expected):
    assert InterfaceOptions.parse('interface', value) == expected


@pytest.mark.parametrize('value, message', [
    ({'vlan': 0}, 'interface.vlan: 0 must be a VLAN id from 1 to 4094'),
    ({'vlan': True}, 'interface.vlan: True must be a VLAN id from 1 to 4094'),
    ({'vlan': '１００'}, "interface.vlan: '１００' must be a VLAN id from 1 to 4094"),
    ({'mac': []}, 'interface.mac: an empty list gives no device a MAC address (use auto or list them)'),
    ({'mac': ['02:00:00:00:00:01', '02:00:00:00:00:01']}, 'interface.mac: 02:00:00:00:00:01 is listed more than once (each interface needs its own)'),
    ({'mac': ['00:00:00:00:00:00']}, 'interface.mac[0]: 00:00:00:00:00:00 is the null address'),
    ({'mac': ['ff:ff:ff:ff:ff:ff']}, 'interface.mac[0]: ff:ff:ff:ff:ff:ff is a multicast address (the first octet is odd); a guest NIC needs a unicast one'),
    ({'mac': ['02-00-00-00-00-01']}, "interface.mac[0]: '02-00-00-00-00-01' is not a MAC address (expected six hex pairs like 02:5a:11:00:00:01)"),
    ({'mac': '02:00:00:00:00:01'}, "interface.mac: '02:00:00:00:00:01' must be auto or a list of MAC addresses, one per device"),
    ({'link_state': 'up'}, "interface.link_state: 'up' must be one of auto, enable, disable"),
    ({'tagged': True}, "interface: unknown key(s) 'tagged' (known: vlan, mac, trust, spoofchk, link_state)"),
    ('vlan=100', "interface: 'vlan=100' must be a dict like {vlan: 100, mac: auto, trust: true}"),
])
def test_interface_errors_name_the_field(value, message):
    with pytest.raises(SpecError) as info:
        InterfaceOptions.parse('interface', value)
    assert str(info.value) == message


def test_an_alias_s_interface_is_shared_by_its_entries_and_overridden_key_by_key():
    aliases = parse_aliases([{'name': 'nic', 'vendor_id': '8086', 'interface': {'vlan': 100, 'trust': True}},
                             {'name': 'nic', 'vendor_id': '15b3', 'interface': {'trust': True, 'vlan': 100}}])
    assert aliases['nic'].interface == InterfaceOptions(vlan=100, trust=True)
    assert aliases['nic'].interface.merged(InterfaceOptions(vlan=200, spoofchk=False)) == InterfaceOptions(vlan=200, trust=True, spoofchk=False)
    with pytest.raises(SpecError) as info:
        parse_aliases([{'name': 'nic', 'interface': {'vlan': 100}}, {'name': 'nic', 'interface': {'vlan': 200}}])
    assert str(info.value) == "aliases: alias 'nic' has entries with different interface: {vlan: 100} in aliases[0], {vlan: 200} in aliases[1]"


def test_auto_macs_are_stable_locally_administered_unicast_and_differ_per_attachment():
    macs = {auto_mac(f'00000000-0000-4000-8000-{n:012d}') for n in range(1000)}
    assert len(macs) == 1000
    assert all(int(mac[:2], 16) & 0b11 == 0b10 for mac in macs)
    assert auto_mac('a') == auto_mac('a') != auto_mac('a', attempt=1)


# -- mdev aliases ---------------------------------------------------------------------------------------------

def test_an_mdev_alias_matches_types_by_id_or_name_and_never_a_whole_device():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._model import MdevType
    aliases = parse_aliases([{'name': 'vgpu', 'mdev_type': 'GRID A100-4*', 'vendor_id': '10de'}, {'name': 'serial', 'mdev_type': 'mtty-2'}])
    a4c = MdevType('nvidia-470', 'GRID A100-4C', None, 'vfio-pci', 9)
    gpu = PciDevice(PciAddress.parse('0000:3c:00.0'), '10de', '20b5', '030200', None, None, None, 'nvidia', 0, 1, None, None, None)
    assert aliases['vgpu'].is_mdev and aliases['vgpu'].matches_mdev(a4c, gpu, {})
    assert not aliases['vgpu'].matches_mdev(a4c, None, {})                      # vendor_id: a virtual parent has none
    assert not aliases['vgpu'].matches(gpu, {})                                 # never the whole device
    assert aliases['serial'].matches_mdev(MdevType('mtty-2', 'Dual port serial', None, 'vfio-pci', 3), None, {})
    assert not aliases['serial'].matches_mdev(MdevType('mtty-1', 'Single port serial', None, 'vfio-pci', 3), None, {})


@pytest.mark.parametrize('entries, message', [
    ([{'name': 'v', 'mdev_type': '../x'}],
     'aliases[0].mdev_type: \'../x\' must be an mdev type id or name like "nvidia-470" or "GRID A100-4C" ("*" and "?" as wildcards)'),
    ([{'name': 'v', 'mdev_type': 'mtty-2', 'device_type': 'type-VF'}],
     'aliases[0]: device_type and mdev_type are both given; an alias asks for whole devices or for mediated devices of a type, not both'),
    ([{'name': 'v', 'mdev_type': 'mtty-2'}, {'name': 'v', 'vendor_id': '10de'}],
     "aliases: alias 'v' asks for mediated devices (mdev_type) in aliases[0] and for whole devices in aliases[1]; give each its own name"),
])
def test_mdev_alias_errors(entries, message):
    with pytest.raises(SpecError) as info:
        parse_aliases(entries)
    assert str(info.value) == message
