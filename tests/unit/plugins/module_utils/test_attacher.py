# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Attacher's live path and its rollback, on a running domain.

Test double: an in-memory running, persistent domain that speaks DomainHandle's interface. Live
hostdev attach and unplug cannot happen on this machine (no IOMMU; the nested lab does them for
real), and a persistent detach that fails after a confirmed live unplug cannot be produced on
demand by a real daemon. The config-mode paths run against the real libvirtd in tests/integration.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import (
    Attacher,
    Attachment,
    Plan,
    PlannedAttach,
    read_domain_state,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import LibvirtCallFailed, parse_hostdevs
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import ALIAS_PREFIX, PciAddress, auto_mac

A = PciAddress.parse


class RunningDomain:
    """Live and persistent hostdevs (alias -> address) and metadata; ``fail`` makes one call raise."""

    uuid, name = '33333333-3333-3333-3333-333333333333', 'vm-live'

    def __init__(self, fail: tuple | None = None) -> None:
        self.live: dict[str, str] = {}
        self.config: dict[str, str] = {}
        self.records = {True: [], False: []}
        self.fail = fail
        self.removed: dict[str, str] = {}
        self.calls: list[tuple] = []

    def _maybe_fail(self, call: tuple) -> None:
        self.calls.append(call)
        if call == self.fail:
            self.fail = None
            raise LibvirtCallFailed(f'injected failure of {call[0]}')

    def active(self):
        return True

    def persistent(self):
        return True

    def xml(self, inactive=False):
        devices = self.config if inactive else self.live
        return '<domain><devices>' + ''.join(
            f"<hostdev mode='subsystem' type='pci'><source><address domain='0x{a[0:4]}' bus='0x{a[5:7]}' slot='0x{a[8:10]}' "
            f"function='0x{a[11]}'/></source><alias name='{alias}'/></hostdev>" for alias, a in devices.items()) + '</devices></domain>'

    def metadata(self, live):
        return [dict(record) for record in self.records[live]]

    def set_metadata(self, records, live, config):
        self._maybe_fail(('set_metadata', live, config))
        for side, wanted in ((True, live), (False, config)):
            if wanted:
                self.records[side] = [dict(record) for record in records]

    def attach(self, xml, live, config):
        self._maybe_fail(('attach', live, config))
        [hostdev] = parse_hostdevs(f'<domain><devices>{xml}</devices></domain>')
        for side, wanted in ((self.live, live), (self.config, config)):
            if wanted:
                side[hostdev.alias] = str(hostdev.address)

    def detach(self, alias, live, config):
        self._maybe_fail(('detach', live, config))
        if live:
            del self.live[alias]
            self.removed[alias] = 'removed'      # the guest released it at once
        if config:
            del self.config[alias]

    def watch_removals(self):
        pass

    def removal_outcome(self, alias):
        return self.removed.get(alias)

    def wait_event(self, seconds):
        pass

    def live_aliases(self):
        return set(self.live)

    def state(self):
        return dict(self.live), dict(self.config), self.metadata(True), self.metadata(False)


def holding(dom: RunningDomain, *items: tuple[str, str, str]) -> None:
    for number, address, alias in items:
        ident = f'00000000-0000-4000-8000-{number:012d}'
        dom.live[ALIAS_PREFIX + ident] = dom.config[ALIAS_PREFIX + ident] = address
        for side in (True, False):
            dom.records[side].append({'id': ident, 'alias': alias, 'address': address})


def test_live_and_persistent_attach_and_detach():
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'))
    state = read_domain_state(dom)
    plan = Plan(attach=[PlannedAttach(A('0000:3b:02.1'), 'vf')], detach=[state.attachments[0]])
    outcome = Attacher(dom, state, True, True, 5.0, new_id=lambda: '00000000-0000-4000-8000-000000000002').apply(plan)
    assert [str(a.address) for a in outcome.attached] == ['0000:3b:02.1']
    assert outcome.confirmed == {'00000000-0000-4000-8000-000000000001': 'device-removed event'}
    assert list(dom.live.values()) == list(dom.config.values()) == ['0000:3b:02.1']
    assert [r['id'][-1] for r in dom.metadata(True)] == [r['id'][-1] for r in dom.metadata(False)] == ['2']
    # write-ahead: the record was written before the attach, both definitions at once
    assert dom.calls[:2] == [('set_metadata', True, True), ('attach', True, True)]


def test_a_persistent_detach_failing_after_the_live_unplug_plugs_it_back():
    dom = RunningDomain(fail=('detach', False, True))
    holding(dom, (1, '0000:3b:02.0', 'vf'), (2, '0000:3b:02.1', 'vf'))
    before = dom.state()
    state = read_domain_state(dom)
    with pytest.raises(ChangeFailed) as failed:
        Attacher(dom, state, True, True, 5.0).apply(Plan(detach=state.attachments[::-1]))
    assert str(failed.value).startswith('0000:3b:02.1 (attachment 00000000-0000-4000-8000-000000000002): persistent detach failed: '
                                        'injected failure of detach; rolled back')
    assert dom.state() == before
    assert ('attach', True, False) in dom.calls           # the live side plugged back in alone


def test_a_failed_second_detach_re_attaches_the_first():
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'))
    dom.live['ua-pci-00000000-0000-4000-8000-000000000002'] = '0000:3b:02.1'       # the second one: live only
    dom.records[True].append({'id': '00000000-0000-4000-8000-000000000002', 'alias': 'vf', 'address': '0000:3b:02.1'})
    state = read_domain_state(dom)
    first, second = state.attachments
    assert (second.live, second.config) == (True, False)
    original = dom.detach

    def second_live_detach_fails(alias, live, config):
        if alias == second.libvirt_alias:
            raise LibvirtCallFailed('injected failure of the second detach')
        original(alias, live, config)

    dom.detach = second_live_detach_fails
    before = dom.state()
    with pytest.raises(ChangeFailed, match='live detach failed: injected failure of the second detach; rolled back the 0 device'
                                           r'\(s\) this run attached and the 1 it detached; nothing was left behind'):
        Attacher(dom, state, True, True, 5.0).apply(Plan(detach=[first, second]))
    assert dom.state() == before         # the first one is back, live and persistent, with its id


def test_a_guest_that_never_releases_the_device_is_still_attached():
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'))
    dom.detach = lambda alias, live, config: None            # the call returns, the guest keeps the device
    state = read_domain_state(dom)
    with pytest.raises(ChangeFailed, match=r'still attached: the guest did not release it within 0.3 s'):
        Attacher(dom, state, True, True, 0.3).apply(Plan(detach=state.attachments))
    assert list(dom.live.values()) == ['0000:3b:02.0'] and list(dom.config.values()) == ['0000:3b:02.0']


def test_records_of_the_attachment_keep_attach_order():
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'), (2, '0000:3c:00.0', 'gpu'))
    state = read_domain_state(dom)
    assert [(a.alias, a.live, a.config, a.recorded) for a in state.attachments] == [('vf', True, True, True), ('gpu', True, True, True)]
    assert isinstance(state.attachments[0], Attachment)


class Net:
    """The PF side of NIC VFs (IpLink's interface): settings per (pf, vf); ``fail`` makes one set_vf raise.
    Test double: no SR-IOV NIC exists on this machine; the lab sets a real igb's VFs."""

    def __init__(self, fail: tuple | None = None) -> None:
        self.vfs = {('ens1f0', 0): {'trust': False, 'spoofchk': True}, ('ens1f0', 1): {'trust': False, 'spoofchk': True}}
        self.fail = fail
        self.calls: list[tuple] = []

    def set_vf(self, pf, vf, settings):
        self.calls.append(('set_vf', pf, vf, dict(settings)))
        if (pf, vf, dict(settings)) == self.fail:
            self.fail = None
            raise ChangeFailed(f'VF {vf} of {pf}: injected failure')
        self.vfs[(pf, vf)].update(settings)

    def links(self):
        return {}


NIC_RECORD = {'mac': None, 'vlan': 100, 'trust': True, 'spoofchk': None, 'link_state': None, 'pf': 'ens1f0', 'vf': 1,
              'was': {'trust': False}}


def test_an_interface_is_recorded_then_its_vf_set_then_attached_and_put_back_after_the_unplug():
    dom, net = RunningDomain(), Net()
    state = read_domain_state(dom)
    ident = '00000000-0000-4000-8000-000000000002'
    plan = Plan(attach=[PlannedAttach(A('0000:3b:02.1'), 'nic', interface=dict(NIC_RECORD))])
    outcome = Attacher(dom, state, True, True, 5.0, new_id=lambda: ident, net=net).apply(plan)
    (attached,) = outcome.attached
    mac = attached.interface['mac']
    assert mac == auto_mac(ident) and int(mac[:2], 16) & 0b11 == 0b10          # locally administered, unicast
    assert (dom.calls[0], net.calls, dom.calls[1]) == (('set_metadata', True, True), [('set_vf', 'ens1f0', 1, {'trust': True})],
                                                       ('attach', True, True))
    assert dom.metadata(False)[0]['interface'] == dict(NIC_RECORD, mac=mac)  # what it had before is recorded first
    assert net.vfs[('ens1f0', 1)]['trust'] is True

    state = read_domain_state(dom)
    assert state.attachments[0].interface == dict(NIC_RECORD, mac=mac)      # read back from the metadata
    Attacher(dom, state, True, True, 5.0, net=net).apply(Plan(detach=[state.attachments[0]]))
    assert net.calls[-1] == ('set_vf', 'ens1f0', 1, {'trust': False}) and net.vfs[('ens1f0', 1)]['trust'] is False
    assert dom.live == dom.config == {}


def test_a_vf_that_cannot_be_put_back_after_the_unplug_is_plugged_back_in_as_it_was():
    dom, net = RunningDomain(), Net(fail=('ens1f0', 1, {'trust': False}))
    ident = '00000000-0000-4000-8000-000000000002'
    Attacher(dom, read_domain_state(dom), True, True, 5.0, new_id=lambda: ident, net=net).apply(
        Plan(attach=[PlannedAttach(A('0000:3b:02.1'), 'nic', interface=dict(NIC_RECORD))]))
    state = read_domain_state(dom)
    with pytest.raises(ChangeFailed) as info:
        Attacher(dom, state, True, True, 5.0, net=net).apply(Plan(detach=[state.attachments[0]]))
    assert str(info.value) == ('0000:3b:02.1 (attachment 00000000-0000-4000-8000-000000000002): detached, but its VF settings were '
                               'not put back: VF 1 of ens1f0: injected failure; rolled back the 0 device(s) this run attached and '
                               'the 1 it detached; nothing was left behind')
    assert list(dom.live.values()) == list(dom.config.values()) == ['0000:3b:02.1']
    # the failed restore changed nothing, so the VF is back in the guest with the settings it had there
    assert net.calls[-1] == ('set_vf', 'ens1f0', 1, {'trust': False}) and net.vfs[('ens1f0', 1)]['trust'] is True


def test_a_drain_reports_the_device_a_guest_keeps_and_records_only_what_left(tmp_path):
    """DrainRun over the running double: one device is released, the other never is (the guest keeps it). The drain
    waits ``timeout``, reports the kept one in ``stuck`` and fails, and records only the released one on the host."""
    import json

    from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import DrainRun
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'), (2, '0000:3b:02.1', 'vf'))
    kept_alias = ALIAS_PREFIX + '00000000-0000-4000-8000-000000000002'
    release = dom.detach

    def detach(alias, live, config):
        if not (live and alias == kept_alias):
            release(alias, live, config)
    dom.detach = detach
    config_path = tmp_path / 'state.json'
    params = {'state': 'drained', 'uri': 'test:///default', 'domain': dom.name, 'timeout': 0.3,
              'config_path': str(config_path), 'sysfs_root': str(tmp_path / 'sys'), 'mdevctl_dir': None}
    result = DrainRun(params, False, open_domain=lambda _conn, _name: dom, mdev_sysfs=lambda _root: None).run()
    assert result['failed'] is True and result['changed'] is True
    assert result['stuck'] == [{'domain': 'vm-live', 'uuid': dom.uuid, 'attachment_id': '00000000-0000-4000-8000-000000000002',
                                'label': '0000:3b:02.1',
                                'reason': 'still attached: the guest did not release it within 0.3 s'}]
    assert result['msg'].startswith('drain incomplete: vm-live: 0000:3b:02.1 (attachment 00000000-0000-4000-8000-000000000002): still')
    assert result['msg'].endswith('; 1 other device(s) drained and recorded')
    assert [d['address'] for d in result['drained'][0]['devices']] == ['0000:3b:02.0']
    assert dom.live == dom.config == {kept_alias: '0000:3b:02.1'}              # still attached, both definitions
    assert [r['id'][-1] for r in dom.metadata(True)] == [r['id'][-1] for r in dom.metadata(False)] == ['2']
    record = json.loads(config_path.read_text())['drained'][dom.uuid]
    assert record['aliases'] == {'vf': 1} and [d['address'] for d in record['devices']] == ['0000:3b:02.0']


def test_a_forced_drain_unplugs_another_tools_device_by_its_live_alias_then_from_the_definition(tmp_path):
    """DrainRun with force over the running double: another tool's hostdev (alias hostdev0, no record) leaves the running
    domain by its alias, confirmed by the event, then the persistent definition by its source address; ours as usual."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import DrainRun
    dom = RunningDomain()
    holding(dom, (1, '0000:3b:02.0', 'vf'))
    dom.live['hostdev0'] = dom.config['hostdev0'] = '0000:86:00.0'

    def detach_xml(xml, live, config):
        dom.calls.append(('detach_xml', live, config))
        [hostdev] = parse_hostdevs(f'<domain><devices>{xml}</devices></domain>')
        side = dom.config if config else dom.live
        del side[next(alias for alias, address in side.items() if address == str(hostdev.address))]
    dom.detach_xml = detach_xml
    params = {'state': 'drained', 'uri': 'test:///default', 'domain': dom.name, 'timeout': 5, 'force': True,
              'config_path': str(tmp_path / 'state.json'), 'sysfs_root': str(tmp_path / 'sys'), 'mdevctl_dir': None}
    result = DrainRun(params, False, open_domain=lambda _conn, _name: dom, mdev_sysfs=lambda _root: None).run()
    assert result['changed'] is True and result['stuck'] == [] and not result.get('failed')
    assert dom.live == {} and dom.config == {}
    assert ('detach', True, False) in dom.calls and ('detach_xml', False, True) in dom.calls
    [record] = result['drained']
    assert record['aliases'] == {'vf': 1} and record['addresses'] == ['0000:86:00.0']
    assert [(d['address'], d.get('foreign', False), d['confirmed_by']) for d in record['devices']] == [
        ('0000:3b:02.0', False, 'device-removed event'), ('0000:86:00.0', True, 'device-removed event')]
