# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A PF's per-VF settings through iproute2: the JSON of every iproute2 generation, this machine's real ip, and the writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._iplink import IpLink, IpLinkFailed, parse_links
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import NicInfo, VfConfig

FAKE_IP = Path(__file__).resolve().parents[3] / 'integration' / 'fake_ip' / 'ip'

# iproute2 5.3 and later: "address" and "vlan_list"
CURRENT = [{'ifindex': 4, 'ifname': 'enp1s0', 'operstate': 'UP', 'vfinfo_list': [
    {'vf': 0, 'link_type': 'ether', 'address': '02:4B:9E:11:22:33', 'broadcast': 'ff:ff:ff:ff:ff:ff',
     'vlan_list': [{'vlan': 100, 'qos': 0, 'protocol': '802.1Q'}], 'spoofchk': True, 'link_state': 'auto', 'trust': True},
    {'vf': 1, 'link_type': 'ether', 'address': '00:00:00:00:00:00', 'broadcast': 'ff:ff:ff:ff:ff:ff',
     'spoofchk': False, 'link_state': 'disable', 'trust': False}]}]
# before it: "mac", and "vlan"/"qos" on the entry itself
OLDER = [{'ifindex': 4, 'ifname': 'enp1s0', 'operstate': 'DOWN', 'vfinfo_list': [
    {'vf': 0, 'mac': '02:4b:9e:11:22:33', 'vlan': 100, 'qos': 0, 'spoofchk': True, 'link_state': 'auto', 'trust': True},
    {'vf': 1, 'mac': '00:00:00:00:00:00', 'vlan': 0, 'spoofchk': False, 'link_state': 'disable', 'trust': False}]}]


@pytest.mark.parametrize('links, operstate', [(CURRENT, 'up'), (OLDER, 'down')])
def test_every_iproute2_generation_reads_the_same(links, operstate):
    assert parse_links(json.dumps(links)) == {'enp1s0': NicInfo('enp1s0', operstate, {
        0: VfConfig(0, '02:4b:9e:11:22:33', 100, True, True, 'auto'),
        1: VfConfig(1, '00:00:00:00:00:00', None, False, False, 'disable')})}


@pytest.mark.parametrize('text', ['', 'not json', '{}', '[1, 2]', json.dumps([{'ifname': 'x', 'vfinfo_list': [{'vf': 'zero'}, 7]}])])
def test_garbage_reads_as_unknown_not_as_an_error(text):
    links = parse_links(text)
    assert all(nic.vfs == {} for nic in links.values())


def test_this_machine_s_ip_is_read():
    """The real ip of the test machine: its interfaces have no VFs, but loopback is always there."""
    links = IpLink().links()
    assert links['lo'].vfs == {} and links['lo'].netdev == 'lo'


def test_settings_are_set_with_one_ip_call_per_vf(tmp_path, monkeypatch):
    state = tmp_path / 'ip.json'
    state.write_text(json.dumps({'enp1s0': {'vfs': {'1': {'trust': False, 'spoofchk': True, 'link_state': 'auto'}}}}))
    monkeypatch.setenv('PTLV_FAKE_IP', str(state))
    IpLink(str(FAKE_IP)).set_vf('enp1s0', 1, {'trust': True, 'spoofchk': False, 'link_state': 'enable'})
    assert (tmp_path / 'ip.json.log').read_text() == 'link set dev enp1s0 vf 1 trust on spoofchk off state enable\n'
    assert IpLink(str(FAKE_IP)).links()['enp1s0'].vfs[1] == VfConfig(1, '00:00:00:00:00:00', None, True, False, 'enable')


@pytest.mark.parametrize('binary, netdev, index, settings, message', [
    (None, 'enp1s0', 1, {'trust': True}, 'VF 1 of enp1s0: cannot set trust: the ip command (iproute2) is not installed'),
    (str(FAKE_IP), '-f', 1, {'trust': True}, 'VF 1 of -f: not a network interface and VF index this collection can set'),
    (str(FAKE_IP), 'a/b', 1, {'trust': True}, 'VF 1 of a/b: not a network interface and VF index this collection can set'),
    (str(FAKE_IP), 'enp1s0', -1, {'trust': True}, 'VF -1 of enp1s0: not a network interface and VF index this collection can set'),
    (str(FAKE_IP), 'enp1s0', 1, {'link_state': 'up'}, "VF 1 of enp1s0: link_state 'up' is not one of auto, enable, disable"),
    (str(FAKE_IP), 'enp9s0', 1, {'trust': True}, 'VF 1 of enp9s0: ip link set dev enp9s0 vf 1 trust on failed: RTNETLINK answers: '
                                                 'No such device'),
])
def test_a_set_that_cannot_be_done_is_one_clear_error(tmp_path, monkeypatch, binary, netdev, index, settings, message):
    state = tmp_path / 'ip.json'
    state.write_text(json.dumps({'enp1s0': {'vfs': {'1': {}}}}))
    monkeypatch.setenv('PTLV_FAKE_IP', str(state))
    with pytest.raises(IpLinkFailed) as info:
        IpLink(binary).set_vf(netdev, index, settings)
    assert str(info.value) == message
