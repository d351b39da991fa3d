# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Nova's alias and request cases (nova/tests/unit/pci/test_request.py), case for case.

Each row is the input of one of Nova's cases and the outcome Nova gives; KEPT_DIFFERENCES holds the
rows where this collection gives another outcome on purpose, with the reason (see docs/whitelist.md).
Nova's cases about Placement (pci_in_placement), the alias cache and VIF lookups have no counterpart
here and are left out.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import AliasRequest, parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciDevice

REFUSED = 'refused'

QUICK_ASSIST = {'name': 'QuickAssist', 'capability_type': 'pci', 'product_id': '4443', 'vendor_id': '8086',
                'device_type': 'type-PCI', 'numa_policy': 'legacy', 'live_migratable': 'true'}
INTEL_NIC = {'name': 'IntelNIC', 'capability_type': 'pci', 'product_id': '1111', 'vendor_id': '8086',
             'device_type': 'type-PF', 'live_migratable': 'false'}


def accepted(entries) -> bool | str:
    try:
        parse_aliases(entries)
    except SpecError:
        return REFUSED
    return True


def pci(vendor='8086', product='4443', physfn=None, totalvfs=None):
    return PciDevice(address=PciAddress.parse('0000:5e:00.0'), vendor_id=vendor, product_id=product, class_id='0b4000',
                     subsystem_vendor_id=None, subsystem_product_id=None, revision='00', driver=None, numa_node=0,
                     iommu_group=3, physfn=PciAddress.parse(physfn) if physfn else None, sriov_totalvfs=totalvfs, sriov_numvfs=0)


def test_a_full_alias_reads_as_in_nova():
    alias = parse_aliases([QUICK_ASSIST])['QuickAssist']
    entry, = alias.entries
    assert (alias.numa_policy, alias.device_type) == ('legacy', 'type-PCI')
    assert (entry.vendor_id, entry.product_id, entry.live_migratable) == ('8086', '4443', True)


def test_entries_of_one_name_are_ored_and_an_omitted_numa_policy_is_legacy():
    second = {'name': 'QuickAssist', 'capability_type': 'pci', 'product_id': '4444', 'vendor_id': '8086', 'device_type': 'type-PCI'}
    alias = parse_aliases([QUICK_ASSIST, second])['QuickAssist']
    assert [entry.product_id for entry in alias.entries] == ['4443', '4444'] and alias.numa_policy == 'legacy'
    assert alias.matches(pci(product='4444'), {}) and alias.matches(pci(product='4443'), {})
    assert [entry.live_migratable for entry in alias.entries] == [True, None]


def only(**changes):
    """One alias entry named xxx with ``changes``; a change to None drops the key."""
    entry = {'name': 'xxx', **changes}
    return [{key: value for key, value in entry.items() if value is not None}]


# (what the case shows, alias entries, Nova's outcome = the outcome here)
SAME_AS_NOVA = [
    ('device_type not a type', only(device_type='N', vendor_id='8086', product_id='1111'), REFUSED),
    ('device_type vdpa', only(device_type='vdpa', vendor_id='8086', product_id='1111'), REFUSED),
    ('live_migratable not a boolean', only(live_migratable='invalid', vendor_id='8086', product_id='1111'), REFUSED),
    ('product_id not hex', only(product_id='g111', vendor_id='8086'), REFUSED),
    ('vendor_id with 0x', only(vendor_id='0xg111', product_id='1111'), REFUSED),
    ('capability_type usb', only(capability_type='usb', vendor_id='8086', product_id='1111'), REFUSED),
    ('numa_policy not a policy', only(numa_policy='derp', vendor_id='8086', product_id='1111'), REFUSED),
    ('an unknown key', only(foo='bar', vendor_id='8086', product_id='1111'), REFUSED),
    ('both ids', only(vendor_id='4444', product_id='4444'), True),
    ('resource_class and traits (Nova: with pci_in_placement)', only(resource_class='foo', traits='bar,baz'), True),
    ('conflicting device_type', [{'name': 'xxx', 'capability_type': 'pci', 'product_id': '1111', 'vendor_id': '8086',
                                  'device_type': 'type-PF'},
                                 {'name': 'xxx', 'capability_type': 'pci', 'product_id': '1111', 'vendor_id': '8086',
                                  'device_type': 'type-PCI'}], REFUSED),
    ('conflicting numa_policy', [{'name': 'xxx', 'capability_type': 'pci', 'product_id': '1111', 'vendor_id': '8086',
                                  'numa_policy': 'required'},
                                 {'name': 'xxx', 'capability_type': 'pci', 'product_id': '1111', 'vendor_id': '8086',
                                  'numa_policy': 'legacy'}], REFUSED),
    # from reading request.py: an omitted numa_policy is legacy when entries are compared, and an
    # omitted device_type differs from a given one
    ('numa_policy omitted in one entry', [dict(QUICK_ASSIST), {**QUICK_ASSIST, 'numa_policy': None}], True),
    ('device_type omitted in one entry', [dict(QUICK_ASSIST), {**QUICK_ASSIST, 'device_type': None}], REFUSED),
    ('name with spaces inside and around', only(name='  Quick Assist ', vendor_id='8086', product_id='4443'), True),
    ('name of 256 characters', only(name='n' * 256, vendor_id='8086', product_id='4443'), True),
    ('name of 257 characters', only(name='n' * 257, vendor_id='8086', product_id='4443'), REFUSED),
    ('empty name', only(name='', vendor_id='8086', product_id='4443'), REFUSED),
    ('no name', [{'vendor_id': '8086', 'product_id': '4443'}], REFUSED),
    ('name not a string', only(name=7, vendor_id='8086', product_id='4443'), REFUSED),
]


