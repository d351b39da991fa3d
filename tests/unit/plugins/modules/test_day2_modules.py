# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Day-2 on the dual-socket fixture, through the modules' own run functions (what main runs after the argument
spec; the bad-input cases run as processes, through the argument spec): hardware changes made by editing the
fixture tree's files the way the kernel would show them, out-of-service marks stored by pci_whitelist and seen by
pci_device_info, hypervisor_pci_stats and (from those facts) the fleet report. Allocations come from libvirt's
test:/// driver; pci_whitelist runs with driver null here (no binding: the bind path with a kernel double is in
test_pci_whitelist.py)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_request, parse_aliases
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError
from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import aggregate, candidates, render_html
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import ModuleRun

pytest.importorskip('libvirt')

NODE_XML = """<node><domain type='test'><name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
<memory>65536</memory><os><type>hvm</type></os><devices>
<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></source></hostdev>
</devices></domain></node>"""
# The A100 on socket 0 by address (a changed id keeps it whitelisted), the X710's VFs 2 and 3 (02.3 is in vm-a).
SPEC = [{'address': '0000:3c:00.0'}, {'address': '0000:3b:02.2', 'physical_network': 'physnet1'},
        {'address': '0000:3b:02.3', 'physical_network': 'physnet1'}, {'vendor_id': '10de', 'product_id': '20b5'}]
