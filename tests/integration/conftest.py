# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real libvirtd (started when none answers) and real `pcitest-` domains, removed afterwards."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests.integration.domains import PREFIX, URI, domain_xml

libvirt = pytest.importorskip('libvirt')

START_SCRIPT = Path(__file__).resolve().parents[1] / 'utils' / 'start-libvirtd.sh'


def _remove(dom) -> None:
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass
    try:
        dom.undefine()
    except libvirt.libvirtError:
        pass


def _owner_alive(name: str) -> bool:
    """Domains are named pcitest-<pid>-...: another test session still running owns those of a live pid."""
    owner = name[len(PREFIX):].split('-', 1)[0]
    if not owner.isdigit() or int(owner) == os.getpid():
        return False
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_libvirtd() -> None:
    subprocess.run(['bash', str(START_SCRIPT)], check=True, capture_output=True)


_CONNECTION: dict[str, object] = {}


@pytest.fixture(scope='session')
def libvirtd():
    if os.geteuid() != 0:
        pytest.skip('integration tests need root to reach qemu:///system')
    start_libvirtd()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    connection = libvirt.open(URI)
    for dom in connection.listAllDomains(0):
        if dom.name().startswith(PREFIX) and not _owner_alive(dom.name()):
            _remove(dom)   # left over from an interrupted run
    _CONNECTION['conn'] = connection
    yield
    try:
        _CONNECTION.pop('conn').close()
    except libvirt.libvirtError:
        pass


@pytest.fixture
def conn(libvirtd):   # pylint: disable=redefined-outer-name,unused-argument
    """A connection to the real daemon; a new one when a test restarted libvirtd."""
    connection = _CONNECTION['conn']
    if not connection.isAlive():
        start_libvirtd()
        connection = _CONNECTION['conn'] = libvirt.open(URI)
    return connection


@pytest.fixture
def define_domain(conn):
    """Define (and optionally start) `pcitest-` domains; every one is destroyed and undefined afterwards."""
    created = []

    def define(hostdevs: str = '', start: bool = False):
        name = f'{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}'
        dom = conn.defineXML(domain_xml(name, hostdevs))
        created.append(dom)
        if start:
            try:
                dom.create()
            except libvirt.libvirtError:
                # No usable KVM here: the same domain under TCG.
                dom.undefine()
                dom = conn.defineXML(domain_xml(name, hostdevs, dom_type='qemu'))
                created.append(dom)
                dom.create()
        return dom

    yield define
    # A test that restarted libvirtd leaves this connection dead, and isAlive may not know it yet: a lookup that
    # fails for any reason but a missing domain is tried again on a fresh connection, so that no domain (and none
    # of the devices in its definition) outlives its test and is held against the tests after it.
    fresh = None
    for dom in created:
        for live in (conn, None):
            if live is None:
                live = fresh = fresh or libvirt.open(URI)
            try:
                _remove(live.lookupByUUIDString(dom.UUIDString()))
                break
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    break
    if fresh is not None:
        fresh.close()
