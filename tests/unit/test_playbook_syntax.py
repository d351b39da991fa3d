# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every playbook of the project passes `ansible-playbook --syntax-check`, the lab's included.

The lab runs only under `make lab` (minutes, root); a YAML slip in its playbooks must not wait for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

ROOT = Path(__file__).resolve().parents[2]
# Playbooks, not task files: they name their hosts.
PLAYBOOKS = sorted(p for folder in ('playbooks', 'tests/lab/playbooks', 'tests/integration/playbooks')
                   for p in (ROOT / folder).glob('*.yml') if 'hosts:' in p.read_text(encoding='utf-8'))
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]


@pytest.mark.parametrize('playbook', PLAYBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_syntax(playbook, tmp_path):
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text('all:\n  children:\n    compute:\n      hosts:\n        lab1: {}\n        lab2: {}\n')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '--syntax-check', '-i', str(inventory),
                           str(playbook)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
