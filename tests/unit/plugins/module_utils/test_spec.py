# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist, parse_id
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciDevice
from ansible_collections.passthrough.libvirt.tests import sysfs_tree


def device(address='0000:3b:02.1', vendor='8086', product='154c', class_id='020000', driver='iavf', numa=0, netdevs=()):
    return PciDevice(
        address=PciAddress.parse(address), vendor_id=vendor, product_id=product, class_id=class_id,
        subsystem_vendor_id='8086', subsystem_product_id='0000', revision='02', driver=driver, numa_node=numa,
        iommu_group=40, physfn=None, sriov_totalvfs=None, sriov_numvfs=None, netdevs=list(netdevs))


@pytest.mark.parametrize('value, expected', [('8086', '8086'), ('0x8086', '8086'), (' 10DE ', '10de'), ('*', '*'), ('1b', '001b')])
def test_ids_are_read_leniently(value, expected):
    assert parse_id('vendor_id', value) == expected


@pytest.mark.parametrize('value, message', [
    (8086, 'must be a string'), ('80866', 'not a 4-digit hex'), ('zz', 'not a 4-digit hex'), (None, 'must be a string'),
])
def test_bad_ids_name_the_field(value, message):
    with pytest.raises(SpecError, match=message) as info:
        Whitelist.parse([{'vendor_id': value}])
    assert str(info.value).startswith('device_spec[0].vendor_id:')


@pytest.mark.parametrize('spec, matches', [
    ({'vendor_id': '8086', 'product_id': '154c'}, True),
    ({'vendor_id': '8086', 'product_id': '1572'}, False),
    ({'address': '0000:3b:02.1'}, True),
    ({'address': '3b:02.*'}, True),
    ({'address': ':3b:'}, True),
    ({'address': '*:3b:*.1'}, True),
    ({'address': '02.1'}, True),
    ({'address': '0000:3c:*.*'}, False),
    ({'address': {'bus': '3[a-c]', 'function': '[0-3]'}}, True),
    ({'address': {'bus': '3'}}, False),          # a full match, not Nova's prefix match
    ({'class_id': '02'}, True),
    ({'class_id': '0x0200'}, True),
    ({'class_id': '0302'}, False),
    ({'driver': 'iavf'}, True),
    ({'driver': 'vfio-pci'}, False),
    ({'numa_node': 0}, True),
    ({'numa_node': '1'}, False),
    ({'devname': 'ens1f0v1'}, True),
    ({'devname': 'eth9'}, False),
    ({'subsystem_vendor_id': '8086', 'subsystem_product_id': '0x0000'}, True),
])
def test_each_key_matches(spec, matches):
    whitelist = Whitelist.parse([spec])
    assert (whitelist.match(device(netdevs=['ens1f0v1'])) is not None) is matches


def test_first_match_wins_and_carries_its_tags():
    whitelist = Whitelist.parse([
        {'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1', 'trusted': 'true'},
        {'vendor_id': '8086', 'physical_network': 'physnet2'},
    ])
    assert whitelist.match(device()).tags == {'physical_network': 'physnet1', 'trusted': 'true'}
    assert whitelist.match(device(product='1572')).tags == {'physical_network': 'physnet2'}
    assert whitelist.match(device(vendor='10de')) is None


@pytest.mark.parametrize('spec, message', [
    ('vendor_id=8086', r'device_spec\[0\]: .* must be a dict'),
    ({'address': '0000:3b:00:02.0'}, r'device_spec\[0\].address: .* too many ":"'),
    ({'address': '0000:3b:20.0'}, 'slot'),
    ({'address': '0000:zz:00.0'}, 'invalid bus'),
    ({'address': {'bus': '('}}, 'not a valid regular expression'),
    ({'address': {'bas': '3b'}}, "unknown key"),
    ({'address': 5}, 'glob string or a dict'),
    ({'class_id': 302}, 'class_id'),
    ({'numa_node': 'zero'}, 'numa_node'),
    ({'driver': ''}, 'non-empty string'),
])
def test_bad_entries_name_the_field(spec, message):
    with pytest.raises(SpecError, match=message):
        Whitelist.parse([spec])


def test_device_spec_must_be_a_list():
    with pytest.raises(SpecError, match='must be a list'):
        Whitelist.parse({'vendor_id': '8086'})


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
                           max_leaves=8)


@given(st.lists(st.dictionaries(st.sampled_from(['vendor_id', 'product_id', 'address', 'class_id', 'numa_node', 'driver', 'devname', 'tag']),
                                json_values, max_size=4), max_size=3))
def test_any_input_is_parsed_or_rejected_cleanly(spec):
    """Random entries never crash: they parse (and then match without error) or raise SpecError."""
    try:
        whitelist = Whitelist.parse(spec)
    except SpecError as exc:
        assert str(exc).startswith('device_spec[')
        return
    whitelist.match(device())


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """The dual-socket fixture: X710 PF 0000:3b:00.0 (ens1f0) with VFs 3b:02.0-02.3, a second PF 3b:00.1 without VFs."""
    root = tmp_path_factory.mktemp('sys')
    sysfs_tree.dual_socket_server(root)
    devices = Sysfs(str(root)).read_devices()
    return {device.address: device for device in devices}