ALIASES = [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
           {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'}]


def in_process(name: str, args: dict) -> ModuleRun:
    """The module's run function with the argument spec's defaults, as main calls it; an error as main reports it."""
    code = importlib.import_module(f'ansible_collections.passthrough.libvirt.plugins.modules.{name}')
    params = {key: option.get('default') for key, option in code.argument_spec().items()}
    check, diff = args.pop('_ansible_check_mode', False), args.pop('_ansible_diff', False)
    params.update(args)
    try:
        if name == 'pci_whitelist':
            result = code.run(dict(params, _diff=diff, driver=params['driver'] or None), check)
        elif name == 'pci_device_info':
            result = code.run(params)[0]
        else:
            result = code.run(params)
    except PassthroughError as exc:
        return ModuleRun(1, {'failed': True, 'msg': str(exc)}, '')
    return ModuleRun(0, result, '')


@pytest.fixture
def host(tmp_path, run_module):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    (tmp_path / 'node.xml').write_text(NODE_XML)
    common = {'sysfs_root': str(root), 'uri': f'test://{tmp_path}/node.xml', 'config_path': str(tmp_path / 'etc/state.json')}

    def module(name, process=False, **args):
        if process:
            return run_module(name, **dict(common, **args))
        return in_process(name, dict(common, **args))

    module.root = root
    module.state = tmp_path / 'etc/state.json'
    return module


def dev(host, address: str) -> Path:
    return host.root / 'bus/pci/devices' / address


def info(host, **args) -> dict:
    run = host('pci_device_info', **args)
    assert run.rc == 0, run.result.get('msg')
    return run.result


def record(result: dict, address: str) -> dict:
    return next(item for item in result['pci_devices'] if item['address'] == address)


def whitelist(host, **args) -> dict:
    run = host('pci_whitelist', **dict({'device_spec': SPEC, 'driver': ''}, **args))
    assert run.rc == 0, run.result.get('msg')
    return run.result


def set_id(host, address: str, attribute: str, value: str) -> None:
    """A new id as the kernel shows it: the attribute file and its line in uevent (which the collection reads)."""
    path = dev(host, address)
    (path / attribute).write_text(f'0x{value}\n')
    lines = (path / 'uevent').read_text().splitlines()
    key, part = {'device': ('PCI_ID', 1), 'subsystem_device': ('PCI_SUBSYS_ID', 1), 'class': ('PCI_CLASS', None)}[attribute]
    for index, line in enumerate(lines):
        if line.startswith(key + '='):
            if part is None:
                lines[index] = f'{key}={value.lstrip("0").upper()}'
            else:
                ids = line.split('=', 1)[1].split(':')
                ids[part] = value.upper()
                lines[index] = f'{key}={":".join(ids)}'
    (path / 'uevent').write_text('\n'.join(lines) + '\n')


def regroup(host, address: str, group: int) -> None:
    link = dev(host, address) / 'iommu_group'
    target = os.readlink(link)
    link.unlink()
    link.symlink_to(target.rsplit('/', 1)[0] + f'/{group}')


# -- hardware changes -------------------------------------------------------------------------------

CHANGES = {
    # kind: (what is done to the tree, the device whose change is seen, the phrase)
    'product id': (lambda h: set_id(h, '0000:3c:00.0', 'device', '20b6'), '0000:3c:00.0', ['product_id 20b5 \u2192 20b6']),
    'subsystem': (lambda h: set_id(h, '0000:3c:00.0', 'subsystem_device', '1534'), '0000:3c:00.0',
                  ['subsystem_product_id 1533 \u2192 1534']),
    'class': (lambda h: set_id(h, '0000:3c:00.0', 'class', '030000'), '0000:3c:00.0', ['class 030200 \u2192 030000']),
    'group number': (lambda h: regroup(h, '0000:3c:00.0', 40), '0000:3c:00.0', ['IOMMU group 16 \u2192 40']),
    'group members': (lambda h: regroup(h, '0000:3a:02.0', 16), '0000:3c:00.0',
                      ['IOMMU group members 0000:3c:00.0 \u2192 0000:3a:02.0, 0000:3c:00.0']),
    'VF count': (lambda h: (dev(h, '0000:3b:00.0') / 'sriov_numvfs').write_text('2\n'), '0000:3b:02.2', ['VF count 4 \u2192 2']),
}


@pytest.mark.parametrize('kind', sorted(CHANGES))
def test_each_hardware_change_holds_the_device_back_until_accepted(host, kind):
    change, address, phrases = CHANGES[kind]
    first = whitelist(host)
    assert first['changed'] is True and first['hardware_changes'] == []
    stored = json.loads(host.state.read_text())['identities']
    assert address in stored and stored['0000:3c:00.0']['product_id'] == '20b5'
    assert record(info(host), address)['status'] == 'available'

    change(host)
    found = info(host)
    device = record(found, address)
    assert device['status'] == 'unavailable'
    assert device['unavailable_reason'].startswith('hardware changed: ' + '; '.join(phrases))
    assert device['extra_info']['hardware_changes'] == phrases
    assert {'address': address, 'changes': phrases} in found['hardware_changes']
    stats = host('hypervisor_pci_stats').result['hypervisor']
    assert {'address': address, 'changes': phrases} in stats['hardware_changes']
    assert any(device['unavailable_reason'] in pool['unavailable_reasons'] for pool in stats['pci_stats'])

    again = whitelist(host)                        # not accepted: nothing recorded anew, still held back
    assert again['changed'] is False
    assert {'address': address, 'changes': phrases, 'accepted': False} in again['hardware_changes']
    assert {'address': address, 'reason': device['unavailable_reason']} in again['unavailable']

    accepted = whitelist(host, accept_hardware_changes=[address])
    assert accepted['changed'] is True
    assert f'accept the hardware change of {address}: {"; ".join(phrases)}' in accepted['actions']
    after = info(host)
    assert record(after, address)['status'] == 'available'
    assert address not in [item['address'] for item in after['hardware_changes']]


def test_a_removed_device_is_reported_until_accepted(host):
    whitelist(host)
    target = dev(host, '0000:3c:00.0')
    shutil.rmtree(target.resolve())
    target.unlink()
    found = info(host)
    assert found['hardware_changes'] == [{'address': '0000:3c:00.0', 'changes': ['device removed']}]
    assert all(item['address'] != '0000:3c:00.0' for item in found['pci_devices'])
    kept = whitelist(host)
    assert kept['changed'] is False and '0000:3c:00.0' in json.loads(host.state.read_text())['identities']
    whitelist(host, accept_hardware_changes='all')
    assert '0000:3c:00.0' not in json.loads(host.state.read_text())['identities']
    assert info(host)['hardware_changes'] == []


def test_an_allocated_device_that_changed_stays_allocated_and_says_so(host):
    whitelist(host)
    set_id(host, '0000:3b:02.3', 'subsystem_device', '0001')
    device = record(info(host), '0000:3b:02.3')
    assert device['status'] == 'allocated' and device['instance_name'] == 'vm-a'
    assert device['extra_info']['hardware_changes'] == ['subsystem_product_id 0000 \u2192 0001']


def test_check_mode_accepts_nothing(host):
    whitelist(host)
    set_id(host, '0000:3c:00.0', 'device', '20b6')
    before = host.state.read_text()
    checked = whitelist(host, accept_hardware_changes=['0000:3c:00.0'], _ansible_check_mode=True)
    assert checked['changed'] is True and host.state.read_text() == before
    assert record(info(host), '0000:3c:00.0')['status'] == 'unavailable'


@pytest.mark.parametrize('value, message', [
    (['0000:3c:00'], 'accept_hardware_changes[0]: '),
    ('some', "accept_hardware_changes[0]: invalid PCI address 'some'"),
])
def test_bad_acceptance_is_refused(host, value, message):
    run = host('pci_whitelist', process=True, device_spec=SPEC, driver='', accept_hardware_changes=value)
    assert run.rc == 1 and run.result['msg'].startswith(message), run.result['msg']
    assert not host.state.exists()


# -- out of service ---------------------------------------------------------------------------------

MARKS = {
    'address': ({'address': '0000:3c:00.0', 'reason': 'fan failure'}, {'0000:3c:00.0'}),
    'pf': ({'pf': 'ens1f0', 'reason': 'flapping link', 'mode': 'drain'}, {'0000:3b:02.2'}),
    'alias': ({'alias': 'gpu', 'reason': 'driver bug 1234'}, {'0000:3c:00.0', '0000:86:00.0'}),
    'host': ({'host': True, 'reason': 'BIOS update'}, {'0000:3c:00.0', '0000:86:00.0', '0000:3b:02.2'}),
}


@pytest.mark.parametrize('kind', sorted(MARKS))
def test_marks_take_devices_out_of_service_everywhere(host, kind):
    mark, covered = MARKS[kind]
    free = {'0000:3c:00.0', '0000:86:00.0', '0000:3b:02.2'}
    whitelist(host)
    marked = whitelist(host, out_of_service=[mark], aliases=ALIASES)
    assert marked['changed'] is True
    target = {'address': '0000:3c:00.0', 'pf': '0000:3b:00.0', 'alias': 'gpu', 'host': None}[kind]
    wanted = {'kind': kind, 'target': target, 'mode': mark.get('mode', 'no-new'), 'reason': mark['reason']}
    assert marked['out_of_service'] == [wanted]
    label = 'the host' if kind == 'host' else f'{kind} {target}'
    assert f'mark {label} out of service ({wanted["mode"]}): {mark["reason"]}' in marked['actions']

    found = info(host)
    assert found['out_of_service'] == [wanted]
    for address in free:
        device = record(found, address)
        if address in covered:
            assert device['status'] == 'unavailable', address
            assert device['unavailable_reason'] == f'out of service ({wanted["mode"]}, {label}): {mark["reason"]}'
            assert device['extra_info']['out_of_service'] == wanted
        else:
            assert device['status'] == 'available', address
    allocated = record(found, '0000:3b:02.3')      # a domain holds it: allocated, the mark reported when it covers it
    assert allocated['status'] == 'allocated'
    assert ('out_of_service' in allocated['extra_info']) == (kind in ('pf', 'host'))

    stats = host('hypervisor_pci_stats', aliases=ALIASES)
    assert stats.rc == 0
    facts = stats.result['ansible_facts']
    assert facts['pci_out_of_service'] == [wanted]
    assert stats.result['aliases_free']['gpu'] == 2 - len(covered & {'0000:3c:00.0', '0000:86:00.0'})

    # the fleet report from those facts: the marks per host, never proposed for what they cover
    fleet = aggregate([('compute-1', facts)])
    assert fleet['hosts'][0]['out_of_service'] == [wanted]
    aliases = parse_aliases(ALIASES)
    fitting, rejected = candidates(fleet, parse_request('gpu:2', aliases), aliases)
    if covered & {'0000:3c:00.0', '0000:86:00.0'}:
        assert fitting == [] and 'compute-1' in rejected
        if kind == 'host':
            assert rejected['compute-1'] == f'the host is out of service (no-new): {mark["reason"]}'
    else:
        assert [entry['host'] for entry in fitting] == ['compute-1']
    page = render_html(fleet)
    assert 'id="day2-compute-1"' in page and mark['reason'] in page

    cleared = whitelist(host, out_of_service=[])
    assert cleared['changed'] is True and cleared['out_of_service'] == []
    assert f'put {label} back in service' in cleared['actions']
    assert all(record(info(host), address)['status'] == 'available' for address in free)


def test_marks_stay_when_the_option_is_omitted_and_go_with_absent(host):
    whitelist(host, out_of_service=[{'address': '0000:3c:00.0', 'reason': 'fan failure'}])
    kept = whitelist(host)
    assert kept['changed'] is False and len(kept['out_of_service']) == 1
    only = host('pci_whitelist', out_of_service=[{'address': '0000:86:00.0', 'reason': 'RMA'}], driver='')
    assert only.rc == 0 and only.result['whitelist'] == SPEC          # no device_spec: the stored one stays
    assert [mark['target'] for mark in only.result['out_of_service']] == ['0000:86:00.0']
    gone = host('pci_whitelist', state='absent', driver='')
    assert gone.rc == 0 and gone.result['out_of_service'] == []
    assert json.loads(host.state.read_text())['out_of_service'] == []


def test_check_and_diff_mode_store_no_mark(host):
    whitelist(host)
    before = host.state.read_text()
    checked = host('pci_whitelist', process=True, out_of_service=[{'host': True, 'reason': 'maintenance'}], driver='',
                   _ansible_check_mode=True, _ansible_diff=True)
    assert checked.rc == 0 and checked.result['changed'] is True
    assert checked.result['diff']['before']['out_of_service'] == []
    assert checked.result['diff']['after']['out_of_service'] == [{'host': True, 'mode': 'no-new', 'reason': 'maintenance'}]
    assert host.state.read_text() == before
    assert record(info(host), '0000:3c:00.0')['status'] == 'available'


@pytest.mark.parametrize('marks, message', [
    ([{'address': '0000:3c:00.0'}], 'out_of_service[0].reason: None must say why'),
    ([{'address': '3c:00', 'reason': 'x'}], 'out_of_service[0].address: '),
    ([{'pf': 'ens9', 'reason': 'x'}], "out_of_service[0].pf: no PCI device has the network interface 'ens9'"),
    ([{'pf': '0000:3c:00.0', 'reason': 'x'}], 'out_of_service[0].pf: 0000:3c:00.0 is not an SR-IOV physical function'),
    ([{'alias': 'nic', 'reason': 'x'}], "out_of_service[0].alias: 'nic' is not an alias of the aliases option"),
    ([{'host': True, 'address': '0000:3c:00.0', 'reason': 'x'}], 'out_of_service[0]: give exactly one of address, pf, alias, host'),
    ([{'host': True, 'reason': 'x', 'mode': 'evict'}], "out_of_service[0].mode: 'evict' must be one of no-new, drain"),
    ([{'host': True, 'reason': 'x', 'until': 'monday'}], "out_of_service[0]: unknown key 'until'"),
    ([{'address': '0000:3c:00.0', 'reason': 'a'}, {'address': '0000:3c:00.0', 'reason': 'b'}],
     'out_of_service[1]: address 0000:3c:00.0 is already marked in out_of_service[0]'),
])
def test_bad_marks_are_refused_with_the_field_and_value(host, marks, message):
    whitelist(host)
    before = host.state.read_text()
    run = host('pci_whitelist', process=True, out_of_service=marks, aliases=ALIASES, driver='')
    assert run.rc == 1 and run.result['msg'].startswith(message), run.result['msg']
    assert host.state.read_text() == before
