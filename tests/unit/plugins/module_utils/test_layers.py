# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils import only downward: each file's imports, read from its source, name lower layers only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
UTILS = ROOT / 'plugins' / 'module_utils'
PACKAGE = 'ansible_collections.passthrough.libvirt.plugins.module_utils'

# The layers, lowest first (docs/development.md explains each). A file may import files of lower layers only.
LAYERS = {
    '_errors': 0,
    '_model': 1,
    '_devspec': 2, '_alias': 2,
    '_day2': 3,
    '_pools': 4,
    '_fleet': 5, '_pciids': 5, '_sysfs': 5, '_hostuse': 5, '_libvirt': 5, '_atomic': 5, '_iplink': 5, '_mdev': 5,
    '_host': 6, '_records': 6,
    '_binding': 7, '_attachment': 7,
    '_argspec': 8,
}


def imports_of(path: Path) -> set[str]:
    """The collection's module_utils a file imports (``from PACKAGE import _x``, ``from PACKAGE._x import ...``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + '.'):
                found.add(node.module[len(PACKAGE) + 1:].split('.')[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(PACKAGE) + 1:].split('.')[0] for alias in node.names if alias.name.startswith(PACKAGE + '.'))
    return found


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        for imported in imports_of(UTILS / f'{current}.py'):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_every_module_util_has_a_layer():
    files = {path.stem for path in UTILS.glob('_*.py')}
    assert files == set(LAYERS), f'files without a layer: {sorted(files - set(LAYERS))}; layers without a file: {sorted(set(LAYERS) - files)}'


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_imports_go_downward_only(name):
    upward = sorted(imported for imported in imports_of(UTILS / f'{name}.py') if LAYERS[imported] >= LAYERS[name])
    assert not upward, f'{name} (layer {LAYERS[name]}) imports {upward}, not below it'


def test_only_the_libvirt_adapter_imports_libvirt():
    for path in UTILS.glob('_*.py'):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert ('libvirt' in names) is (path.stem == '_libvirt'), path.name


def test_the_controller_side_never_reaches_libvirt():
    action = ROOT / 'plugins' / 'action' / 'pci_fleet.py'
    reached = set()
    for name in imports_of(action):
        reached |= {name} | closure(name)
    assert '_libvirt' not in reached and '_host' not in reached, sorted(reached)
    assert '_libvirt' not in closure('_fleet')


def test_a_wrong_import_is_caught(tmp_path):
    """The reader sees both import forms, so the test above can fail."""
    sample = tmp_path / 'sample.py'
    sample.write_text(f'from {PACKAGE} import _host\nfrom {PACKAGE}._attachment import Attacher\nimport {PACKAGE}._libvirt\n')
    assert imports_of(sample) == {'_host', '_attachment', '_libvirt'}


@pytest.mark.parametrize('module', sorted(path.stem for path in (ROOT / 'plugins' / 'modules').glob('*.py') if path.stem != 'pci_fleet'))
def test_each_module_main_catches_the_error_family_only(module):
    """One base, caught in one place: a main that lists classes would one day miss one."""
    tree = ast.parse((ROOT / 'plugins' / 'modules' / f'{module}.py').read_text(encoding='utf-8'))
    [main] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == 'main']
    handlers = [node for node in ast.walk(main) if isinstance(node, ast.ExceptHandler)]
    assert [ast.unparse(handler.type) for handler in handlers] == ['PassthroughError']


def test_every_error_class_is_refused_or_change_failed():
    """Every exception class defined in module_utils descends from one of the two branches."""
    import importlib  # pylint: disable=import-outside-toplevel
    errors = importlib.import_module(f'{PACKAGE}._errors')
    found = 0
    for path in UTILS.glob('_*.py'):
        module = importlib.import_module(f'{PACKAGE}.{path.stem}')
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                if value in (errors.PassthroughError, errors.Refused, errors.ChangeFailed) or value.__name__.startswith('_'):
                    continue
                found += 1
                assert issubclass(value, (errors.Refused, errors.ChangeFailed)), value
                assert not (issubclass(value, errors.Refused) and issubclass(value, errors.ChangeFailed)), value
    assert found >= 8


# Imported inside the functions that need them, so that a run which does not need them does not compile them
# (AnsiballZ ships every module_util in a zip, and each run compiles what it imports: docs/performance.md).
LAZY = ('_alias', '_hostuse', '_atomic')

_RUN = '''
import json, sys
from ansible_collections.passthrough.libvirt.plugins.modules import pci_device_info
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
root, spec = sys.argv[1], json.loads(sys.argv[2])
sysfs_tree.synthetic(root + '/sys', 40)
params = dict.fromkeys(('address', 'vendor_id', 'product_id', 'dev_type', 'status', 'domain', 'fields'))
params.update(sysfs_root=root + '/sys', uri='qemu+unix:///system?socket=/nonexistent', device_spec=spec,
              config_path=root + '/state.json', require_libvirt=False, pcie_link=False)
result, _warnings = pci_device_info.run(params)
assert len(result['pci_devices']) == 40, len(result['pci_devices'])
print(json.dumps(sorted(name.rpartition('.')[2] for name in sys.modules if name.startswith('ansible_collections.passthrough'))))
'''


def _imported_by_a_run(tmp_path, device_spec):
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    done = subprocess.run([sys.executable, '-c', _RUN, str(tmp_path), json.dumps(device_spec)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_a_plain_pci_device_info_run_compiles_no_lazy_module_util(tmp_path):
    """A fresh interpreter, as under AnsiballZ: no whitelist and no marks, so none of the lazy imports happen."""
    imported = _imported_by_a_run(tmp_path, None)
    assert '_host' in imported and '_day2' in imported
    assert not imported & set(LAZY), sorted(imported & set(LAZY))


def test_a_run_with_a_whitelist_reads_the_hosts_use(tmp_path):
    """The same reading sees a lazy import when the run needs it: the test above can fail."""
    assert '_hostuse' in _imported_by_a_run(tmp_path, [{'vendor_id': '8086'}])
