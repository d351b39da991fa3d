# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plan_attachment as tables of cases: a snapshot of values (the dual-socket fixture tree read from its
files, domains and host use given), a domain state, a request -> the plan or the refusal. No libvirtd."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import (
    Attachment,
    AttachmentRequest,
    DomainState,
    plan_attachment,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import Refused
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostSnapshot
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    ALIAS_PREFIX,
    DomainInfo,
    Hostdev,
    HostUse,
    InterfaceOptions,
    NicInfo,
    PciAddress,
    VfConfig,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

A = PciAddress.parse
VM_A, VM_B = '11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222'
VFS = ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']
SPEC = [
    {'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'},    # the X710's 4 VFs
    {'vendor_id': '8086', 'product_id': '1572'},                                      # its two PFs
    {'vendor_id': '10de', 'product_id': '20b5'},                                      # A100s: 3c:00.0 NUMA 0, 86:00.0 NUMA 1
    {'address': '0000:af:00.0'},                                                      # RTX 3090; its HDMI audio stays on the host
    {'address': '0000:d8:00.0'},                                                      # Broadcom NIC ens3f0np0
]
ALIASES = parse_aliases([
    {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
    {'name': 'pf', 'vendor_id': '8086', 'product_id': '1572', 'device_type': 'type-PF'},
    {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'required'},
    {'name': 'gpu-any', 'vendor_id': '10de', 'product_id': '20b5', 'numa_policy': 'preferred'},
    {'name': 'rtx', 'vendor_id': '10de', 'product_id': '2204'},
    {'name': 'nic', 'vendor_id': '14e4', 'product_id': '16d8'},
])
DEFAULT_ROUTE = 'network interface ens3f0np0 carries the default route'


@pytest.fixture(scope='module')
def devices(tmp_path_factory):
    root = tmp_path_factory.mktemp('sys')
    sysfs_tree.dual_socket_server(root)
    return Sysfs(str(root)).read_devices()


def ident(number: int) -> str:
    return f'00000000-0000-4000-8000-{number:012d}'


def attachment(number: int, address: str, alias: str | None, recorded: bool = True) -> Attachment:
    return Attachment(ident(number), A(address), alias, config=True, recorded=recorded)


def domain(uuid: str, name: str, *items: Attachment, stale: tuple = (), nodes: set | None = None) -> DomainState:
    records = [item.metadata() for item in items if item.recorded] + [{'id': ident(n), 'alias': 'vf', 'address': a} for n, a in stale]
    return DomainState(uuid, name, active=False, persistent=True, attachments=list(items), records=records, numa_nodes=nodes)


def info(state: DomainState, *others: str) -> DomainInfo:
    """The DomainInfo libvirt would list for a domain state, plus devices others attached (no alias of ours)."""
    hostdevs = [Hostdev(item.address, ALIAS_PREFIX + item.attachment_id, None, True, 'hostdev') for item in state.attachments]
    hostdevs += [Hostdev(A(address), None, None, True, 'hostdev') for address in others]
    return DomainInfo(state.uuid, state.name, False, True, [], hostdevs)


def snapshot(devices, *domains: DomainInfo, host_use: HostUse | None = None) -> HostSnapshot:
    return HostSnapshot(whitelist=Whitelist.parse(SPEC), devices=devices, domains=list(domains), host_use=host_use or HostUse(),
                        numa_sockets={0: 0, 1: 1})


def want(state='present', request=None, addresses=None, ids=None, force=False) -> AttachmentRequest:
    return AttachmentRequest(state, ALIASES, parse_request(request, ALIASES) if request is not None else None,
                             [A(a) for a in addresses] if addresses is not None else None, ids, force)


def attaches(plan) -> list[tuple[str, str | None]]:
    return [(str(item.address), item.alias) for item in plan.attach]


def detaches(plan) -> list[str]:
    return [item.attachment_id for item in plan.detach]


EMPTY = domain(VM_A, 'vm-a')
TWO_VFS = domain(VM_A, 'vm-a', attachment(1, VFS[0], 'vf'), attachment(2, VFS[1], 'vf'))
THREE = domain(VM_A, 'vm-a', attachment(1, VFS[0], 'vf'), attachment(2, VFS[1], 'vf'), attachment(3, '0000:3c:00.0', 'gpu-any'),
               attachment(4, VFS[2], 'vf'))


@pytest.mark.parametrize('dom, request_, expected_attach, expected_detach', [
    pytest.param(EMPTY, 'vf:2', [(VFS[0], 'vf'), (VFS[1], 'vf')], [], id='grow from nothing, lowest addresses first'),
    pytest.param(TWO_VFS, 'vf:2', [], [], id='the same request again: nothing'),
    pytest.param(TWO_VFS, 'vf:3', [(VFS[2], 'vf')], [], id='grow by the difference'),
    pytest.param(THREE, 'vf:1', [], [ident(4), ident(2)], id='shrink: the most recent first'),
    pytest.param(THREE, 'vf:0', [], [ident(4), ident(2), ident(1)], id='count 0: none of the alias'),
    pytest.param(THREE, 'vf:3', [], [], id='an alias not named is left alone'),
    pytest.param(TWO_VFS, 'vf:1,gpu-any:1', [('0000:3c:00.0', 'gpu-any')], [ident(2)], id='grow one alias, shrink another'),
])
def test_declarative_counts(devices, dom, request_, expected_attach, expected_detach):
    plan = plan_attachment(snapshot(devices, info(dom)), dom, want(request=request_))
    assert attaches(plan) == expected_attach
    assert detaches(plan) == expected_detach


@pytest.mark.parametrize('addresses, others, expected', [
    pytest.param(['0000:3c:00.0'], [], [('0000:3c:00.0', None)], id='a free whitelisted device'),
    pytest.param([VFS[0]], [], [], id='already this domain\'s: nothing'),
    pytest.param([VFS[2], VFS[2]], [], [(VFS[2], None)], id='named twice: once'),
])
def test_by_address(devices, addresses, others, expected):
    plan = plan_attachment(snapshot(devices, info(TWO_VFS, *others)), TWO_VFS, want(addresses=addresses))
    assert attaches(plan) == expected


@pytest.mark.parametrize('addresses, message', [
    (['0000:19:00.0'], 'addresses[0]: 0000:19:00.0 cannot be attached: it is not in the whitelist'),
    (['0000:00:1f.0'], 'addresses[0]: there is no PCI device 0000:00:1f.0 on this host'),
    (['0000:86:00.0'], 'addresses[0]: 0000:86:00.0 cannot be attached: it is allocated to domain vm-b'),
    (['0000:3b:00.0'], 'addresses[0]: 0000:3b:00.0 cannot be attached: it is unavailable: its VF 0000:3b:02.0 is allocated to domain vm-a'),
    (['0000:af:00.0'], 'addresses[0]: 0000:af:00.0 cannot be attached: it is unavailable: IOMMU group 24: 0000:af:00.1 is held by '
                       'the host driver snd_hda_intel'),
])
def test_by_address_refused(devices, addresses, message):
    other = domain(VM_B, 'vm-b', attachment(9, '0000:86:00.0', None))
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(TWO_VFS), info(other)), TWO_VFS, want(addresses=addresses))
    assert str(refused.value) == message


