# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_day2, pure: identities and what changed, out-of-service marks as given, stored and read back."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases
from ansible_collections.passthrough.libvirt.plugins.module_utils._day2 import (
    hardware_changes,
    identity_changes,
    identity_of,
    load_marks,
    mark_of,
    parse_marks,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciDevice

A = PciAddress.parse


def device(address, product='154c', group=None, physfn=None, numvfs=None, totalvfs=None, virtfns=()):
    return PciDevice(A(address), '8086', product, '020000', '8086', '0000', '02', None, 0, group,
                     A(physfn) if physfn else None, totalvfs, numvfs, virtfns=[A(v) for v in virtfns])


def host(numvfs=2):
    pf = device('0000:3b:00.0', '1572', 9, numvfs=numvfs, totalvfs=8, virtfns=['0000:3b:02.0', '0000:3b:02.1'][:numvfs])
    vfs = [device(f'0000:3b:02.{i}', group=11 + i, physfn='0000:3b:00.0') for i in range(numvfs)]
    return {d.address: d for d in [pf, *vfs]}


def test_a_vf_identity_names_its_pf_index_and_the_pf_count():
    devices = host()
    assert identity_of(devices[A('0000:3b:02.1')], devices) == {
        'vendor_id': '8086', 'product_id': '154c', 'subsystem_vendor_id': '8086', 'subsystem_product_id': '0000',
        'class_id': '020000', 'iommu_group': 12, 'group': ['0000:3b:02.1'], 'physfn': '0000:3b:00.0', 'vf_index': 1, 'numvfs': 2}


def test_changes_are_told_in_order_and_an_older_record_is_compared_by_its_keys_only():
    devices = host()
    recorded = identity_of(devices[A('0000:3b:02.0')], devices)
    now = dict(recorded, product_id='154d', iommu_group=30, group=['0000:3b:02.0', '0000:3b:02.1'])
    assert identity_changes(recorded, now) == ['product_id 154c \u2192 154d', 'IOMMU group 11 \u2192 30',
                                               'IOMMU group members 0000:3b:02.0 \u2192 0000:3b:02.0, 0000:3b:02.1']
    assert identity_changes({'product_id': '154c'}, now) == ['product_id 154c \u2192 154d']
    assert identity_changes(recorded, None) == ['device removed']


def test_fewer_vfs_show_on_the_pf_and_the_vfs_and_gone_vfs_are_removed():
    before = host(2)
    records = {address: identity_of(d, before) for address, d in before.items()}
    after = host(1)
    assert hardware_changes(after, records) == {A('0000:3b:00.0'): ['VF count 2 \u2192 1'], A('0000:3b:02.0'): ['VF count 2 \u2192 1'],
                                                A('0000:3b:02.1'): ['device removed']}


ALIASES = [{'name': 'gpu', 'vendor_id': '10de'}, {'name': 'vf', 'vendor_id': '8086', 'device_type': 'type-VF', 'tags': {'physical_network': 'physnet1'}}]


def test_marks_round_trip_through_the_state_file():
    marks = parse_marks([{'alias': 'vf', 'reason': 'driver bug', 'mode': 'drain'}, {'pf': '0000:3b:00.0', 'reason': 'cabling'}],
                        parse_aliases(ALIASES), ALIASES)
    stored = [mark.stored() for mark in marks]
    assert stored[0]['alias_entries'] == [ALIASES[1]]
    again = load_marks(stored)
    assert [mark.result() for mark in again] == [mark.result() for mark in marks]
    devices = host()
    vf = devices[A('0000:3b:02.0')]
    assert again[0].covers(vf, {'physical_network': 'physnet1'}) and not again[0].covers(vf, {})   # by the alias's tags
    assert again[1].covers(vf, {}) and again[1].covers(devices[A('0000:3b:00.0')], {})            # a PF and its VFs
    assert mark_of(again, vf, {'physical_network': 'physnet1'}).mode == 'drain'                  # drain before no-new


def test_a_stored_mark_that_cannot_be_read_is_an_error_not_a_lost_mark():
    with pytest.raises(SpecError, match=r"the state file's out_of_service\[0\]\.reason"):
        load_marks([{'host': True, 'mode': 'no-new'}])
    with pytest.raises(SpecError, match=r"the state file's out_of_service\[0\]: 'x' is not a mark"):
        load_marks(['x'])
