# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Nova's whitelist cases (nova/tests/unit/pci/test_devspec.py and test_whitelist.py), case for case.

Each row is the input of one of Nova's cases and the outcome Nova gives. The rows where this
collection keeps a different outcome are in KEPT_DIFFERENCES, with the outcome Nova gives, the one
given here, and the reason (docs/whitelist.md says the same in prose).
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciDevice
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import managed

REFUSED = 'refused'


def pci(address, vendor='8086', product='5057', physfn=None, totalvfs=None, netdevs=(), virtfns=()):
    return PciDevice(
        address=PciAddress.parse(address), vendor_id=vendor, product_id=product, class_id='020000',
        subsystem_vendor_id=None, subsystem_product_id=None, revision='01', driver=None, numa_node=0, iommu_group=7,
        physfn=PciAddress.parse(physfn) if physfn else None, sriov_totalvfs=totalvfs, sriov_numvfs=len(virtfns) or None,
        netdevs=list(netdevs), virtfns=[PciAddress.parse(vf) for vf in virtfns])


# The host of Nova's cases: the device they try is a VF (8086:5057) at 0000:0a:00.5 whose PF is
# 0000:0a:00.0 (interface eth0). The others: a VF of test_whitelist.py, 0000:00:0a.1 (8086:0001,
# PF 0000:00:0a.0), a device without a PF at 0000:00:00.5, and one at 0000:0b:00.5.
HOST = {device.address: device for device in (
    pci('0000:0a:00.0', product='1572', totalvfs=8, netdevs=['eth0'], virtfns=['0000:0a:00.5']),
    pci('0000:0a:00.5', physfn='0000:0a:00.0'),
    pci('0000:00:0a.0', product='1572', totalvfs=4, virtfns=['0000:00:0a.1']),
    pci('0000:00:0a.1', product='0001', physfn='0000:00:0a.0'),
    pci('0000:00:00.5'),
    pci('0000:0b:00.5'),
)}


def outcome(spec, address):
    """True or False: whether ``spec`` (one entry) matches the device at ``address``; REFUSED if it does not parse."""
    try:
        whitelist = Whitelist.parse([spec])
    except SpecError:
        return REFUSED
    return whitelist.match(HOST[PciAddress.parse(address)], HOST) is not None


VF = '0000:0a:00.5'
REGEX_ANY4 = {'domain': '.*', 'bus': '.*', 'slot': '.*', 'function': '.*'}