def _without_none(entries):
    return [{key: value for key, value in entry.items() if value is not None} for entry in entries]


@pytest.mark.parametrize('case, entries, nova', SAME_AS_NOVA, ids=[row[0] for row in SAME_AS_NOVA])
def test_nova_alias_cases(case, entries, nova):
    assert accepted(_without_none(entries)) == nova


@pytest.mark.parametrize('policy', ['required', 'legacy', 'preferred', 'socket'])
def test_every_nova_numa_policy_is_valid(policy):
    aliases = parse_aliases(only(capability_type='pci', product_id='1111', vendor_id='8086', device_type='type-PCI',
                                 numa_policy=policy))
    assert aliases['xxx'].numa_policy == policy


# (what the case shows, alias entries, Nova's outcome, the outcome here, why)
KEPT_DIFFERENCES = [
    ('product_id only', only(product_id='4444'), REFUSED, True,
     'Nova 2025.2 refuses an entry without both ids; here the whitelist already bounds what an alias can take, '
     'and device_type and tags can narrow it'),
    ('vendor_id only', only(vendor_id='4444'), REFUSED, True, 'as above'),
    ('no ids', only(), REFUSED, True, 'as above'),
    ('resource_class without ids', only(resource_class='foo'), REFUSED, True, 'as above (resource_class is not used for matching)'),
    ('device_type omitted in every entry', [{'name': 'xxx', 'vendor_id': '8086', 'product_id': '1111'},
                                            {'name': 'xxx', 'vendor_id': '8086', 'product_id': '2222'}],
     REFUSED, True, 'Nova fails on a missing key ("dev_type"); entries that all omit it agree'),
    ('name with ":"', only(name='gpu:a100', vendor_id='10de', product_id='20b5'), True, REFUSED,
     'no request "name:count" could name it'),
    ('name with ","', only(name='gpu,a100', vendor_id='10de', product_id='20b5'), True, REFUSED,
     'no request "name:count,name:count" could name it'),
    ('name with a control character', only(name='gpu\ta100', vendor_id='10de', product_id='20b5'), True, REFUSED,
     'an invisible character makes a name that no one can type'),
    ('name of spaces only', only(name='   ', vendor_id='10de', product_id='20b5'), True, REFUSED,
     'Nova strips it to an empty name'),
    ('live_migratable as a YAML boolean', only(live_migratable=True, vendor_id='10de', product_id='20b5'), REFUSED, True,
     'YAML reads yes/true as a boolean; Nova\'s JSON schema wants a string'),
]


@pytest.mark.parametrize('case, entries, nova, ours, why', KEPT_DIFFERENCES, ids=[row[0] for row in KEPT_DIFFERENCES])
def test_kept_alias_differences(case, entries, nova, ours, why):
    assert accepted(entries) == ours != nova


def test_an_alias_without_ids_matches_by_device_type_and_tags():
    aliases = parse_aliases([{'name': 'any'}, {'name': 'vfs', 'device_type': 'type-VF', 'tags': {'physical_network': 'physnet1'}},
                             {'name': 'pfs', 'device_type': 'type-PF'}])
    plain, vf, pf = pci(vendor='1af4', product='1041'), pci(physfn='0000:5e:00.0'), pci(totalvfs=8)
    assert aliases['any'].matches(plain, {}) and aliases['any'].matches(vf, {}) and not aliases['any'].matches(pf, {})
    assert aliases['vfs'].matches(vf, {'physical_network': 'physnet1'}) and not aliases['vfs'].matches(vf, {})
    assert not aliases['vfs'].matches(plain, {'physical_network': 'physnet1'})
    assert aliases['pfs'].matches(pf, {}) and not aliases['pfs'].matches(plain, {})


