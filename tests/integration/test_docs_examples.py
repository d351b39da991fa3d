# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every YAML example of README.md, docs/*.md and the modules' EXAMPLES runs, or says why it cannot.

Each example is run with ansible-playbook over two `ansible_connection=local` hosts, h1 and h2 (the
group `compute`), each with its own dual-socket fixture sysfs tree and state file, against the real
libvirtd. The hosts' whitelist is stored beforehand and the variables of `playbooks/examples/group_vars/`
are the inventory's, as getting-started.md sets them up. The modules reach the fixture through
module_defaults for the action group `group/passthrough.libvirt.pci` (uri, sysfs_root, config_path),
the roles through `pci_sysfs_root` and `pci_config_path`. A domain name of the docs (`web01`) becomes
a real `pcitest-<pid>-...` domain, defined (not started) for the example and removed afterwards.

How each block is run is said by its marker (see docs_examples/extract.py); a block without one
fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process
from ansible_collections.passthrough.libvirt.tests.integration import nic
from ansible_collections.passthrough.libvirt.tests.integration.docs_examples.extract import (
    Example, Marker, markdown_examples, module_examples, parse_marker)

ROOT = Path(__file__).resolve().parents[2]
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]
EXAMPLE_VARS = ROOT / 'playbooks' / 'examples' / 'group_vars'
DOCS = sorted([ROOT / 'README.md', *(ROOT / 'docs').glob('*.md')])
MODULES = sorted(p.stem for p in (ROOT / 'plugins' / 'modules').glob('*.py') if not p.stem.startswith('_'))
# The domain names the docs use; each one found in an example becomes a real pcitest- domain.
DOC_DOMAINS = ('web01',)
HOSTS = ('h1', 'h2')

# How each module's EXAMPLES run (the markers of the docs, for strings that have none).
MODULE_EXAMPLES = {
    'hypervisor_pci_stats': 'tasks',
    'pci_attachment': 'tasks',
    'pci_device_info': 'tasks',
    'pci_fleet': 'playbook',
    # A fixture tree cannot bind a driver or create VFs (nothing plays the kernel's part under
    # ansible-playbook): the whole plan is made and checked, in check mode.
    'pci_whitelist': 'tasks --check --diff',
}

# Role variables that a module also reads: a vars example of the role is run through it too.
ROLE_VAR_MODULES = {
    'pci_device_spec': ('pci_device_info', 'device_spec', {}),
    'pci_aliases': ('hypervisor_pci_stats', 'aliases', {}),
    # As the pci_host role runs it: with the inventory's whitelist, here without binding.
    'pci_sriov': ('pci_whitelist', 'sriov', {'driver': None, 'device_spec': '{{ pci_device_spec }}'}),
}


def all_examples() -> list[Example]:
    found = [example for path in DOCS for example in markdown_examples(path, ROOT)]
    for name in MODULES:
        text = module_examples(ROOT / 'plugins' / 'modules' / f'{name}.py')
        marker = parse_marker(MODULE_EXAMPLES[name]) if name in MODULE_EXAMPLES else None
        found.append(Example(f'plugins/modules/{name}.py:EXAMPLES', text, marker))
    return found


EXAMPLES = all_examples()


def test_every_example_has_a_marker():
    unmarked = [f'{e.source}: {e.marker_error or "no marker on the line before the block"}'
                for e in EXAMPLES if e.marker is None]
    assert not unmarked, ('YAML examples without a readable marker (<!-- example: tasks|playbook|vars ...|'
                          'not runnable: REASON --> on the line before the block; MODULE_EXAMPLES for a module):\n'
                          + '\n'.join(unmarked))
    assert set(MODULE_EXAMPLES) == set(MODULES), 'MODULE_EXAMPLES must name every module, and only those'


# The lab: two fixture hosts with a stored whitelist, the example's domains.

