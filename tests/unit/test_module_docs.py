# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/modules/ is the collection's reference, written by antsibull-docs, and current; the docs pass its lint.

The pages (RST, antsibull-docs' simplified-rst format, which GitHub renders: one per module, role and
filter, and index.rst) are written by the command in REGENERATE, run from the checkout root with the
checkout reachable as ansible_collections/passthrough/libvirt under .build/src (`make src-tree`).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

ROOT = Path(__file__).resolve().parents[2]
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]
COLLECTION_DIR = SRC_TREE / 'ansible_collections' / 'passthrough' / 'libvirt'
BIN = Path(sys.executable).parent
ANTSIBULL_DOCS = shutil.which('antsibull-docs', path=str(BIN)) or shutil.which('antsibull-docs')
DOCS = ROOT / 'docs' / 'modules'
GENERATE = ['collection', '--use-current', '--squash-hierarchy', '--output-format', 'simplified-rst', '--fail-on-error',
            '--no-add-antsibull-docs-version', '--cleanup', 'everything']
REGENERATE = ('PATH=.venv/bin:$PATH ANSIBLE_COLLECTIONS_PATH=.build/src antsibull-docs ' + ' '.join(GENERATE)
              + ' --dest-dir docs/modules passthrough.libvirt')
PLUGINS = sorted([*(f'{p.stem}_module' for p in (ROOT / 'plugins' / 'modules').glob('*.py') if not p.stem.startswith('_')),
                  *(f'{p.stem}_filter' for p in (ROOT / 'plugins' / 'filter').glob('*.py') if not p.stem.startswith('_')),
                  *(f'{p.name}_role' for p in (ROOT / 'roles').iterdir() if (p / 'meta' / 'argument_specs.yml').is_file())])

pytestmark = pytest.mark.skipif(ANTSIBULL_DOCS is None, reason='antsibull-docs is not installed (tests/unit/requirements.txt)')


def antsibull_docs(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # antsibull-docs runs ansible-doc and ansible-galaxy: this interpreter's, over the source tree only.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), PATH=f'{BIN}{os.pathsep}{os.environ.get("PATH", "")}',
               ANSIBLE_NOCOLOR='1')
    return subprocess.run([ANTSIBULL_DOCS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope='module')
def generated(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp('module-docs')
    proc = antsibull_docs(*GENERATE, '--dest-dir', str(dest), 'passthrough.libvirt', cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dest


def test_the_reference_is_current(generated):
    names = sorted(path.name for path in generated.iterdir())
    assert sorted(path.name for path in DOCS.iterdir()) == names, f'docs/modules/ has other files than antsibull-docs writes: run {REGENERATE}'
    _match, mismatch, errors = filecmp.cmpfiles(generated, DOCS, names, shallow=False)
    assert not mismatch and not errors, f'docs/modules/{", ".join(mismatch + errors)} not current: run {REGENERATE}'


def test_every_plugin_and_role_has_a_page_in_the_index(generated):
    assert sorted(path.stem for path in generated.glob('*.rst') if path.stem != 'index') == PLUGINS
    index = (DOCS / 'index.rst').read_text(encoding='utf-8')
    for page in PLUGINS:
        assert f'<{page}.rst>`_' in index, page


def test_the_collection_docs_pass_antsibull_docs_lint():
    """antsibull-docs lint-collection-docs --plugin-docs: schema, markup and references of every plugin and role."""
    assert (COLLECTION_DIR / 'galaxy.yml').is_file(), f'{COLLECTION_DIR} is not the collection: run make src-tree'
    proc = antsibull_docs('lint-collection-docs', '--plugin-docs', '.', cwd=COLLECTION_DIR)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