def test_detach_by_id_and_address(devices):
    snap = snapshot(devices, info(THREE))
    assert detaches(plan_attachment(snap, THREE, want('absent', ids=[ident(3), ident(1)]))) == [ident(3), ident(1)]
    assert detaches(plan_attachment(snap, THREE, want('absent', addresses=[VFS[2]]))) == [ident(4)]
    assert detaches(plan_attachment(snap, THREE, want('absent', request='vf:9'))) == [ident(4), ident(2), ident(1)]
    with pytest.raises(Refused, match=rf"attachment_ids\[0\]: {ident(7)} is not attached to domain 'vm-a'"):
        plan_attachment(snap, THREE, want('absent', ids=[ident(7)]))
    with pytest.raises(Refused, match=r"addresses\[0\]: 0000:86:00.0 is not attached to domain 'vm-a' by this collection"):
        plan_attachment(snap, THREE, want('absent', addresses=['0000:86:00.0']))


@pytest.mark.parametrize('request_, message', [
    ('vf:1,pf:2', 'pf: 2 requested, 1 free: 0000:3b:00.0 excluded by a PF or VF taken for this request'),
    ('pf:2,vf:1', 'vf: 1 requested, 0 free: 4 excluded by a PF or VF taken for this request '
                  '(0000:3b:02.0, 0000:3b:02.1, 0000:3b:02.2 and 1 more)'),
    ('rtx:1', 'rtx: 1 requested, 0 free: 0000:af:00.0 unavailable (IOMMU group 24: 0000:af:00.1 is held by the host driver snd_hda_intel)'),
])
def test_pf_vf_exclusion_and_iommu_groups(devices, request_, message):
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(EMPTY)), EMPTY, want(request=request_))
    assert str(refused.value) == 'request: not enough free devices on this host: ' + message


