# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NIC VFs given as network interfaces, against the real libvirtd, in config mode on defined `pcitest-` domains.

The VFs are the dual-socket fixture tree's X710 VFs (PF 0000:3b:00.0, interface ens1f0). libvirt
really writes and keeps the `<interface type='hostdev'>` XML. The PF's per-VF settings (trust,
spoof checking, link state) have no place to live on this machine - it has no SR-IOV NIC and no
netdevsim - so a test double of iproute2's `ip` (tests/integration/fake_ip/ip) answers for the
fixture PF from a JSON file; the nested lab runs the same code against a real igb and the real ip.
"""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process
from ansible_collections.passthrough.libvirt.tests.integration import nic

libvirt = pytest.importorskip('libvirt')

VFS = ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']     # VF 0-3 of ens1f0
SPEC = [{'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}, {'vendor_id': '10de', 'product_id': '20b5'}]
NIC = {'name': 'nic', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF', 'tags': {'physical_network': 'physnet1'},
       'interface': {'vlan': 100, 'mac': 'auto', 'trust': True, 'spoofchk': False}}
GPU = {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}
ORIGINAL = nic.ORIGINAL
LOCAL_UNICAST = re.compile(r'^[0-9a-f][26ae](:[0-9a-f]{2}){5}$')


@pytest.fixture
def host(tmp_path, monkeypatch):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    for key, value in nic.environment(nic.write_state(tmp_path / 'ip-state.json')).items():
        monkeypatch.setenv(key, value)
    return {'sysfs_root': str(tmp_path / 'sys'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': SPEC}


def vf_settings(tmp_path) -> list[dict]:
    """The fixture PF's VFs as the ip double holds them, VF 0 first."""
    vfs = json.loads((tmp_path / 'ip-state.json').read_text())['ens1f0']['vfs']
    return [{key: vfs[str(index)][key] for key in ('trust', 'spoofchk', 'link_state')} for index in range(4)]


def attach(tmp_path, host, domain, **args):
    return run_module_process('pci_attachment', dict(host, domain=domain, **args), tmp_path)


