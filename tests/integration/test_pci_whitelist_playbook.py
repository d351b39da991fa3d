# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_whitelist's idempotency and check mode through a real ansible-playbook run and the real libvirtd.

The scenario and its assertions are tests/integration/playbooks/whitelist_idempotent.yml; this test
runs it on a fixture tree and checks the recap. The same check/run/again with real bindings and VFs
is the lab's (make lab).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ansible_collections.passthrough.libvirt.tests import sysfs_tree

PLAYBOOK = Path(__file__).parent / 'playbooks' / 'whitelist_idempotent.yml'
# The directory holding ansible_collections/passthrough/libvirt, as this test imported it.
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]


def test_check_run_again_absent_through_ansible_playbook(conn, tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0')
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), str(PLAYBOOK),
         '-e', f'fixture_sysfs={tmp_path / "sys"}', '-e', f'state_dir={tmp_path / "etc"}',
         '-e', f'ansible_python_interpreter={sys.executable}'],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r'localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0', proc.stdout)
    assert recap, proc.stdout[-2000:]
    # changed: check mode, the run, the first absent (the rest read or assert)
    assert int(recap[2]) == 3, proc.stdout[-4000:]