def test_a_vf_in_another_domain_blocks_its_pf(devices):
    other = domain(VM_B, 'vm-b', attachment(9, VFS[3], 'vf'))
    plan = plan_attachment(snapshot(devices, info(EMPTY), info(other)), EMPTY, want(request='pf:1'))
    assert attaches(plan) == [('0000:3b:00.1', 'pf')]


@pytest.mark.parametrize('nodes, request_, expected', [
    pytest.param({1}, 'gpu:1', '0000:86:00.0', id='required: the domain\'s node'),
    pytest.param({0}, 'gpu:1', '0000:3c:00.0', id='required: node 0'),
    pytest.param(None, 'gpu:1', '0000:3c:00.0', id='no placement: lowest address'),
    pytest.param({1}, 'gpu-any:2', '0000:86:00.0', id='preferred: the near one first'),
])
def test_numa_policies(devices, nodes, request_, expected):
    dom = domain(VM_A, 'vm-a', nodes=nodes)
    plan = plan_attachment(snapshot(devices, info(dom)), dom, want(request=request_))
    assert str(plan.attach[0].address) == expected


def test_required_numa_policy_refuses_the_far_device(devices):
    held = domain(VM_B, 'vm-b', attachment(9, '0000:86:00.0', None))
    dom = domain(VM_A, 'vm-a', nodes={1})
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(dom), info(held)), dom, want(request='gpu:1'))
    assert str(refused.value) == ('request: not enough free devices on this host: gpu: 1 requested, 0 free on numa_node 1: '
                                  '0000:3c:00.0 on numa_node 0, not allowed by numa_policy required, 0000:86:00.0 held by domain vm-b')


def test_a_device_the_host_uses_is_never_chosen_by_alias(devices):
    use = HostUse()
    use.add(A('0000:d8:00.0'), DEFAULT_ROUTE)
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(request='nic:1'))
    assert str(refused.value) == ('request: not enough free devices on this host: nic: 1 requested, 0 free: '
                                  f'0000:d8:00.0 unavailable (the host uses it: {DEFAULT_ROUTE}; force: true to take it anyway)')


def test_a_device_the_host_uses_is_never_attached_by_address(devices):
    use = HostUse()
    use.add(A('0000:d8:00.0'), DEFAULT_ROUTE)
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(addresses=['0000:d8:00.0']))
    assert str(refused.value) == (f'addresses[0]: 0000:d8:00.0 cannot be attached: it is unavailable: the host uses it: {DEFAULT_ROUTE} '
                                  '(force: true to take it anyway)')


@pytest.mark.parametrize('how', [{'request': 'nic:1'}, {'addresses': ['0000:d8:00.0']}])
def test_force_takes_it_and_says_so(devices, how):
    use = HostUse()
    use.add(A('0000:d8:00.0'), DEFAULT_ROUTE)
    plan = plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(force=True, **how))
    assert [str(item.address) for item in plan.attach] == ['0000:d8:00.0']
    assert plan.warnings == [f'0000:d8:00.0: force: true attaches it although the host uses it: {DEFAULT_ROUTE}']


def test_force_lifts_only_the_host_use(devices):
    """A device also blocked by its IOMMU group stays refused with force."""
    use = HostUse()
    use.add(A('0000:af:00.0'), 'is the boot VGA device (the console)')
    with pytest.raises(Refused, match='IOMMU group 24'):
        plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(addresses=['0000:af:00.0'], force=True))


def test_force_prefers_devices_the_host_does_not_use(devices):
    use = HostUse()
    use.add(A(VFS[0]), 'network interface ens1f0v0 has address 192.0.2.7')
    plan = plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(request='vf:2', force=True))
    assert attaches(plan) == [(VFS[1], 'vf'), (VFS[2], 'vf')] and plan.warnings == []


