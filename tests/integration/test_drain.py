# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_attachment state=drained and state=restored against the real libvirtd, in config mode on defined `pcitest-`
domains, devices from the dual-socket fixture tree (see test_pci_attachment.py). The live path - every unplug asked
for first, confirmed together by device-removed events - runs in the lab, where a guest can release a device."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process

libvirt = pytest.importorskip('libvirt')

VFS = ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']
GPUS = ['0000:3c:00.0', '0000:86:00.0']
ALIASES = [{'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
           {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]
SPEC = [{'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}, {'vendor_id': '10de', 'product_id': '20b5'}]


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    return {'sysfs_root': str(tmp_path / 'sys'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': SPEC}


def module(tmp_path, host, **args):
    return run_module_process('pci_attachment', dict(host, **args), tmp_path)


def held(dom) -> list[str]:
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import parse_hostdevs
    return sorted(str(h.address) for h in parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))


def ours(result: dict, doms: list) -> dict:
    """The drain or restore entries of this test's domains (the daemon may hold other domains), by name."""
    names = {dom.name() for dom in doms}
    return {entry['domain']: entry for entry in result if entry['domain'] in names}


def setup_three(tmp_path, host, define_domain):
    doms = [define_domain(), define_domain(), define_domain()]
    for dom, request in zip(doms, ('vf:2', 'vf:1,gpu:1', 'gpu:1'), strict=True):
        run = module(tmp_path, host, domain=dom.name(), request=request, aliases=ALIASES)
        assert run.rc == 0, run.msg
    return doms


def test_drain_and_restore_three_domains(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    before = [held(dom) for dom in doms]
    assert [len(devices) for devices in before] == [2, 2, 1]

    checked = module(tmp_path, host, state='drained', _ansible_check_mode=True)
    assert checked.rc == 0 and checked.result['changed'] is True
    assert [held(dom) for dom in doms] == before and not (tmp_path / 'etc' / 'state.json').exists()

    drained = module(tmp_path, host, state='drained')
    assert drained.rc == 0, drained.msg
    mine = ours(drained.result['drained'], doms)
    assert {name: entry['aliases'] for name, entry in mine.items()} == {
        doms[0].name(): {'vf': 2}, doms[1].name(): {'vf': 1, 'gpu': 1}, doms[2].name(): {'gpu': 1}}
    assert mine[doms[1].name()]['request'] == 'gpu:1,vf:1'
    assert {d['confirmed_by'] for entry in mine.values() for d in entry['devices']} == {'persistent configuration'}
    assert drained.result['stuck'] == [] and drained.result['seconds'] >= 0
    assert [held(dom) for dom in doms] == [[], [], []]
    kept = json.loads((tmp_path / 'etc' / 'state.json').read_text())['drained']
    assert {record['domain'] for record in kept.values()} >= {dom.name() for dom in doms}
    statuses = run_module_process('pci_device_info', dict(host, device_spec=SPEC), tmp_path).result['pci_devices']
    assert {d['status'] for d in statuses if d['address'] in VFS + GPUS} == {'available'}

    assert module(tmp_path, host, state='drained').result['changed'] is False        # nothing of ours left

    planned = module(tmp_path, host, state='restored', aliases=ALIASES, _ansible_check_mode=True)
    assert planned.rc == 0 and planned.result['changed'] is True and [held(dom) for dom in doms] == [[], [], []]

    restored = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert restored.rc == 0, restored.msg
    assert {name: entry['request'] for name, entry in ours(restored.result['restored'], doms).items()} == {
        doms[0].name(): 'vf:2', doms[1].name(): 'gpu:1,vf:1', doms[2].name(): 'gpu:1'}
    after = [held(dom) for dom in doms]
    assert [len(devices) for devices in after] == [2, 2, 1]
    assert len(set(sum(after, []))) == 5                                           # no device given twice
    assert json.loads((tmp_path / 'etc' / 'state.json').read_text())['drained'] == {}
    again = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert again.rc == 0 and again.result['changed'] is False


def test_a_restore_that_cannot_be_met_attaches_nothing(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    module(tmp_path, host, state='drained', domain=doms[1].name())              # one domain only
    assert [len(held(dom)) for dom in doms] == [2, 0, 1]
    taker = define_domain()
    assert module(tmp_path, host, domain=taker.name(), request='gpu:1', aliases=ALIASES).rc == 0   # the last free GPU
    refused = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert refused.rc == 1
    assert refused.msg.startswith(f'restore of {doms[1].name()}: request: not enough free devices on this host: gpu: 1 requested, 0 free')
    assert refused.msg.endswith('; nothing was attached')
    assert held(doms[1]) == []
    kept = json.loads((tmp_path / 'etc' / 'state.json').read_text())['drained']
    assert [record['domain'] for record in kept.values()] == [doms[1].name()]


def test_domains_competing_for_devices_are_undone_together(tmp_path, host, define_domain):
    first, second = define_domain(), define_domain()
    for dom in (first, second):
        assert module(tmp_path, host, domain=dom.name(), request='vf:2', aliases=ALIASES).rc == 0
    for dom in (first, second):
        assert module(tmp_path, host, state='drained', domain=dom.name()).rc == 0
    taker = define_domain()
    assert module(tmp_path, host, domain=taker.name(), request='vf:1', aliases=ALIASES).rc == 0
    # each alone fits (3 VFs free for 2), both do not: the second fails and the first is detached again
    failed = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert failed.rc == 1 and 'nothing was attached (the 2 device(s) given to earlier domains were detached again)' in failed.msg
    assert held(first) == [] and held(second) == []
    assert len(json.loads((tmp_path / 'etc' / 'state.json').read_text())['drained']) == 2


def test_a_restore_on_another_host_takes_the_records_given(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    drained = module(tmp_path, host, state='drained', domain=doms[0].name()).result['drained']
    other = dict(host, config_path=str(tmp_path / 'other' / 'state.json'))     # another host's state: no record there
    nothing = module(tmp_path, other, state='restored', aliases=ALIASES)
    assert nothing.rc == 0 and nothing.result['changed'] is False
    moved = module(tmp_path, other, state='restored', aliases=ALIASES, drained=drained)
    assert moved.rc == 0, moved.msg
    assert len(held(doms[0])) == 2


def test_a_restore_gives_devices_back_by_address_before_any_alias_picks(tmp_path, host, define_domain):
    by_alias, by_address = define_domain(), define_domain()
    # The GPU the alias takes when both are free; the other domain then has that one by address.
    first = module(tmp_path, host, domain=by_alias.name(), request='gpu:1', aliases=ALIASES).result['attached'][0]['address']
    assert module(tmp_path, host, domain=by_alias.name(), request='gpu:0', aliases=ALIASES).rc == 0
    assert module(tmp_path, host, domain=by_address.name(), addresses=[first]).rc == 0
    assert module(tmp_path, host, domain=by_alias.name(), request='gpu:1', aliases=ALIASES).rc == 0
    other = held(by_alias)[0]
    records = [module(tmp_path, host, state='drained', domain=dom.name()).result['drained'][0] for dom in (by_alias, by_address)]
    # Both GPUs are free again, and the alias's record comes first: the alias would take `first`, the one the other
    # domain had by address.
    restored = module(tmp_path, host, state='restored', aliases=ALIASES, drained=records)
    assert restored.rc == 0, restored.msg
    assert held(by_address) == [first] and held(by_alias) == [other]


def source(address: str, typed: bool = False) -> str:
    domain, bus, rest = address.split(':')
    slot, function = rest.split('.')
    kind = "type='pci' " if typed else ''
    return f"<source><address {kind}domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/></source>"


def test_force_drains_other_tools_devices_too_and_a_restore_gives_them_back(tmp_path, host, define_domain):
    # Another tool's device (no alias of this collection, no record) in the definition, and one of ours.
    dom = define_domain(hostdevs=f"<hostdev mode='subsystem' type='pci' managed='yes'>{source(GPUS[1])}</hostdev>")
    vf = module(tmp_path, host, domain=dom.name(), request='vf:1', aliases=ALIASES).result['attached'][0]['address']
    assert held(dom) == sorted([GPUS[1], vf])
    plain = module(tmp_path, host, state='drained', domain=dom.name())
    assert plain.rc == 0 and held(dom) == [GPUS[1]]                       # without force: ours only
    assert module(tmp_path, host, state='restored', aliases=ALIASES).rc == 0
    checked = module(tmp_path, host, state='drained', domain=dom.name(), force=True, _ansible_check_mode=True)
    assert checked.rc == 0 and checked.result['changed'] is True
    assert [(d['address'], d.get('foreign', False)) for d in checked.result['drained'][0]['devices']][-1] == (GPUS[1], True)
    assert len(held(dom)) == 2
    forced = module(tmp_path, host, state='drained', domain=dom.name(), force=True)
    assert forced.rc == 0, forced.msg
    assert held(dom) == []
    entry = forced.result['drained'][0]
    assert entry['aliases'] == {'vf': 1} and entry['addresses'] == [GPUS[1]]
    assert [d['confirmed_by'] for d in entry['devices'] if d.get('foreign')] == ['persistent configuration']
    # The restore gives it back by address, as an attachment of this collection now.
    restored = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert restored.rc == 0, restored.msg
    assert GPUS[1] in held(dom) and len(held(dom)) == 2


def test_force_leaves_another_tools_network_interface_and_mdev_and_says_so(tmp_path, host, define_domain):
    mdev = '3a1b2c4d-0000-4000-8000-00000000abcd'
    dom = define_domain(hostdevs=f"<interface type='hostdev' managed='yes'>{source(VFS[3], typed=True)}</interface>"
                                 f"<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{mdev}'/></source></hostdev>")
    run = module(tmp_path, host, state='drained', domain=dom.name(), force=True)
    assert run.rc == 0 and run.result['changed'] is False
    warnings = [w['event']['msg'] if isinstance(w, dict) else w for w in run.result.get('warnings', [])]
    assert warnings == [f"{dom.name()}: {VFS[3]} is a network interface of another tool (<interface type='hostdev'>), "
                        "not drained: force takes other tools' PCI devices (<hostdev type='pci'>) only",
                        f"{dom.name()}: mdev {mdev} is a mediated device of another tool, not drained: force takes other tools' "
                        "PCI devices (<hostdev type='pci'>) only"]
    assert held(dom) == [VFS[3]] and mdev in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def killed_drain(tmp_path, host, where: str) -> None:
    """A drain in a real process that dies at ``where`` the way a killed one does: os._exit, so no finally block, no
    context manager and no rollback runs (the kernel releases the host lock). A test double for the death only - a
    real daemon cannot be made to kill a run at a chosen line; the domains, the daemon and the state file are real.
      before-unplug  the records are written ahead, no unplug asked for yet
      mid-way        the first device is out of its domain's definition, not yet given back; the rest still attached"""
    args_file = tmp_path / 'killed-args.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': dict(host, state='drained')}))
    patch = {'before-unplug': 'Attacher.ask_unplugs', 'mid-way': 'Attacher._give_back'}[where]
    code = (f'import os, runpy, sys\n'
            f'from ansible_collections.passthrough.libvirt.plugins.module_utils import _attachment\n'
            f'setattr(_attachment.{patch.split(".")[0]}, {patch.split(".")[1]!r}, lambda *_args: os._exit(137))\n'
            f'sys.argv = ["pci_attachment", {str(args_file)!r}]\n'
            f'runpy.run_module("ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment", run_name="__main__")\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 137, proc.stdout + proc.stderr


def drained_records(tmp_path, doms) -> dict:
    kept = json.loads((tmp_path / 'etc' / 'state.json').read_text()).get('drained') or {}
    return ours(list(kept.values()), doms)


def test_a_drain_killed_mid_way_is_restored_from_the_records_it_wrote_ahead(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    killed_drain(tmp_path, host, 'mid-way')
    counts = [len(held(dom)) for dom in doms]
    assert sum(counts) == 4                                             # one device out (of whichever domain came first)
    short = next(dom.name() for dom, count, was in zip(doms, counts, (2, 2, 1)) if count < was)
    written = drained_records(tmp_path, doms)
    assert {name: record['aliases'] for name, record in written.items()} == {
        doms[0].name(): {'vf': 2}, doms[1].name(): {'vf': 1, 'gpu': 1}, doms[2].name(): {'gpu': 1}}
    # A restore gives back only what a domain no longer holds: the one device.
    restored = module(tmp_path, host, state='restored', aliases=ALIASES)
    assert restored.rc == 0, restored.msg
    assert {name: len(entry['attached']) for name, entry in ours(restored.result['restored'], doms).items()} == {short: 1}
    after = [held(dom) for dom in doms]
    assert [len(devices) for devices in after] == [2, 2, 1] and len(set(sum(after, []))) == 5
    assert drained_records(tmp_path, doms) == {}


def test_a_drain_killed_before_its_unplugs_leaves_records_the_next_drain_completes(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    killed_drain(tmp_path, host, 'before-unplug')
    assert [len(held(dom)) for dom in doms] == [2, 2, 1]
    assert len(drained_records(tmp_path, doms)) == 3
    drained = module(tmp_path, host, state='drained')                   # the operator runs the drain again
    assert drained.rc == 0, drained.msg
    assert [held(dom) for dom in doms] == [[], [], []]
    written = drained_records(tmp_path, doms)
    assert {name: (record['aliases'], len(record['devices'])) for name, record in written.items()} == {
        doms[0].name(): ({'vf': 2}, 2), doms[1].name(): ({'vf': 1, 'gpu': 1}, 2), doms[2].name(): ({'gpu': 1}, 1)}
    assert module(tmp_path, host, state='restored', aliases=ALIASES).rc == 0
    assert [len(held(dom)) for dom in doms] == [2, 2, 1]


@pytest.mark.parametrize('args, message', [
    ({'state': 'drained', 'request': 'vf:1', 'aliases': ALIASES}, 'request: not with state=drained'),
    ({'state': 'drained', 'drained': []}, 'drained: only with state=restored'),
    ({'state': 'restored', 'drained': [{'aliases': 'x'}]}, "drained[0]: {'aliases': 'x'} is not a record of a drain"),
    ({'state': 'restored', 'domain': 'pcitest-none'}, "domain: 'pcitest-none' has no drain record on this host"),
    ({'state': 'present', 'request': 'vf:1', 'aliases': ALIASES}, 'state is present but all of the following are missing: domain'),
    ({'state': 'drained', 'timeout': 0}, 'timeout: 0.0 must be a number of seconds above 0 and at most 3600'),
    ({'state': 'restored', 'timeout': 3601}, 'timeout: 3601.0 must be a number of seconds above 0 and at most 3600'),
])
def test_bad_drain_input_is_refused(tmp_path, host, args, message):
    run = module(tmp_path, host, **args)
    assert run.rc == 1 and run.msg.startswith(message), run.msg


def test_a_drain_mark_takes_the_device_out_and_a_restore_picks_another(tmp_path, host, define_domain):
    dom = define_domain()
    run = module(tmp_path, host, domain=dom.name(), request='gpu:1', aliases=ALIASES)
    gpu = run.result['attached'][0]['address']
    mark = [{'address': gpu, 'mode': 'drain', 'reason': 'Xid 79, RMA 4711'}]
    checked = run_module_process('pci_whitelist', dict(host, driver='', out_of_service=mark, _ansible_check_mode=True), tmp_path)
    assert checked.rc == 0 and list(ours(checked.result['drained'], [dom])) == [dom.name()]
    assert held(dom) == [gpu]
    marked = run_module_process('pci_whitelist', dict(host, driver='', out_of_service=mark), tmp_path)
    assert marked.rc == 0, marked.msg
    assert f'drain 1 device(s) from {dom.name()}' in marked.result['actions']
    assert ours(marked.result['drained'], [dom])[dom.name()]['aliases'] == {'gpu': 1}
    assert held(dom) == []
    found = run_module_process('pci_device_info', dict(host, address=gpu), tmp_path).result['pci_device']
    assert found['status'] == 'unavailable' and found['unavailable_reason'] == f'out of service (drain, address {gpu}): Xid 79, RMA 4711'
    restored = module(tmp_path, host, state='restored', aliases=ALIASES, domain=dom.name())
    assert restored.rc == 0, restored.msg
    assert held(dom) == [other for other in GPUS if other != gpu]


def test_a_drain_mark_with_a_bad_timeout_stores_nothing(tmp_path, host, define_domain):
    dom = define_domain()
    gpu = module(tmp_path, host, domain=dom.name(), addresses=[GPUS[0]]).result['attached'][0]['address']
    assert run_module_process('pci_whitelist', dict(host, driver=''), tmp_path).rc == 0        # the stored whitelist
    before = (tmp_path / 'etc' / 'state.json').read_text()
    mark = [{'address': gpu, 'mode': 'drain', 'reason': 'RMA'}]
    refused = run_module_process('pci_whitelist', dict(host, driver='', out_of_service=mark, timeout=-1), tmp_path)
    assert refused.rc == 1 and refused.msg == 'timeout: -1.0 must be a number of seconds above 0 and at most 3600'
    assert (tmp_path / 'etc' / 'state.json').read_text() == before and held(dom) == [gpu]


def drain_playbook(tmp_path, host):
    """playbooks/drain.yml over a local host with this fixture tree: play(action, **extra vars) -> its output."""
    import os
    from pathlib import Path

    import yaml
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(yaml.safe_dump({'compute': {'hosts': {'h1': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'pci_sysfs_root': host['sysfs_root'], 'pci_config_path': host['config_path'], 'pci_aliases': ALIASES}}}}))
    playbook = Path(__file__).parents[2] / 'playbooks' / 'drain.yml'
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(Path(sysfs_tree.__file__).parents[4]), ANSIBLE_NOCOLOR='1')

    def play(action, **extra):
        command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory), str(playbook),
                   '-e', f'pci_drain_action={action}']
        for key, value in extra.items():
            command += ['-e', f'{key}={value}']
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return proc.stdout
    return play


def test_the_drain_playbook_drains_and_restores(tmp_path, host, define_domain):
    doms = setup_three(tmp_path, host, define_domain)
    stored = run_module_process('pci_whitelist', dict(host, driver=''), tmp_path)     # the hosts' stored whitelist
    assert stored.rc == 0, stored.msg
    play = drain_playbook(tmp_path, host)
    drained = play('drain')
    assert f'h1: {doms[1].name()} gave up gpu:1,vf:1' in drained
    assert [held(dom) for dom in doms] == [[], [], []]
    restored = play('restore')
    assert f'h1: {doms[0].name()} got vf:2 back' in restored
    assert [len(held(dom)) for dom in doms] == [2, 2, 1]


def test_the_drain_playbook_with_pci_drain_force_takes_and_gives_back_another_tools_device(tmp_path, host, define_domain):
    dom = define_domain(hostdevs=f"<hostdev mode='subsystem' type='pci' managed='yes'>{source(GPUS[1])}</hostdev>")
    vf = module(tmp_path, host, domain=dom.name(), request='vf:1', aliases=ALIASES).result['attached'][0]['address']
    stored = run_module_process('pci_whitelist', dict(host, driver=''), tmp_path)
    assert stored.rc == 0, stored.msg
    play = drain_playbook(tmp_path, host)

    def said(output, text):
        """The debug line says exactly this (the callback quotes it in JSON or YAML)."""
        return re.search(re.escape(text) + r"""['"]?$""", output, re.M) is not None

    assert said(play('drain'), f'h1: {dom.name()} gave up vf:1')                 # without pci_drain_force: ours only
    assert held(dom) == [GPUS[1]]
    assert said(play('restore'), f'h1: {dom.name()} got vf:1 back')
    assert held(dom) == sorted([GPUS[1], vf])
    assert said(play('drain', pci_drain_force='true'), f'h1: {dom.name()} gave up vf:1, {GPUS[1]}')
    assert held(dom) == []
    assert said(play('restore'), f'h1: {dom.name()} got vf:1, {GPUS[1]} back')  # by address, and the alias
    assert GPUS[1] in held(dom) and len(held(dom)) == 2
