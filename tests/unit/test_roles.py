# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles stop bad variables before anything runs: the argument specs and the request check.

Each case runs the role through ansible-playbook on localhost. The bad-variable cases stop before any
module; the switch cases go on to pci_whitelist with a fixture tree and a state file under tmp_path,
whatever it then does not matter to them.
"""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]
ALIASES = [{'name': 'a1', 'vendor_id': '8086', 'product_id': '154c'}]


def run_role(tmp_path: Path, role: str, variables: dict) -> subprocess.CompletedProcess:
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False,
                                     'roles': [{'role': f'passthrough.libvirt.{role}'}]}]))
    extra = tmp_path / 'vars.json'
    extra.write_text(json.dumps(variables))
    # The callback's result format is fixed here: make exports yaml, a bare pytest run gets json.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_CALLBACK_RESULT_FORMAT='json')
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-c', 'local', str(playbook),
                           '-e', f'@{extra}', '-e', f'ansible_python_interpreter={sys.executable}'],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize('role, variables, message', [
    ('pci_attach', {'pci_request': 'a1:1', 'pci_aliases': ALIASES}, 'missing required arguments: pci_domain'),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1', 'pci_aliases': ALIASES},
     "pci_request: 'a1' has no count (expected alias:count)"),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'b2:1', 'pci_aliases': ALIASES},
     "pci_request: 'b2:1' names unknown alias 'b2' (known: a1)"),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1:0', 'pci_aliases': ALIASES},
     "pci_request: count '0' in 'a1:0' must be 1 or more"),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1:-1', 'pci_aliases': ALIASES},
     "pci_request: count '-1' in 'a1:-1' must be 1 or more"),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1:1', 'pci_aliases': ALIASES, 'pci_state': 'gone'},
     'value of pci_state must be one of: present, absent, got: gone'),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1:1', 'pci_aliases': ALIASES, 'pci_host_choice': 'best'},
     'value of pci_host_choice must be one of: inventory, auto, got: best'),
    ('pci_attach', {'pci_domain': 'web01', 'pci_request': 'a1:1', 'pci_aliases': ALIASES, 'pci_state': 'absent',
                    'pci_host_choice': 'auto'},
     "pci_host_choice: auto picks the host with free devices, which is for attaching; to detach, run on the domain's host"),
    ('pci_host', {'pci_sriov': [{'pf': '0000:3b:00.0'}]}, 'missing required arguments: numvfs found in pci_sriov'),
    ('pci_host', {'pci_device_spec': 'all'}, "pci_device_spec"),
    ('pci_inventory', {'pci_request': 'a1:2,a1:1', 'pci_aliases': ALIASES},
     "pci_request: alias 'a1' is requested twice"),
])
def test_bad_variables_stop_the_role_with_one_message(tmp_path, role, variables, message):
    proc = run_role(tmp_path, role, variables)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert message in proc.stdout, proc.stdout[-3000:]
    assert 'Traceback' not in proc.stdout + proc.stderr


@pytest.mark.parametrize('role', ['pci_host', 'pci_inventory', 'pci_attach'])
def test_each_role_readme_documents_its_variables(role):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'utils'))
    import role_readme   # pylint: disable=import-outside-toplevel,import-error
    readme = (Path(__file__).resolve().parents[2] / 'roles' / role / 'README.md').read_text(encoding='utf-8')
    assert readme == role_readme.render(role), f'roles/{role}/README.md is not current: run python tests/utils/role_readme.py'


@pytest.mark.parametrize('given, stops', [('false', False), ('true', True), ('no', False)])
def test_pci_host_switches_given_as_strings_mean_what_they_say(tmp_path, given, stops):
    # `-e pci_require_iommu=false` (and an AWX survey) gives the string "false": it must not count as true.
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    shutil.rmtree(tmp_path / 'sys' / 'kernel' / 'iommu_groups')
    proc = run_role(tmp_path, 'pci_host', {
        'pci_require_iommu': given, 'pci_load_vfio': given, 'pci_packages': [], 'pci_driver': None, 'pci_persist': False,
        'pci_sysfs_root': str(tmp_path / 'sys'), 'pci_config_path': str(tmp_path / 'etc' / 'state.json')})
    assert ('has no IOMMU groups' in proc.stdout) is stops, proc.stdout[-3000:]
    if not stops:
        assert 'TASK [passthrough.libvirt.pci_host : Load vfio-pci]' in proc.stdout
        load = proc.stdout.split('TASK [passthrough.libvirt.pci_host : Load vfio-pci]', 1)[1].split('TASK [', 1)[0]
        assert 'skipping: [localhost]' in load, load


def _inventory(tmp_path: Path, stored: list | None, given: list | None, request: str = '') -> subprocess.CompletedProcess:
    """pci_inventory on a fixture tree, libvirt's test driver (no domain holds a device) and a state file storing ``stored``."""
    if not (tmp_path / 'sys').exists():
        sysfs_tree.dual_socket_server(tmp_path / 'sys')
    (tmp_path / 'etc').mkdir(exist_ok=True)
    (tmp_path / 'etc' / 'state.json').write_text(json.dumps({'version': 1, 'device_spec': stored, 'original_drivers': {}, 'sriov': {}}))
    return run_role(tmp_path, 'pci_inventory', {
        'pci_device_spec': given, 'pci_aliases': ALIASES, 'pci_request': request, 'pci_uri': 'test:///default',
        'pci_sysfs_root': str(tmp_path / 'sys'), 'pci_config_path': str(tmp_path / 'etc' / 'state.json'),
        'pci_report_dir': str(tmp_path / 'report')})