def test_orphans_count_for_no_alias_and_can_be_removed(devices):
    dom = domain(VM_A, 'vm-a', attachment(1, VFS[0], 'vf'), attachment(5, VFS[1], None, recorded=False))
    snap = snapshot(devices, info(dom))
    plan = plan_attachment(snap, dom, want(request='vf:2'))
    assert attaches(plan) == [(VFS[2], 'vf')]           # the orphan at 02.1 is not counted, nor given again
    assert plan.warnings == [f"{VFS[1]} (attachment {ident(5)}) carries this collection's alias but no record: it counts for no "
                             'alias; remove it with attachment_ids or addresses']
    assert detaches(plan_attachment(snap, dom, want('absent', request='vf:9'))) == [ident(1)]
    assert detaches(plan_attachment(snap, dom, want('absent', addresses=[VFS[1]]))) == [ident(5)]
    assert detaches(plan_attachment(snap, dom, want('absent', ids=[ident(5)]))) == [ident(5)]


def test_a_record_without_its_device_is_dropped_and_not_counted(devices):
    """A run that died between writing its intent and attaching left a record alone."""
    dom = domain(VM_A, 'vm-a', attachment(1, VFS[0], 'vf'), stale=((6, VFS[1]),))
    plan = plan_attachment(snapshot(devices, info(dom)), dom, want(request='vf:2'))
    assert plan.drop_records == [ident(6)]
    assert attaches(plan) == [(VFS[1], 'vf')]
    assert plan_attachment(snapshot(devices, info(dom)), dom, want(request='vf:1')).drop_records == [ident(6)]


def test_nothing_to_choose_reads_no_devices():
    """A shrink needs no device of the host: the snapshot's devices are never asked for."""
    class NoDevices(HostSnapshot):
        @property
        def devices(self):
            raise AssertionError('devices read')
    plan = plan_attachment(NoDevices(whitelist=Whitelist.parse(SPEC), domains=[], host_use=None), THREE, want(request='vf:1'))
    assert detaches(plan) == [ident(4), ident(2)]


def test_a_shortage_counts_what_the_domain_holds_and_names_the_holders(devices):
    other = domain(VM_B, 'vm-b', attachment(9, VFS[3], 'vf'))
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(TWO_VFS), info(other)), TWO_VFS, want(request='vf:5'))
    # the request's own count, what the domain holds, how many more are free, and why the last VF is not
    assert str(refused.value) == ('request: not enough free devices on this host: '
                                  'vf: 5 requested, the domain holds 2, 1 more free: 0000:3b:02.3 held by domain vm-b')


def test_a_shortage_names_a_pf_blocked_by_its_vf_elsewhere(devices):
    other = domain(VM_B, 'vm-b', attachment(9, VFS[3], 'vf'))
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(EMPTY), info(other)), EMPTY, want(request='pf:2'))
    assert str(refused.value) == ('request: not enough free devices on this host: pf: 2 requested, 1 free: '
                                  '0000:3b:00.0 unavailable (its VF 0000:3b:02.3 is allocated to domain vm-b)')


def test_with_force_the_host_use_is_no_reason(devices):
    use = HostUse()
    use.add(A('0000:d8:00.0'), DEFAULT_ROUTE)
    plan = plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(request='nic:1', force=True))
    assert attaches(plan) == [('0000:d8:00.0', 'nic')]
    with pytest.raises(Refused) as refused:
        plan_attachment(snapshot(devices, info(EMPTY), host_use=use), EMPTY, want(request='nic:2', force=True))
    assert str(refused.value) == 'request: not enough free devices on this host: nic: 2 requested, 1 free'


# -- NIC VFs as network interfaces ------------------------------------------------------------------------