@pytest.mark.parametrize('entries, message', [
    (only(name='gpu:a100'), "aliases[0].name: 'gpu:a100' must not contain \",\" or \":\" (a request \"name:count,name:count\" could not name it)"),
    (only(name='a\nb'), "aliases[0].name: 'a\\nb' must not contain control or invisible characters"),
    (only(name='n' * 257), f"aliases[0].name: '{'n' * 257}' must be a name of 1-256 characters"),
    (only(name='  '), "aliases[0].name: '  ' must be a name of 1-256 characters"),
    (only(live_migratable='invalid'), "aliases[0].live_migratable: 'invalid' is not a boolean (true/false, yes/no, on/off, 1/0, t/f or y/n)"),
    (only(tags={'managed': 'sometimes'}), "aliases[0].tags.managed: 'sometimes' is not a boolean"),
    ([{'name': 'xxx', 'device_type': 'type-VF'}, {'name': 'xxx'}],
     "aliases: alias 'xxx' has entries with different device_type: 'type-VF' in aliases[0], None in aliases[1] "
     "(an omitted device_type differs from every type)"),
    ([{'name': 'xxx', 'numa_policy': 'required'}, {'name': 'xxx', 'numa_policy': 'preferred'}],
     "aliases: alias 'xxx' has entries with different numa_policy: 'required' in aliases[0], 'preferred' in aliases[1]"),
])
def test_alias_refusals_name_the_field(entries, message):
    with pytest.raises(SpecError) as info:
        parse_aliases(entries)
    assert str(info.value).startswith(message)
    if 'numa_policy' in message:
        assert 'omitted' not in str(info.value)


@pytest.mark.parametrize('value, expected', [
    ('yes', True), ('no', False), ('true', True), ('false', False), ('1', True), ('0', False), ('On', True), ('off', False),
    ('T', True), ('f', False), ('y', True), ('N', False), (' YES ', True), (True, True), (False, False),
])
def test_live_migratable_takes_oslo_strict_spellings(value, expected):
    assert parse_aliases(only(live_migratable=value))['xxx'].entries[0].live_migratable is expected


@pytest.mark.parametrize('value', ['invalid', 'maybe', '', 2, 1.5, ['yes']])
def test_other_live_migratable_values_are_refused(value):
    with pytest.raises(SpecError, match=r'^aliases\[0\]\.live_migratable: '):
        parse_aliases(only(live_migratable=value))


def test_boolean_tags_of_an_alias_match_the_whitelist_as_nova_stores_them():
    spec = Whitelist.parse([{'vendor_id': '8086', 'managed': 'yes', 'live_migratable': 'On'}]).entries[0]
    assert spec.tags == {'managed': 'true', 'live_migratable': 'true'}
    for written in ('true', 'yes', True, 'Y'):
        assert parse_aliases(only(tags={'managed': written}))['xxx'].matches(pci(), spec.tags)
    assert not parse_aliases(only(tags={'live_migratable': 'no'}))['xxx'].matches(pci(), spec.tags)


# -- requests (the flavor's "pci_passthrough:alias") ---------------------------------------------

ALIASES = parse_aliases([QUICK_ASSIST, INTEL_NIC, only(name=' my gpu ', vendor_id='10de', product_id='20b5')[0]])


@pytest.mark.parametrize('request_text, expected', [
    ('QuickAssist : 3, IntelNIC: 1', [AliasRequest('QuickAssist', 3), AliasRequest('IntelNIC', 1)]),
    ('IntelNIC:1', [AliasRequest('IntelNIC', 1)]),
    ('my gpu:2', [AliasRequest('my gpu', 2)]),
    ('  my gpu : 2 ,QuickAssist:0', [AliasRequest('my gpu', 2), AliasRequest('QuickAssist', 0)]),
])
def test_nova_requests(request_text, expected):
    assert parse_request(request_text, ALIASES) == expected


def test_a_request_for_an_undefined_alias_is_refused():
    with pytest.raises(SpecError) as info:
        parse_request('QuickAssistX : 3', ALIASES)
    assert str(info.value) == "request: 'QuickAssistX : 3' names unknown alias 'QuickAssistX' (known: IntelNIC, QuickAssist, my gpu)"


# (request, what Nova does, the error here, why)
KEPT_REQUEST_DIFFERENCES = [
    ('QuickAssist,IntelNIC:1', 'a bare ValueError (nothing to unpack)', "request: 'QuickAssist' has no count (expected alias:count)",
     'the message names the part'),
    ('QuickAssist:1,QuickAssist:2', 'two requests, 3 devices in all', "request: alias 'QuickAssist' is requested twice",
     'one count per alias; a sum is more likely a slip than meant'),
    ('QuickAssist:-1', 'a request with count -1', "request: count '-1' in 'QuickAssist:-1' must be 0 or more",
     'a negative count means nothing'),
]


@pytest.mark.parametrize('request_text, nova, message, why', KEPT_REQUEST_DIFFERENCES)
def test_kept_request_differences(request_text, nova, message, why):
    with pytest.raises(SpecError) as info:
        parse_request(request_text, ALIASES)
    assert str(info.value).startswith(message)