# (what the case shows, entry, device address, Nova's outcome = the outcome here)
SAME_AS_NOVA = [
    # globs, field by field
    ('full address', {'address': '0000:0a:00.5'}, VF, True),
    ('any domain', {'address': '*:0a:00.5'}, VF, True),
    ('any bus', {'address': '0000:*:00.5'}, VF, True),
    ('any slot', {'address': '0000:0a:*.5'}, VF, True),
    ('any function', {'address': '0000:0a:00.*'}, VF, True),
    ('other domain', {'address': '0010:0a:00.5'}, VF, False),
    ('other bus', {'address': '0000:0b:00.5'}, VF, False),
    ('other slot', {'address': '*:0a:01.5'}, VF, False),
    ('other function', {'address': '0000:0a:*.4'}, VF, False),
    ('spaces around glob parts', {'address': '*: *: *.6', 'vendor_id': '8086', 'product_id': '5057'}, VF, False),
    ('partial glob, empty parts are any', {'address': ':0a:00.', 'physical_network': 'hr_net'}, VF, True),
    ('function only', {'address': '.5', 'physical_network': 'hr_net'}, VF, True),
    ('whitelist glob', {'address': '*:00:0a.*', 'physical_network': 'hr_net'}, '0000:00:0a.1', True),
    ('whitelist glob, other slot', {'address': '*:00:0b.*', 'physical_network': 'hr_net'}, '0000:00:0a.1', False),
    # glob errors
    ('four address parts', {'address': '0000:0a:0b:00.5'}, VF, REFUSED),
    ('domain before a full address', {'address': '00:0000:0a:00.5'}, VF, REFUSED),
    ('function not hex', {'address': '0000:h4.12:6'}, VF, REFUSED),
    ('function above 7', {'address': '0000:0a:00.8'}, VF, REFUSED),
    ('bus above ff', {'address': '0000:100:00.5'}, VF, REFUSED),
    ('slot above 1f', {'address': '0000:0a:20.5'}, VF, REFUSED),
    ('address neither string nor dict', {'address': ['.*', '.*', '00', '[6-7]']}, VF, REFUSED),
    # regex dicts
    ('regex, all fields', {'address': {'domain': '.*', 'bus': '0a', 'slot': '00', 'function': '[5-6]'}}, VF, True),
    ('regex, any slot', {'address': {'domain': '.*', 'bus': '0a', 'slot': '.*', 'function': '[4-5]'}}, VF, True),
    ('regex, other bus', {'address': {'domain': '.*', 'bus': '0a', 'slot': '00', 'function': '[5-6]'}}, '0000:0b:00.5', False),
    ('regex, bus 02', {'address': {'domain': '.*', 'bus': '02', 'slot': '.*', 'function': '[4-5]'}}, '0000:0b:00.5', False),
    ('regex, bus 02, slot class', {'address': {'domain': '.*', 'bus': '02', 'slot': '[0-3]', 'function': '.*'}}, '0000:0b:00.5', False),
    ('regex, function in class', {'address': {'domain': '.*', 'bus': '.*', 'slot': '00', 'function': '[5-6]'}}, VF, True),
    ('regex, function not in class', {'address': {'domain': '.*', 'bus': '.*', 'slot': '00', 'function': '[6-7]'}}, VF, False),
    ('regex without bus', {'address': {'domain': '.*', 'slot': '00', 'function': '[5-6]'}}, VF, True),
    ('regex without function', {'address': {'domain': '.*', 'bus': '.*', 'slot': '00'}}, VF, True),
    ('whitelist regex', {'address': {'domain': '.*', 'bus': '.*', 'slot': '0a', 'function': '[0-1]'}}, '0000:00:0a.1', True),
    ('whitelist regex, other function', {'address': {'domain': '.*', 'bus': '.*', 'slot': '0a', 'function': '[2-3]'}},
     '0000:00:0a.1', False),
    ('regex "*" does not compile', {'address': {'domain': '*', 'bus': '02', 'slot': '01', 'function': '[0-2]'}}, VF, REFUSED),
    ('regex with a bad class', {'address': {'domain': '.*', 'bus': '.*', 'slot': '00', 'function': '[6[-7]'}}, VF, REFUSED),
    # ids
    ('ids and a glob', {'vendor_id': '8086', 'address': '*: *: *.5', 'product_id': '5057'}, VF, True),
    ('other vendor', {'vendor_id': '8087', 'address': '*: *: *.5', 'product_id': '5057'}, VF, False),
    ('other product', {'vendor_id': '8086', 'address': '*: *: *.5', 'product_id': '5056'}, VF, False),
    ('vendor above ffff', {'vendor_id': '80860', 'address': '*:*:*.5', 'product_id': '5057'}, VF, REFUSED),
    ('product above ffff', {'vendor_id': '8086', 'address': '*:*:*.5', 'product_id': '50570'}, VF, REFUSED),
    ('ids without an address', {'vendor_id': '8086', 'product_id': '5057'}, VF, True),
    ('a device without a PF', {'vendor_id': '8086', 'address': '*:*:*.5', 'product_id': '5057'}, '0000:00:00.5', True),
    ('whitelist ids', {'product_id': '0001', 'vendor_id': '8086'}, '0000:00:0a.1', True),
    # a PF names its VFs
    ('address of the PF', {'address': '0000:0a:00.0', 'physical_network': 'hr_net'}, VF, True),
    ('the device\'s own address', {'address': '0000:0a:00.5', 'physical_network': 'hr_net'}, VF, True),
    ('regex naming the PF', {'address': {'domain': '0000', 'bus': '0a', 'slot': '00', 'function': '0'}}, VF, True),
    ('devname of the PF', {'devname': 'eth0', 'physical_network': 'hr_net'}, VF, True),
    ('devname of no device', {'devname': 'lo', 'physical_network': 'hr_net'}, VF, False),
    ('devname and address', {'devname': 'eth0', 'vendor_id': '8086', 'address': '*:*:*.5', 'physical_network': 'hr_net'},
     VF, REFUSED),
    # the tags Nova reads as booleans
    ('managed not a boolean', {'vendor_id': '8086', 'managed': 'invalid'}, VF, REFUSED),
    ('live_migratable not a boolean', {'vendor_id': '8086', 'live_migratable': 'invalid'}, VF, REFUSED),
]