def interfaces(dom) -> list[tuple[str, str, int | None, str]]:
    """(address, MAC, VLAN, alias) of each <interface type='hostdev'> in the persistent configuration."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import parse_hostdevs
    return [(str(h.address), h.mac, h.vlan, h.alias) for h in parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            if h.kind == 'interface']


def test_vfs_become_interfaces_with_mac_vlan_and_trust_and_keep_their_macs(tmp_path, host, define_domain):
    dom = define_domain()
    first = attach(tmp_path, host, dom.name(), request='nic:2', aliases=[NIC])
    assert first.rc == 0, first.msg
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert xml.count("<interface type='hostdev' managed='yes'>") == 2 and xml.count("<driver name='vfio'/>") == 2
    held = interfaces(dom)
    macs = [mac for _address, mac, _vlan, _alias in held]
    assert [(address, vlan) for address, _mac, vlan, _alias in held] == [(VFS[0], 100), (VFS[1], 100)]
    assert all(LOCAL_UNICAST.match(mac) for mac in macs) and len(set(macs)) == 2
    attached = first.result['attached']
    assert [(a['address'], a['mac_address'], a['vlan'], a['trust'], a['spoofchk'], a['interface']) for a in attached] == [
        (VFS[0], macs[0], 100, True, False, True), (VFS[1], macs[1], 100, True, False, True)]
    assert [alias for *_rest, alias in held] == [f"ua-pci-{a['attachment_id']}" for a in attached]
    # trust and spoof checking were set on the PF for these two VFs only
    assert vf_settings(tmp_path) == [dict(ORIGINAL, trust=True, spoofchk=False)] * 2 + [ORIGINAL] * 2
    assert [(d['address'], d['interface'], d['mac_address'], d['vlan'], d['trust'], d['spoofchk'])
            for d in first.result['pci_devices']] == [(VFS[0], True, macs[0], 100, True, False), (VFS[1], True, macs[1], 100, True, False)]

    again = attach(tmp_path, host, dom.name(), request='nic:2', aliases=[NIC])
    assert again.result['changed'] is False and again.result['pci_devices'] == first.result['pci_devices']

    grown = attach(tmp_path, host, dom.name(), request='nic:3', aliases=[NIC])
    assert [mac for _a, mac, _v, _al in interfaces(dom)][:2] == macs             # the first two keep theirs
    third = grown.result['attached'][0]['mac_address']
    assert third not in macs and LOCAL_UNICAST.match(third)

    shrunk = attach(tmp_path, host, dom.name(), request='nic:1', aliases=[NIC])
    assert [d['address'] for d in shrunk.result['detached']] == [VFS[2], VFS[1]]
    assert interfaces(dom) == [held[0]]                                          # VF 0 keeps its MAC and VLAN
    assert vf_settings(tmp_path) == [dict(ORIGINAL, trust=True, spoofchk=False)] + [ORIGINAL] * 3    # put back

    # every module sees the same: the device view of the domain, and the pool still counts the VFs
    info = run_module_process('pci_device_info', dict(host, domain=dom.name()), tmp_path)
    (server_vf,) = info.result['server']['pci_devices']
    assert (server_vf['mac_address'], server_vf['vlan'], server_vf['trust'], server_vf['spoofchk'], server_vf['interface']) == \
        (macs[0], 100, True, False, True)
    pf = next(d for d in run_module_process('pci_device_info', dict(host, address='0000:3b:00.0'), tmp_path).result['pci_devices'])
    assert pf['extra_info']['netdev'] == 'ens1f0' and pf['extra_info']['link_state'] == 'up'
    assert [(vf['index'], vf['address'], vf['trust'], vf['spoofchk']) for vf in pf['extra_info']['vfs']] == [
        (0, VFS[0], True, False), (1, VFS[1], False, True), (2, VFS[2], False, True), (3, VFS[3], False, True)]
    stats = run_module_process('hypervisor_pci_stats', host, tmp_path).result['hypervisor']['pci_stats']
    (pool,) = [p for p in stats if p['product_id'] == '154c']
    assert (pool['tags'], pool['allocated'], pool['count']) == ({'physical_network': 'physnet1'}, 1, 3)

    gone = attach(tmp_path, host, dom.name(), request='nic:1', aliases=[NIC], state='absent')
    assert gone.rc == 0 and [d['mac_address'] for d in gone.result['detached']] == [macs[0]]
    assert interfaces(dom) == [] and vf_settings(tmp_path) == [ORIGINAL] * 4


def test_listed_macs_are_taken_in_order_and_check_mode_changes_nothing(tmp_path, host, define_domain):
    dom = define_domain()
    listed = {'mac': ['02:00:0A:00:64:01', '02:00:0a:00:64:02', '02:00:0a:00:64:03']}
    checked = run_module_process('pci_attachment', dict(host, domain=dom.name(), request='nic:2', aliases=[NIC], interface=listed,
                                                        _ansible_check_mode=True), tmp_path)
    assert checked.result['changed'] is True and [a['mac_address'] for a in checked.result['attached']] == [
        '02:00:0a:00:64:01', '02:00:0a:00:64:02']
    assert interfaces(dom) == [] and vf_settings(tmp_path) == [ORIGINAL] * 4

    first = attach(tmp_path, host, dom.name(), request='nic:2', aliases=[NIC], interface=listed)
    assert [mac for _a, mac, _v, _al in interfaces(dom)] == ['02:00:0a:00:64:01', '02:00:0a:00:64:02']
    attach(tmp_path, host, dom.name(), request='nic:1', aliases=[NIC], interface=listed)       # VF 1 leaves
    grown = attach(tmp_path, host, dom.name(), request='nic:3', aliases=[NIC], interface=listed)
    # the MACs the domain's attachments hold are skipped: the new ones take 02 and 03
    assert sorted(a['mac_address'] for a in grown.result['attached']) == ['02:00:0a:00:64:02', '02:00:0a:00:64:03']
    assert first.result['attached'][0]['mac_address'] == '02:00:0a:00:64:01'
    # diff mode: the domain's devices before and after, one line each; in check mode the after is predicted
    diffed = run_module_process('pci_attachment', dict(host, domain=dom.name(), request='nic:2', aliases=[NIC], interface=listed,
                                                       _ansible_check_mode=True, _ansible_diff=True), tmp_path)
    ids = {a['address']: a['attachment_id'] for a in first.result['attached'] + grown.result['attached']}
    line = '{} interface alias=nic attachment={} mac={} vlan=100'
    assert diffed.result['diff'] == {
        'before': {'pci_devices': [line.format(VFS[0], ids[VFS[0]], '02:00:0a:00:64:01'),
                                   line.format(VFS[1], ids[VFS[1]], grown.result['attached'][0]['mac_address']),
                                   line.format(VFS[2], ids[VFS[2]], grown.result['attached'][1]['mac_address'])]},
        'after': {'pci_devices': [line.format(VFS[0], ids[VFS[0]], '02:00:0a:00:64:01'),
                                  line.format(VFS[1], ids[VFS[1]], grown.result['attached'][0]['mac_address'])]}}
    # auto MACs of a check mode are chosen only when the device is attached
    auto = run_module_process('pci_attachment', dict(host, domain=dom.name(), request='nic:4', aliases=[NIC],
                                                     _ansible_check_mode=True), tmp_path)
    assert [a['mac_address'] for a in auto.result['attached']] == [None]


USER_NIC = "<interface type='user'><mac address='02:00:0a:00:64:09'/><model type='virtio'/></interface>"


@pytest.mark.parametrize('aliases, interface, request_text, message', [
    ([dict(NIC, interface={'vlan': 0})], None, 'nic:1', "aliases[0].interface.vlan: 0 must be a VLAN id from 1 to 4094"),
    ([NIC], {'vlan': 4095}, 'nic:1', "interface.vlan: 4095 must be a VLAN id from 1 to 4094"),
    ([NIC], {'mac': ['02:00:0a:00:64']}, 'nic:1',
     "interface.mac[0]: '02:00:0a:00:64' is not a MAC address (expected six hex pairs like 02:5a:11:00:00:01)"),
    ([NIC], {'mac': ['01:00:5e:00:00:01']}, 'nic:1',
     'interface.mac[0]: 01:00:5e:00:00:01 is a multicast address (the first octet is odd); a guest NIC needs a unicast one'),
    ([dict(NIC, interface={'mac': '02:00:0a:00:64:01'})], None, 'nic:1',
     "aliases[0].interface.mac: '02:00:0a:00:64:01' must be auto here (an alias serves many domains; "
     "list MAC addresses in pci_attachment's interface option)"),
    ([NIC], {'mac': ['02:00:0a:00:64:01']}, 'nic:2', 'interface.mac: 1 MAC address(es) for 2 device(s): give one per device'),
    ([NIC], {'mac': ['02:00:0a:00:64:09']}, 'nic:1',
     "interface.mac[0]: 02:00:0a:00:64:09 is already used by another interface of domain '{domain}' (interface type=user)"),
    ([dict(GPU, interface={'vlan': 100})], None, 'gpu:1',
     "aliases: alias 'gpu' (interface): 0000:3c:00.0 (class 0302, not a VF) cannot be given as a network interface: "
     'only VFs of network controllers (class 02xx) can'),
    ([NIC, GPU], {'vlan': 100}, 'nic:1,gpu:1',
     "interface: 0000:3c:00.0 (class 0302, not a VF) cannot be given as a network interface: only VFs of network controllers "
     "(class 02xx) can"),
])
def test_bad_interface_input_is_refused_before_any_change(tmp_path, host, define_domain, aliases, interface, request_text, message):
    dom = define_domain(hostdevs=USER_NIC)
    args = {'request': request_text, 'aliases': aliases}
    if interface is not None:
        args['interface'] = interface
    run = attach(tmp_path, host, dom.name(), **args)
    assert run.rc == 1 and run.msg == message.format(domain=dom.name())
    assert 'Traceback' not in run.stderr
    assert interfaces(dom) == [] and vf_settings(tmp_path) == [ORIGINAL] * 4
    assert "<hostdev" not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_a_failed_second_device_puts_the_first_vfs_settings_back(tmp_path, host, define_domain, monkeypatch):
    """Test double: the ip double refuses VF 1's settings, as a driver without trust support would."""
    dom = define_domain()
    monkeypatch.setenv('PTLV_FAKE_IP_FAIL', 'ens1f0 vf 1')
    run = attach(tmp_path, host, dom.name(), request='nic:2', aliases=[NIC])
    assert run.rc == 1
    assert run.msg == (f'{VFS[1]} (alias nic): attach failed: VF 1 of ens1f0: ip link set dev ens1f0 vf 1 trust on spoofchk off '
                       'failed: RTNETLINK answers: Operation not supported; rolled back the 1 device(s) this run attached; '
                       'nothing was left behind')
    assert interfaces(dom) == [] and vf_settings(tmp_path) == [ORIGINAL] * 4
    calls = (tmp_path / 'ip-state.json.log').read_text().splitlines()
    # VF 1 was read back unchanged after its failure, so only VF 0 is put back
    assert [call for call in calls if call.startswith('link set')] == [
        'link set dev ens1f0 vf 0 trust on spoofchk off', 'link set dev ens1f0 vf 1 trust on spoofchk off',
        'link set dev ens1f0 vf 0 trust off spoofchk on']