def _lab(tmp_path: Path) -> Path:
    """The inventory (written in tmp_path) of h1 and h2: fixture trees, stored whitelist, example variables."""
    group_vars = {}
    for path in sorted(EXAMPLE_VARS.glob('*.yml')):
        group_vars.update(yaml.safe_load(path.read_text()))
    hosts = {}
    for name in HOSTS:
        sysfs_tree.dual_socket_server(tmp_path / name / 'sys')
        hosts[name] = {'pci_sysfs_root': str(tmp_path / name / 'sys'), 'pci_config_path': str(tmp_path / name / 'state.json'),
                       'pci_persist_path': str(tmp_path / name / 'udev.rules')}
        stored = run_module_process('pci_whitelist', {
            'sysfs_root': hosts[name]['pci_sysfs_root'], 'config_path': hosts[name]['pci_config_path'],
            'device_spec': group_vars['pci_device_spec'], 'driver': None}, tmp_path)
        assert stored.rc == 0, stored.msg
    inventory = {'compute': {'hosts': hosts, 'vars': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, **group_vars}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    return tmp_path / 'inventory.yml'


@pytest.fixture(scope='module')
def inventory(libvirtd, tmp_path_factory):   # pylint: disable=unused-argument
    """One lab for every example: they change only their own domains (removed after each) and write in their own directory."""
    return _lab(tmp_path_factory.mktemp('docs-lab'))


MODULE_DEFAULTS = {
    'group/passthrough.libvirt.pci': {
        'uri': 'qemu:///system', 'sysfs_root': '{{ pci_sysfs_root }}', 'config_path': '{{ pci_config_path }}'},
    # Never /etc/udev/rules.d on the test machine.
    'passthrough.libvirt.pci_whitelist': {'persist_path': '{{ pci_persist_path }}'},
}


def _with_defaults(play: dict) -> dict:
    if 'hosts' not in play:
        return play                      # import_playbook: the roles take pci_sysfs_root and pci_config_path
    defaults = dict(MODULE_DEFAULTS)
    defaults.update(play.get('module_defaults') or {})
    return {**play, 'module_defaults': defaults}


def _domains(text: str, options: list[str], define_domain) -> tuple[str, list[str]]:
    """The docs' domain names replaced, in the example and its options, by real pcitest- domains."""
    for name in DOC_DOMAINS:
        pattern = re.compile(rf'(?<![\w-]){re.escape(name)}(?![\w-])')
        if pattern.search(text) or any(pattern.search(option) for option in options):
            real = define_domain().name()
            text = pattern.sub(real, text)
            options = [pattern.sub(real, option) for option in options]
    return text, options


def _playbook(marker: Marker, text: str) -> list:
    if marker.kind == 'playbook':
        plays = yaml.safe_load(text)
        assert isinstance(plays, list) and all(isinstance(p, dict) for p in plays), 'a playbook example is a list of plays'
        return [_with_defaults(play) for play in plays]
    if marker.kind == 'tasks':
        tasks = yaml.safe_load(text)
        assert isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks), 'a tasks example is a list of tasks'
        return [_with_defaults({'name': 'docs example', 'hosts': marker.hosts, 'gather_facts': False, 'tasks': tasks})]
    return _vars_playbook(marker, yaml.safe_load(text))


def _module_task(module: str, args: dict) -> dict:
    return {'name': f'through {module}', f'passthrough.libvirt.{module}': args, 'check_mode': True}


def _vars_playbook(marker: Marker, values) -> list:
    assert isinstance(values, dict) and values, 'a vars example is a mapping'
    tasks = []
    if marker.role:
        spec = yaml.safe_load((ROOT / 'roles' / marker.role / 'meta' / 'argument_specs.yml').read_text())
        options = spec['argument_specs']['main']['options']
        unknown = sorted(set(values) - set(options))
        assert not unknown, f'{", ".join(unknown)}: not variables of the role {marker.role}'
        subset = {key: {k: v for k, v in options[key].items() if k not in ('required', 'description')} for key in values}
        tasks.append({'name': f'the argument spec of {marker.role}', 'ansible.builtin.validate_argument_spec': {
            'argument_spec': subset, 'provided_arguments': values}})
        for key, value in values.items():
            if key in ROLE_VAR_MODULES:
                module, option, extra = ROLE_VAR_MODULES[key]
                tasks.append(_module_task(module, {option: value, **extra}))
    else:
        tasks.append(_module_task(marker.module, values))
    return [_with_defaults({'name': 'docs example (vars)', 'hosts': 'h1', 'gather_facts': False, 'tasks': tasks})]


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def _run(tmp_path: Path, plays: list, options: list[str], inventory: Path) -> subprocess.CompletedProcess:
    playbook = tmp_path / 'example.yml'
    playbook.write_text(yaml.dump(plays, Dumper=_NoAliases, sort_keys=False, width=1000))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1', ANSIBLE_CALLBACK_RESULT_FORMAT='yaml',
               ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCALHOST_WARNING='0',
               # the fixture PF's VF settings (trust, spoof checking) live in the iproute2 double's state
               **nic.environment(nic.write_state(tmp_path / 'ip-state.json')))
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory),
                           str(playbook), *options], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize('example', [e for e in EXAMPLES if e.marker is not None], ids=lambda e: e.id)