@pytest.mark.parametrize('case, spec, address, nova', SAME_AS_NOVA, ids=[row[0] for row in SAME_AS_NOVA])
def test_nova_whitelist_cases(case, spec, address, nova):
    assert outcome(spec, address) == nova


# (what the case shows, entry, device address, Nova's outcome, the outcome here, why)
KEPT_DIFFERENCES = [
    ('regex is a prefix match in Nova', {'address': {'domain': '.*', 'bus': '0a', 'slot': '[0-3]', 'function': '.*'}}, VF,
     True, False, 'a regex matches the whole field: "[0-3]" is one digit, the slot has two'),
    ('domain above ffff', {'address': '10000:0a:00.5'}, VF,
     REFUSED, False, 'PCI domains above ffff exist (Intel VMD), so they are accepted'),
    ('blank devname', {'devname': '', 'physical_network': 'hr_net'}, VF,
     True, REFUSED, 'an empty devname is a slip that would whitelist every device of the host'),
    ('misspelt match key', {'vendor_id': '8086', 'prodcut_id': '5058'}, VF,
     True, REFUSED, 'as a tag, the misspelt key would let the entry match every product of the vendor'),
    ('remote_managed on a PF', {'vendor_id': '8086', 'address': '0000:0a:00.0', 'product_id': '1572', 'remote_managed': 'true'},
     '0000:0a:00.0', REFUSED, True, 'remote_managed is a plain tag here: its checks serve a networking backend this collection lacks'),
]


@pytest.mark.parametrize('case, spec, address, nova, ours, why', KEPT_DIFFERENCES, ids=[row[0] for row in KEPT_DIFFERENCES])
def test_kept_differences(case, spec, address, nova, ours, why):
    assert outcome(spec, address) == ours != nova


@pytest.mark.parametrize('spec, message', [
    ({'devname': 'eth0', 'address': '*:*:*.5'}, "device_spec[0]: devname 'eth0' and address '*:*:*.5' are both given"),
    ({'devname': ''}, "device_spec[0].devname: '' must be a non-empty string"),
    ({'vendor_id': '80860'}, "device_spec[0].vendor_id: '80860' is not a 4-digit hex id"),
    ({'vendor_id': 8086}, 'device_spec[0].vendor_id: 8086 must be a string'),        # Nova fails on .strip()
    ({'address': '0000:0a:00.8'}, "device_spec[0].address: '0000:0a:00.8' has function '8' above 0x7"),
    ({'address': {'domain': '*'}}, "device_spec[0].address.domain: '*' is not a valid regular expression"),
    ({'managed': 'invalid'}, "device_spec[0].managed: 'invalid' is not a boolean (true/false, yes/no, on/off, 1/0, t/f or y/n)"),
])
def test_refusals_name_the_field(spec, message):
    with pytest.raises(SpecError) as info:
        Whitelist.parse([spec])
    assert str(info.value).startswith(message)


def test_devname_with_an_empty_address_is_as_in_nova():
    """Nova only refuses an address that is given: "" and {} are no address, beside a devname too."""
    for address in ('', {}):
        assert outcome({'devname': 'eth0', 'address': address}, VF) is True


def test_regex_naming_a_device_that_is_not_a_pf_names_only_it():
    spec = {'address': {'domain': '0000', 'bus': '0a', 'slot': '00', 'function': '5'}}
    assert [str(a) for a in sorted(HOST) if outcome(spec, str(a))] == ['0000:0a:00.5']
    # a regex that names the PF but not in the canonical widths matches nothing (full match), so names no PF
    assert not any(outcome({'address': {'domain': '0', 'bus': '0a', 'slot': '00', 'function': '0'}}, str(a)) for a in HOST)


# -- the whitelist list (test_whitelist.py) -------------------------------------------------------