NIC_ALIASES = parse_aliases([
    {'name': 'nic', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF',
     'interface': {'vlan': 100, 'mac': 'auto', 'trust': True}},
    {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
    {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5', 'interface': {'vlan': 100}},
])
ENS1F0 = NicInfo('ens1f0', 'up', {index: VfConfig(index, '00:00:00:00:00:00', None, False, True, 'auto') for index in range(4)})


def nic_snapshot(devices, *domains: DomainInfo, nic: NicInfo | None = ENS1F0) -> HostSnapshot:
    """The fixture host with its PF ens1f0's VF settings as ip would report them (``nic`` None: the PF has no interface)."""
    return HostSnapshot(whitelist=Whitelist.parse(SPEC), devices=devices, domains=list(domains), host_use=HostUse(),
                        numa_sockets={0: 0, 1: 1}, nics={A('0000:3b:00.0'): nic})


def nic_want(request, interface=None, addresses=None) -> AttachmentRequest:
    return AttachmentRequest('present', NIC_ALIASES, parse_request(request, NIC_ALIASES) if request else None,
                             [A(a) for a in addresses] if addresses else None,
                             interface=InterfaceOptions.parse('interface', interface) if interface is not None else None)


def test_an_alias_interface_plans_each_vf_with_its_pf_index_and_what_it_had(devices):
    plan = plan_attachment(nic_snapshot(devices), EMPTY, nic_want('nic:2'))
    assert [(str(p.address), p.interface) for p in plan.attach] == [
        (VFS[index], {'mac': None, 'vlan': 100, 'trust': True, 'spoofchk': None, 'link_state': None, 'pf': 'ens1f0', 'vf': index,
                      'was': {'trust': False}}) for index in (0, 1)]
    # a plain alias stays a plain hostdev
    assert [p.interface for p in plan_attachment(nic_snapshot(devices), EMPTY, nic_want('vf:1')).attach] == [None]


def test_the_run_s_interface_overrides_the_alias_s_keys_and_makes_plain_aliases_interfaces(devices):
    plan = plan_attachment(nic_snapshot(devices), EMPTY, nic_want('nic:1', {'vlan': 200, 'spoofchk': False}))
    assert {k: plan.attach[0].interface[k] for k in ('vlan', 'trust', 'spoofchk', 'was')} == {
        'vlan': 200, 'trust': True, 'spoofchk': False, 'was': {'trust': False, 'spoofchk': True}}
    by_address = plan_attachment(nic_snapshot(devices), EMPTY, nic_want(None, {'link_state': 'disable'}, addresses=[VFS[3]]))
    assert by_address.attach[0].interface['link_state'] == 'disable' and by_address.attach[0].interface['vf'] == 3


def test_listed_macs_skip_those_the_domain_s_attachments_hold(devices):
    held = Attachment(ident(1), A(VFS[0]), 'nic', config=True, interface={'mac': '02:00:00:00:00:01', 'pf': 'ens1f0', 'vf': 0})
    dom = DomainState(VM_A, 'vm-a', False, True, [held], [held.metadata()], macs={'02:00:00:00:00:01': 'interface type=hostdev'})
    plan = plan_attachment(nic_snapshot(devices, info(dom)), dom,
                           nic_want('nic:3', {'mac': ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:03']}))
    assert [p.interface['mac'] for p in plan.attach] == ['02:00:00:00:00:02', '02:00:00:00:00:03']


@pytest.mark.parametrize('nic, request_, message', [
    (None, 'nic:1', "aliases: alias 'nic' (interface): trust of 0000:3b:02.0 are set on its PF 0000:3b:00.0, which has no network "
                    'interface (is it bound to a network driver?)'),
    (NicInfo('ens1f0', 'up', None), 'nic:1',
     "aliases: alias 'nic' (interface): trust of 0000:3b:02.0 are set on its PF ens1f0, but the VF's trust cannot be read there "
     '(ip -json link show ens1f0, VF 0), so they could not be put back after the detach'),
    (ENS1F0, 'gpu:1', "aliases: alias 'gpu' (interface): 0000:3c:00.0 (class 0302, not a VF) cannot be given as a network "
                      'interface: only VFs of network controllers (class 02xx) can'),
])
def test_interfaces_refused_before_any_change(devices, nic, request_, message):
    with pytest.raises(Refused) as info_:
        plan_attachment(nic_snapshot(devices, nic=nic), EMPTY, nic_want(request_))
    assert str(info_.value) == message


def test_a_stale_record_puts_its_vf_back_unless_another_domain_holds_it_now(devices):
    interface = {'mac': '02:00:00:00:00:05', 'vlan': None, 'trust': True, 'spoofchk': None, 'link_state': None, 'pf': 'ens1f0',
                 'vf': 2, 'was': {'trust': False}}
    stale = DomainState(VM_A, 'vm-a', False, True, [], [{'id': ident(9), 'alias': 'nic', 'address': VFS[2], 'interface': interface}])
    plan = plan_attachment(nic_snapshot(devices), stale, nic_want('nic:0'))
    assert [(r.pf, r.vf, r.settings) for r in plan.restore] == [('ens1f0', 2, {'trust': False})] and plan.changes
    elsewhere = DomainInfo(VM_B, 'vm-b', False, True, [], [Hostdev(A(VFS[2]), None, None, True, 'interface')])
    assert plan_attachment(nic_snapshot(devices, elsewhere), stale, nic_want('nic:0')).restore == []