def matched(server, spec) -> list[str]:
    whitelist = Whitelist.parse([spec])
    return [str(address) for address, device in sorted(server.items()) if whitelist.match(device, server)]


@pytest.mark.parametrize('spec, expected', [
    # Nova: a PF's exact address, or its interface name, whitelists the PF and its VFs
    ({'address': '0000:3b:00.0'}, ['0000:3b:00.0', '0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']),
    ({'devname': 'ens1f0'}, ['0000:3b:00.0', '0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']),
    ({'address': '0000:3b:00.0', 'product_id': '154c'}, ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']),
    ({'devname': 'ens1f0v1'}, ['0000:3b:02.1']),
    # a wildcard address matches addresses only
    ({'address': '0000:3b:00.*'}, ['0000:3b:00.0', '0000:3b:00.1']),
    # VF ranges: only those VFs of the PF, never the PF
    ({'address': '0000:3b:00.0#0-1,3'}, ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.3']),
    ({'address': '3b:00.0#2'}, ['0000:3b:02.2']),
    ({'devname': 'ens1f0#1-2'}, ['0000:3b:02.1', '0000:3b:02.2']),
    ({'devname': 'ens1f0#0-3', 'driver': 'vfio-pci'}, ['0000:3b:02.2', '0000:3b:02.3']),
    ({'address': '0000:3b:00.1#0'}, []),            # a PF with no VFs created
    ({'address': '0000:3b:00.0#9'}, []),
])
def test_pf_and_vf_range_semantics(server, spec, expected):
    assert matched(server, spec) == expected


@pytest.mark.parametrize('spec, message', [
    ({'address': '0000:3b:*.0#0-3'}, 'a VF range needs the PF\'s full address before "#"'),
    ({'address': '0000:3b:00.0#'}, "invalid VF range part ''"),
    ({'address': '0000:3b:00.0#3-1'}, 'runs backwards'),
    ({'address': '0000:3b:00.0#a'}, "invalid VF range part 'a'"),
    ({'devname': '#0-3'}, "needs the PF's interface name before \"#\""),
    ({'devname': 'ens1f0#0', 'address': '0000:3b:00.0#1'}, "devname 'ens1f0#0' and address '0000:3b:00.0#1' are both given"),
])
def test_vf_range_errors(spec, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        Whitelist.parse([spec])


# -- mdev entries -------------------------------------------------------------------------------------------

def test_an_mdev_entry_admits_types_on_its_parents_and_never_the_device_whole():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._model import MdevParent, MdevType
    whitelist = Whitelist.parse([{'vendor_id': '10de', 'mdev_types': ['GRID A100-4*', 'nvidia-999']},
                                 {'mdev_parent': 'mtty', 'mdev_types': ['mtty-*'], 'purpose': 'serial'}])
    gpu = PciDevice(PciAddress.parse('0000:3c:00.0'), '10de', '20b5', '030200', None, None, None, 'nvidia', 0, 1, None, None, None)
    a4c, a8c = MdevType('nvidia-470', 'GRID A100-4C', None, 'vfio-pci', 9), MdevType('nvidia-471', 'GRID A100-8C', None, 'vfio-pci', 4)
    assert whitelist.match(gpu) is None                                                          # not whole
    assert whitelist.mdev_match(MdevParent('0000:3c:00.0', gpu.address), a4c, gpu).index == 0
    assert whitelist.mdev_match(MdevParent('0000:3c:00.0', gpu.address), a8c, gpu) is None        # type not admitted
    mtty = whitelist.mdev_match(MdevParent('mtty', None), MdevType('mtty-2', 'Dual port serial', None, 'vfio-pci', 3), None)
    assert mtty.index == 1 and mtty.tags == {'purpose': 'serial'}
    # a virtual parent has no PCI identity: an entry with vendor_id never admits it
    assert whitelist.mdev_match(MdevParent('other', None), MdevType('nvidia-470', 'GRID A100-4C', None, 'vfio-pci', 1), None) is None


@pytest.mark.parametrize('entry, message', [
    ({'mdev_types': 'nvidia-470'}, 'device_spec[0].mdev_types: \'nvidia-470\' must be a list of mdev type ids or names, like ["nvidia-470"]'),
    ({'mdev_types': []}, 'device_spec[0].mdev_types: [] must be a list of mdev type ids or names, like ["nvidia-470"]'),
    ({'mdev_types': ['a/b']},
     'device_spec[0].mdev_types[0]: \'a/b\' must be an mdev type id or name like "nvidia-470" or "GRID A100-4C" ("*" and "?" as wildcards)'),
    ({'mdev_parent': 'mtty'}, "device_spec[0].mdev_parent: 'mtty' needs mdev_types (the types the entry admits on it)"),
    ({'mdev_parent': '../mtty', 'mdev_types': ['x']},
     'device_spec[0].mdev_parent: \'../mtty\' must be a parent device name: a PCI address, or a virtual parent such as "mtty"'),
    ({'mdev_type': ['x']}, "device_spec[0]: key 'mdev_type' looks like a misspelt 'mdev_types' (a tag would match every device of the "
                           "entry); write 'mdev_types', or give the tag a name further from the match keys"),
])
def test_mdev_entry_errors(entry, message):
    with pytest.raises(SpecError) as info:
        Whitelist.parse([entry])
    assert str(info.value) == message