def test_entries_are_kept_in_order_and_an_empty_list_matches_nothing():
    assert len(Whitelist.parse([{'product_id': '0001', 'vendor_id': '8086'}]).entries) == 1
    assert len(Whitelist.parse([{'product_id': '0001', 'vendor_id': '8086'}, {'product_id': '0002', 'vendor_id': '8087'}]).entries) == 2
    for empty in (None, []):
        assert Whitelist.parse(empty).match(HOST[PciAddress.parse('0000:00:0a.1')], HOST) is None


# Nova's spellings, then the rest of oslo's strict set and YAML's booleans.
BOOLEAN_TAG_VALUES = [
    ('yes', 'true'), ('true', 'true'), ('1', 'true'), ('no', 'false'), ('false', 'false'), ('0', 'false'),
    ('On', 'true'), (' T ', 'true'), ('Y', 'true'), ('OFF', 'false'), ('f', 'false'), ('N', 'false'),
    (True, 'true'), (False, 'false'), (1, 'true'), (0, 'false'),
]


@pytest.mark.parametrize('tag', ['managed', 'live_migratable', 'one_time_use'])
@pytest.mark.parametrize('value, stored', BOOLEAN_TAG_VALUES)
def test_boolean_tags_are_stored_as_nova_stores_them(tag, value, stored):
    entry = Whitelist.parse([{'product_id': '0001', 'vendor_id': '8086', tag: value}]).entries[0]
    assert entry.tags[tag] == stored


@pytest.mark.parametrize('tag', ['managed', 'live_migratable', 'one_time_use'])
@pytest.mark.parametrize('value', ['invalid', 'maybe', 'enabled', '', 2, 1.0, ['yes'], {'a': 1}])
def test_other_boolean_tag_values_are_refused(tag, value):
    with pytest.raises(SpecError) as info:
        Whitelist.parse([{'vendor_id': '8086', tag: value}])
    assert str(info.value).startswith(f'device_spec[0].{tag}: {value!r} is not a boolean')


@pytest.mark.parametrize('tag', ['managed', 'live_migratable'])
def test_boolean_tags_not_given_are_not_set(tag):
    assert tag not in Whitelist.parse([{'product_id': '0001', 'vendor_id': '8086'}]).entries[0].tags


@pytest.mark.parametrize('value, expected', [(None, True), ('yes', True), ('Off', False), ('n', False), (False, False), (1, True)])
def test_managed_reads_the_checked_value(value, expected):
    entry = {'vendor_id': '8086'} if value is None else {'vendor_id': '8086', 'managed': value}
    assert managed(Whitelist.parse([entry]).entries[0]) is expected


# -- a key one typing mistake from a match key ------------------------------------------------------

@pytest.mark.parametrize('key, meant', [
    ('prodcut_id', 'product_id'), ('vendorid', 'vendor_id'), ('vendro_id', 'vendor_id'), ('adress', 'address'),
    ('addresss', 'address'), ('dev_name', 'devname'), ('Vendor_ID', 'vendor_id'), ('product-id', 'product_id'),
    ('vendor', 'vendor_id'), ('product', 'product_id'), ('class', 'class_id'), ('device_id', 'product_id'),
    ('drivers', 'driver'), ('numa_nodes', 'numa_node'), ('clas_id', 'class_id'), ('subsystem_vendor', 'subsystem_vendor_id'),
    ('subsystem_device_id', 'subsystem_product_id'), ('Address', 'address'),
])
def test_a_misspelt_match_key_is_refused(key, meant):
    with pytest.raises(SpecError) as info:
        Whitelist.parse([{'vendor_id': '8086'}, {'vendor_id': '8086', key: '154c'}])
    assert str(info.value) == (f"device_spec[1]: key {key!r} looks like a misspelt {meant!r} (a tag would match every device "
                               f"of the entry); write {meant!r}, or give the tag a name further from the match keys")


@pytest.mark.parametrize('tag', [
    'physical_network', 'trusted', 'remote_managed', 'managed', 'resource_class', 'traits', 'live_migratable', 'one_time_use',
    'capability_type', 'dev_type', 'parent_addr', 'device', 'domain', 'name', 'numa', 'label', 'physnet', 'pf', 'driver_name',
])
def test_real_tags_are_never_taken_for_misspellings(tag):
    value = 'true' if tag in ('managed', 'live_migratable', 'one_time_use') else 'x'
    assert tag in Whitelist.parse([{'vendor_id': '8086', tag: value}]).entries[0].tags
