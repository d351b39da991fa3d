# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_attachment killed, or its libvirtd stopped, in the middle of a run: the next run converges.

Real module processes against the real libvirtd (config mode on defined `pcitest-` domains, the
dual-socket fixture tree's devices). A watcher polls the domain's persistent definition and
kills the module (SIGKILL: what an OOM, a lost SSH session or a cancelled AWX job does) or
libvirtd itself the moment a device appears or leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import METADATA_URI, parse_hostdevs, parse_metadata
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process
from ansible_collections.passthrough.libvirt.tests.integration.conftest import start_libvirtd
from ansible_collections.passthrough.libvirt.tests.integration.domains import URI

libvirt = pytest.importorskip('libvirt')

ALIASES = [{'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
           {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]
SPEC = [{'vendor_id': '8086', 'product_id': '154c'}, {'vendor_id': '10de', 'product_id': '20b5'}]


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    return {'sysfs_root': str(tmp_path / 'sys'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': SPEC,
            'aliases': ALIASES}


def ours(dom) -> list[str]:
    """The attachment ids of this collection's hostdevs in the persistent definition."""
    return [h.attachment_id for h in parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if h.attachment_id]


def records(dom) -> list[dict]:
    try:
        return parse_metadata(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    except libvirt.libvirtError:
        return []


def spawn(args: dict, tmp_path) -> subprocess.Popen:
    args_file = tmp_path / f'args-{time.monotonic_ns()}.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    return subprocess.Popen([sys.executable, '-m', 'ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment',
                             str(args_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def watch(proc: subprocess.Popen, dom, until, then) -> bool:
    """Poll the domain until ``until(ids)`` holds, then call ``then()``; False when the run ended first."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if until(ours(dom)):
            then()
            return True
    return False


def converged(dom, alias_count: int) -> None:
    """Exactly the count, and every record names a device that is there (and the reverse)."""
    ids = ours(dom)
    assert len(ids) == alias_count, ids
    assert sorted(r['id'] for r in records(dom)) == sorted(ids)
    assert all(r['alias'] == 'vf' for r in records(dom))


# Each (count, kill after the Nth device) twice: 12 runs, each killed while attaching.
CASES = [(count, nth) for count in (2, 3, 4) for nth in (1, 2)] * 2


def test_a_killed_attach_converges_and_absent_leaves_none(tmp_path, host, define_domain):
    dom = define_domain()
    killed = 0
    for count, nth in CASES:
        request = dict(host, domain=dom.name(), request=f'vf:{count}')
        proc = spawn(request, tmp_path)
        landed = watch(proc, dom, lambda ids, n=nth: len(ids) >= n, proc.kill)
        proc.communicate()
        killed += landed and proc.returncode == -signal.SIGKILL
        assert len(ours(dom)) >= min(nth, count) if landed else True
        again = run_module_process('pci_attachment', request, tmp_path)
        assert again.rc == 0, again.msg
        converged(dom, count)
        assert run_module_process('pci_attachment', request, tmp_path).result['changed'] is False
        gone = run_module_process('pci_attachment', dict(host, domain=dom.name(), state='absent', request='vf:9'), tmp_path)
        assert gone.rc == 0, gone.msg
        assert ours(dom) == [] and records(dom) == []
    assert killed >= 10, f'only {killed} of {len(CASES)} runs were killed mid-attach'


def test_a_killed_detach_converges(tmp_path, host, define_domain):
    dom = define_domain()
    killed = 0
    for count in (2, 3, 4, 3):
        assert run_module_process('pci_attachment', dict(host, domain=dom.name(), request=f'vf:{count}'), tmp_path).rc == 0
        before = len(ours(dom))
        absent = dict(host, domain=dom.name(), state='absent', request='vf:9')
        proc = spawn(absent, tmp_path)
        landed = watch(proc, dom, lambda ids, b=before: len(ids) < b, proc.kill)
        proc.communicate()
        killed += landed and proc.returncode == -signal.SIGKILL
        again = run_module_process('pci_attachment', absent, tmp_path)
        assert again.rc == 0, again.msg
        assert ours(dom) == [] and records(dom) == []
    assert killed >= 3, f'only {killed} of 4 runs were killed mid-detach'


def kill_libvirtd() -> None:
    subprocess.run(['pkill', '-KILL', '-x', 'libvirtd'], check=False)
    for _attempt in range(50):
        if subprocess.run(['pgrep', '-x', 'libvirtd'], capture_output=True, check=False).returncode != 0:
            return
        time.sleep(0.1)


@pytest.mark.parametrize('restart_at_once', [False, True], ids=['stopped', 'restarted'])
def test_libvirtd_gone_mid_run_is_one_clear_message_and_the_next_run_converges(tmp_path, host, define_domain, restart_at_once):
    """libvirtd is killed (as a crash or a restart would) while the run attaches.

    The module is frozen (SIGSTOP) the moment its intent is in the domain's metadata, libvirtd is
    killed (and, for 'restarted', started again), then the module goes on: its next call meets the
    lost connection, at whatever point of the run it was.
    """
    if os.path.exists('/run/systemd/system'):
        pytest.skip('libvirtd is managed by systemd here; killing it would race its restart')
    name = define_domain().name()
    request = dict(host, domain=name, request='vf:4')
    for attempt in range(3):
        watched = libvirt.open(URI)    # a connection of its own each time: the last one died with libvirtd
        try:
            dom = watched.lookupByName(name)
            proc = spawn(request, tmp_path)

            def crash(proc=proc) -> None:
                proc.send_signal(signal.SIGSTOP)
                kill_libvirtd()
                if restart_at_once:
                    start_libvirtd()
                proc.send_signal(signal.SIGCONT)

            try:
                assert watch(proc, dom, lambda _ids, dom=dom: records(dom), crash), \
                    ('the run ended before it recorded its intent', proc.communicate())
                out, err = proc.communicate(timeout=120)
            finally:
                start_libvirtd()
        finally:
            try:
                watched.close()
            except libvirt.libvirtError:
                pass
        if proc.returncode != 0 or attempt == 2:
            break
        # The stop came after the run's last libvirt call (a loaded machine can leave this poll loop unscheduled
        # for the few milliseconds four config-mode attaches take): the run succeeded. Undo it, and try again.
        gone = run_module_process('pci_attachment', dict(host, domain=name, state='absent', request='vf:9'), tmp_path)
        assert gone.rc == 0, gone.msg
    assert proc.returncode == 1 and 'Traceback' not in err, (out, err)
    msg = json.loads(out)['msg']
    # What was done and what was not: the call that failed, the rollback that could not happen, and the way out.
    assert ('(alias vf): attach failed: ' in msg and 'rollback FAILED, left: ' in msg
            and 'the next run accounts for it' in msg) or 'the run did what it planned' in msg, msg
    fresh = libvirt.open(URI)
    try:
        dom = fresh.lookupByName(name)
        again = run_module_process('pci_attachment', request, tmp_path)
        assert again.rc == 0, again.msg
        converged(dom, 4)
        gone = run_module_process('pci_attachment', dict(host, domain=name, state='absent', request='vf:9'), tmp_path)
        assert gone.rc == 0 and ours(dom) == [] and records(dom) == []
    finally:
        fresh.close()