def _task(stdout: str, name: str) -> str:
    return stdout.split(f'TASK [passthrough.libvirt.pci_inventory : {name}]', 1)[1].split('TASK [', 1)[0]


VFS_SPEC = [{'vendor_id': '8086', 'product_id': '154c'}]
WARNING = 'Warn when pci_device_spec differs from the whitelist stored on the host'


def test_pci_inventory_warns_when_the_given_whitelist_is_not_the_stored_one(tmp_path):
    differs = _inventory(tmp_path, VFS_SPEC, [{'vendor_id': '10de', 'product_id': '20b5'}])
    assert differs.returncode == 0, differs.stdout[-3000:]
    warning = _task(differs.stdout, WARNING)
    assert 'WARNING: localhost: pci_device_spec differs from the whitelist stored on the host' in warning, warning
    assert 'Stored: [{\\"vendor_id\\": \\"8086\\", \\"product_id\\": \\"154c\\"}]; given: [{\\"vendor_id\\": \\"10de\\"' in warning
    nothing_stored = _task(_inventory(tmp_path, None, VFS_SPEC).stdout, WARNING)
    assert ', where none is stored.' in nothing_stored, nothing_stored
    same = _inventory(tmp_path, VFS_SPEC, VFS_SPEC)
    assert same.returncode == 0 and 'skipping: [localhost]' in _task(same.stdout, WARNING), same.stdout[-3000:]


def test_pci_inventory_tables_name_the_inventory_host_and_the_summary_says_why_no_host_fits(tmp_path):
    proc = _inventory(tmp_path, VFS_SPEC, None, request='a1:9')
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'skipping: [localhost]' in _task(proc.stdout, WARNING)     # no pci_device_spec: the stored one is used
    table = _task(proc.stdout, 'Show the PCI devices')
    assert '"localhost (libvirt: ' in table and ' PCI devices, allocations read from libvirt' in table, table
    summary = _task(proc.stdout, 'Show the fleet summary')
    assert 'request a1:9 fits: no host' in summary and 'localhost cannot: a1: 9 requested, 4 free' in summary, summary
    report = json.loads((tmp_path / 'report' / 'fleet.json').read_text())
    assert report['rejected'] == {'localhost': 'a1: 9 requested, 4 free'}
    assert '<table id="rejected">' in (tmp_path / 'report' / 'fleet.html').read_text()