def test_a_failed_second_attach_puts_the_first_vfs_settings_back(tmp_path, host, define_domain):
    """Test double: the real DomainHandle, except that its second attach call fails as libvirt would."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed
    from ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment import run
    from ansible_collections.passthrough.libvirt.tests.integration.domains import second_attach_fails

    SecondAttachFails = second_attach_fails()     # pylint: disable=invalid-name
    dom = define_domain()
    params = dict(host, domain=dom.name(), state='present', request='nic:2', aliases=[NIC], addresses=None, attachment_ids=None,
                  live=None, persistent=None, timeout=5.0, uri='qemu:///system', interface=None)
    with pytest.raises(ChangeFailed) as info:
        run(params, False, open_domain=SecondAttachFails)
    assert str(info.value).endswith('rolled back the 1 device(s) this run attached; nothing was left behind')
    assert interfaces(dom) == [] and vf_settings(tmp_path) == [ORIGINAL] * 4


def test_a_run_killed_after_setting_a_vf_is_put_right_by_the_next(tmp_path, host, define_domain):
    """What a run killed between setting VF 2's trust and attaching it leaves: its record (with what VF 2 had
    before) in the domain's metadata, trust on, no device. The next run puts VF 2 back and drops the record."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import METADATA_KEY, METADATA_URI, metadata_xml
    dom = define_domain()
    stale = '66666666-7777-4888-8999-aaaaaaaaaaaa'
    interface = {'mac': '02:00:0a:00:64:05', 'vlan': 100, 'trust': True, 'spoofchk': None, 'link_state': None,
                 'pf': 'ens1f0', 'vf': 2, 'was': {'trust': False}}
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata_xml([{'id': stale, 'alias': 'nic', 'address': VFS[2],
                                                                        'interface': interface}]),
                    METADATA_KEY, METADATA_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    state = json.loads((tmp_path / 'ip-state.json').read_text())
    state['ens1f0']['vfs']['2']['trust'] = True
    (tmp_path / 'ip-state.json').write_text(json.dumps(state))

    query = attach(tmp_path, host, dom.name(), state='query')
    assert query.result['stale_records'] == [stale] and vf_settings(tmp_path)[2]['trust'] is True    # a query changes nothing
    run = attach(tmp_path, host, dom.name(), request='nic:0', aliases=[NIC])
    assert run.rc == 0 and run.result['changed'] is True and run.result['stale_records'] == [stale]
    assert vf_settings(tmp_path) == [ORIGINAL] * 4
    again = attach(tmp_path, host, dom.name(), request='nic:0', aliases=[NIC])
    assert again.result['changed'] is False
