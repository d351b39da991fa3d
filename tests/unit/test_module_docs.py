# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/modules/ is the modules' documentation as pages: one per module and an index, all current.

The pages are written by tests/utils/module_docs.py; these tests fail while one is missing, stale or
left over from a module that is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

ROOT = Path(__file__).resolve().parents[2]
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]
MODULES = sorted(path.stem for path in (ROOT / 'plugins' / 'modules').glob('*.py') if not path.stem.startswith('_'))
RUN = 'run python tests/utils/module_docs.py'


def module_docs():
    sys.path.insert(0, str(ROOT / 'tests' / 'utils'))
    import module_docs as generator  # pylint: disable=import-outside-toplevel,import-error
    return generator


@pytest.mark.parametrize('name', [*MODULES, 'index'])
def test_each_page_is_current(name):
    page = ROOT / 'docs' / 'modules' / f'{name}.md'
    assert page.is_file(), f'docs/modules/{name}.md is missing: {RUN}'
    text = page.read_text(encoding='utf-8')
    assert text == module_docs().render(name), f'docs/modules/{name}.md is not current: {RUN}'
    assert not [line for line in text.split('\n') if line != line.rstrip()], f'docs/modules/{name}.md has trailing whitespace'


def test_every_module_has_a_page_and_no_page_is_stale():
    pages = sorted(path.stem for path in (ROOT / 'docs' / 'modules').glob('*.md'))
    assert MODULES == module_docs().modules()
    assert pages == sorted([*MODULES, 'index']), f'docs/modules/ does not match plugins/modules/: {RUN} and remove stale pages'


def test_the_index_links_every_module_page():
    index = module_docs().render('index')
    for name in MODULES:
        assert f'[passthrough.libvirt.{name}]({name}.md)' in index


@pytest.mark.parametrize('text, markdown', [
    ('C(/sys) and C(<hostdev>)', '`/sys` and `<hostdev>`'),
    ('O(state=absent) or O(timeout)', '`state=absent` or `timeout`'),
    ('V(null), RV(pci_devices[].tags), I(only), B(never)', '`null`, `pci_devices[].tags`, *only*, **never**'),
    ('L(Nova PCI passthrough,https://docs.openstack.org/nova/latest/admin/pci-passthrough.html)',
     '[Nova PCI passthrough](https://docs.openstack.org/nova/latest/admin/pci-passthrough.html)'),
    ('see U(https://libvirt.org/)', 'see https://libvirt.org/'),
    ('M(passthrough.libvirt.pci_whitelist) and M(ansible.builtin.debug)',
     '[passthrough.libvirt.pci_whitelist](pci_whitelist.md) and `ansible.builtin.debug`'),
    ('O(x=a\\)b) keeps the escaped parenthesis', '`x=a)b` keeps the escaped parenthesis'),
    ('C(a`b) needs a longer fence', '``a`b`` needs a longer fence'),
    ('plain <b> and * stay text', 'plain &lt;b> and \\* stay text'),
    ('INFO(x) is not markup', 'INFO(x) is not markup'),
])
def test_markup_becomes_markdown(text, markdown):
    assert module_docs().markup(text) == markdown


def test_options_table_shows_exact_values_and_escapes_pipes():
    table = module_docs().options_table({
        'mode': {'description': ['C(a|b) or C(c).', 'Second paragraph.'], 'type': 'str', 'choices': ['a|b', 'c'], 'default': 'c'},
        'count': {'description': 'How many.', 'type': 'int', 'default': 30},
        'hosts': {'description': 'Hosts.', 'type': 'list', 'elements': 'dict', 'suboptions': {
            'name': {'description': 'A name.', 'type': 'str', 'required': True}}},
    })
    assert table == [
        '| option | type | required | default | choices | description |',
        '|---|---|---|---|---|---|',
        '| `count` | int |  | `30` |  | How many. |',
        '| `hosts` | list of dict |  |  |  | Hosts. |',
        '| `hosts[].name` | str | yes |  |  | A name. |',
        '| `mode` | str |  | `"c"` | `"a\\|b"`, `"c"` | `a\\|b` or `c`.<br>Second paragraph. |',
    ]


def test_fragments_are_merged_as_ansible_doc_merges_them():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-doc'), '--json', '-t', 'module',
                           *(f'passthrough.libvirt.{name}' for name in MODULES)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = json.loads(proc.stdout)
    generator = module_docs()
    for name in MODULES:
        doc, examples, returns = generator.read_docs(name)
        expected = shown[f'passthrough.libvirt.{name}']
        for key in ('short_description', 'description', 'requirements', 'notes', 'options', 'attributes', 'seealso'):
            assert doc.get(key) == expected['doc'].get(key), f'{name}: {key} differs from ansible-doc'
        assert examples == expected['examples'], name
        assert returns == expected['return'], name
