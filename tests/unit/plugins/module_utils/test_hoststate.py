# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host state file and the host lock, on real files and real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import FileWriteFailed
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostLock, HostSnapshot, HostStateError, load_state as load, save_state as save
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import LibvirtUnavailable
from ansible_collections.passthrough.libvirt.tests import sysfs_tree


def test_missing_file_is_an_empty_state(tmp_path):
    assert load(str(tmp_path / 'none.json')) == {'version': 1, 'device_spec': None, 'original_drivers': {}, 'sriov': {},
                                                 'identities': {}, 'out_of_service': [], 'drained': {}}


def test_save_creates_the_directory_and_a_private_file(tmp_path):
    path = tmp_path / 'etc' / 'passthrough-libvirt' / 'state.json'
    save(str(path), {'device_spec': [{'vendor_id': '10de'}], 'original_drivers': {'0000:3c:00.0': 'nvidia'}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load(str(path))['original_drivers'] == {'0000:3c:00.0': 'nvidia'}
    assert json.loads(path.read_text())['version'] == 1
    assert [p.name for p in path.parent.iterdir()] == ['state.json']      # no temporary file left


def test_a_failed_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / 'state.json'
    save(str(path), {'device_spec': [{'vendor_id': '8086'}]})
    before = path.read_bytes()
    with pytest.raises(FileWriteFailed, match='cannot be written'):
        save(str(path), {'device_spec': [{'vendor_id': object()}]})       # not serialisable half-way
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['state.json']


@pytest.mark.parametrize('content, message', [
    ('{"version": 99}', 'newer than this collection understands'),
    ('[1, 2]', 'is not a passthrough.libvirt state file'),
    ('{broken', 'cannot be read as a state file'),
])
def test_foreign_or_broken_files_are_named(tmp_path, content, message):
    (tmp_path / 'state.json').write_text(content)
    with pytest.raises(HostStateError, match=message):
        load(str(tmp_path / 'state.json'))


HOLD = """
import sys, time
from ansible_collections.passthrough.libvirt.plugins.module_utils._host import HostLock
with HostLock(sys.argv[1]):
    print('held', flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_the_lock_serialises_processes(tmp_path):
    config = str(tmp_path / 'state.json')
    holder = subprocess.Popen([sys.executable, '-c', HOLD, config, '1.5'], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(HostStateError, match=r'another run has held the host lock .*state.json.lock for more than 0.3 s'):
        with HostLock(config, timeout=0.3):
            pass
    started = time.monotonic()
    with HostLock(config, timeout=10):
        waited = time.monotonic() - started
    holder.wait(timeout=10)
    assert 0.3 < waited < 5          # it waited for the holder, then got the lock


class _HeldConnection:
    """A connection a run already holds (pci_attachment's own), standing in for libvirt: what the snapshot asks of it."""

    def __init__(self):
        self.closed = False
        self.asked = 0

    def hostname(self):
        return 'held-host'

    def domains(self):
        self.asked += 1
        return []

    def close(self):
        self.closed = True


def test_a_snapshot_reads_the_domains_through_the_runs_connection(tmp_path):
    """No second connection: the uri is dead, so a snapshot that opened its own would fail; the run's stays open."""
    sysfs_tree.synthetic(str(tmp_path / 'sys'), 20)
    options = dict(sysfs_root=str(tmp_path / 'sys'), uri='qemu+unix:///system?socket=/nonexistent', device_spec=[],
                   config_path=str(tmp_path / 'state.json'))
    held = _HeldConnection()
    snapshot = HostSnapshot.read(**options, conn=held)
    assert snapshot.domains == [] and snapshot.allocations_known and snapshot.hostname == 'held-host'
    assert held.asked == 1 and not held.closed
    with pytest.raises(LibvirtUnavailable):      # without it, the snapshot opens its own: at the dead uri
        HostSnapshot.read(**options).domains    # pylint: disable=expression-not-assigned
