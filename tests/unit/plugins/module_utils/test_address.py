# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress, PciAddressError

SAFE = re.compile(r'^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$')


@pytest.mark.parametrize('text, expected', [
    ('0000:3b:00.0', '0000:3b:00.0'),
    ('0000:3B:1F.7', '0000:3b:1f.7'),
    ('3b:00.1', '0000:3b:00.1'),
    ('  0000:00:02.0 ', '0000:00:02.0'),
    ('10000:e0:00.0', '10000:e0:00.0'),      # Intel VMD 32-bit domain
    ('0:00:00.0', '0000:00:00.0'),
    ('ffffffff:ff:1f.7', 'ffffffff:ff:1f.7'),
])
def test_parse_normalises(text, expected):
    assert str(PciAddress.parse(text)) == expected


@pytest.mark.parametrize('text', [
    '../../etc', '0000:zz:00.0', '0000:3b:20.0', '0000:3b:00.8', '0000:3b:00', '3b:0.0', '0000:3b:00.0/../x',
    '000000000:00:00.0', '', '0000:3b:00.0\n0000:3b:00.1', 'pci_0000_3b_00_0', '0000-3b-00.0',
])
def test_parse_rejects(text):
    with pytest.raises(PciAddressError) as info:
        PciAddress.parse(text)
    assert repr(text) in str(info.value) or 'slot' in str(info.value)


@pytest.mark.parametrize('value', [None, 3, ['0000:00:00.0'], b'0000:00:00.0'])
def test_parse_rejects_non_strings(value):
    with pytest.raises(PciAddressError, match='expected a string'):
        PciAddress.parse(value)


def test_dev_id_and_libvirt_attrs():
    address = PciAddress.parse('0000:04:10.1')
    assert address.dev_id == 'pci_0000_04_10_1'
    assert address.libvirt_attrs() == {'domain': '0x0000', 'bus': '0x04', 'slot': '0x10', 'function': '0x1'}
    assert PciAddress.parse('10000:e0:00.0').dev_id == 'pci_10000_e0_00_0'


@pytest.mark.parametrize('attrs, expected', [
    ({'domain': '0x0000', 'bus': '0x3b', 'slot': '0x02', 'function': '0x1'}, '0000:3b:02.1'),
    ({'domain': '0', 'bus': '59', 'slot': '2', 'function': '1'}, '0000:3b:02.1'),   # decimal, as strtol base 0 reads it
    ({'bus': '0x3b', 'slot': '0x02'}, '0000:3b:02.0'),
])
def test_from_libvirt(attrs, expected):
    assert str(PciAddress.from_libvirt(attrs)) == expected


@pytest.mark.parametrize('attrs', [{'domain': '0x0', 'bus': 'zz', 'slot': '0x0'}, {'slot': '0x1'}, {'bus': '0x100', 'slot': '0'}])
def test_from_libvirt_rejects(attrs):
    with pytest.raises(PciAddressError):
        PciAddress.from_libvirt(attrs)


addresses = st.builds(PciAddress, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))


@given(addresses)
def test_roundtrip_text_and_libvirt(address):
    text = str(address)
    assert SAFE.match(text)
    assert PciAddress.parse(text) == address
    assert PciAddress.parse(text.upper()) == address
    assert PciAddress.from_libvirt(address.libvirt_attrs()) == address


@given(st.text(max_size=40))
def test_any_text_is_rejected_or_safe(text):
    """Whatever a user types, the result is either an error or a path-safe normalised address."""
    try:
        address = PciAddress.parse(text)
    except PciAddressError:
        return
    assert SAFE.match(str(address))
    assert '/' not in str(address) and '..' not in str(address)


@given(addresses, addresses)
def test_order_follows_fields(first, second):
    assert (first < second) == ((first.domain, first.bus, first.slot, first.function) < (second.domain, second.bus, second.slot, second.function))