def test_example_runs(example: Example, tmp_path, request, define_domain):
    marker = example.marker
    if marker.kind == 'not runnable':
        pytest.skip(f'not runnable: {marker.reason}')
    inventory_path = request.getfixturevalue('inventory')
    text, options = _domains(example.text, marker.options, define_domain)
    proc = _run(tmp_path, _playbook(marker, text), options, inventory_path)
    assert proc.returncode == 0, (f'{example.source} failed (rc {proc.returncode}); the playbook:\n'
                                  + (tmp_path / 'example.yml').read_text() + '\n' + proc.stdout[-6000:] + proc.stderr[-3000:])
    assert 'fatal:' not in proc.stdout, proc.stdout[-6000:]


def test_the_fleet_examples_say_run_once():
    """pci_fleet bypasses the host loop: without run_once its result is registered on the first host only,
    and a later task of the example fails on the others ('fleet' is undefined). The examples run over two hosts."""
    checked = []
    for example in EXAMPLES:
        if 'passthrough.libvirt.pci_fleet:' not in example.text or example.marker is None or example.marker.kind == 'not runnable':
            continue
        loaded = yaml.safe_load(example.text)
        tasks = loaded if example.marker.kind != 'playbook' else [
            task for play in loaded if play.get('hosts') not in (None, 'localhost') for task in play.get('tasks', [])]
        fleet = [task for task in tasks if 'passthrough.libvirt.pci_fleet' in task]
        assert all(task.get('run_once') is True for task in fleet), f'{example.source}: pci_fleet without run_once: true'
        checked.append(example.source)
    assert checked, 'no example runs pci_fleet'


def test_a_count_of_0_is_for_the_module_the_playbooks_take_1_or_more(tmp_path, inventory, define_domain):
    """What attachment.md and whitelist.md say of `a1:0`, run: the module removes every a1; attach.yml refuses 0;
    detach.yml with a count at least the number held removes every one."""
    name = define_domain().name()
    shown = "{{ r.detached | map(attribute='address') | join(' ') }} / {{ r.pci_devices | map(attribute='alias') | join(' ') }}"
    proc = _run(tmp_path, [_with_defaults({'hosts': 'h1', 'gather_facts': False, 'tasks': [
        {'passthrough.libvirt.pci_attachment': {'domain': name, 'request': 'vf-physnet1:2,a100:1', 'aliases': '{{ pci_aliases }}'}},
        {'passthrough.libvirt.pci_attachment': {'domain': name, 'request': 'vf-physnet1:0', 'aliases': '{{ pci_aliases }}'},
         'register': 'r'},
        {'ansible.builtin.debug': {'msg': f'module: {shown}'}}]})], [], inventory)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert 'module: 0000:3b:02.1 0000:3b:02.0 / a100' in proc.stdout, proc.stdout[-4000:]

    def playbook(name_: str, request: str) -> subprocess.CompletedProcess:
        plays = [{'import_playbook': f'passthrough.libvirt.{name_}'}]
        return _run(tmp_path, plays, ['-e', f'pci_domain={name}', '-e', f'pci_request={request}', '-e', 'pci_hosts=h1'], inventory)

    for name_ in ('attach', 'detach'):
        refused = playbook(name_, 'a100:0')
        assert refused.returncode != 0 and "pci_request: count '0' in 'a100:0' must be 1 or more" in refused.stdout, refused.stdout[-3000:]
    removed = playbook('detach', 'a100:5')
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert 'detached 0000:3c:00.0; now no PCI devices' in ' '.join(removed.stdout.split()), removed.stdout[-3000:]
