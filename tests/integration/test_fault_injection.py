# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A failure injected at every libvirt call of an attach, a detach and a mixed run: one of the
collection's errors, never a traceback, and the domain exactly as it was.

Test double: the real DomainHandle on the real libvirtd, except that call number N raises the
error a failing libvirt call raises (a read: LibvirtUnavailable; a change: LibvirtCallFailed).
A real daemon cannot be made to fail one chosen call on demand. N runs over every call a clean
run makes, so each read, each attach, each detach and each metadata write fails once.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, PassthroughError
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import (
    METADATA_URI,
    DomainHandle,
    LibvirtCallFailed,
    LibvirtUnavailable,
    parse_hostdevs,
    parse_metadata,
)
from ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment import run
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

libvirt = pytest.importorskip('libvirt')

ALIASES = [{'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
           {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]
SPEC = [{'vendor_id': '8086', 'product_id': '154c'}, {'vendor_id': '10de', 'product_id': '20b5'}]
READS = ('active', 'persistent', 'xml', 'metadata', 'watch_removals')
WRITES = ('attach', 'detach', 'set_metadata')


class FailingCall(DomainHandle):
    """Counts every call of the handle; call number ``fail_at`` raises."""

    fail_at: int | None = None
    calls: list[str] = []

    def _counted(self, name: str, *args, **kwargs):
        calls = type(self).calls
        calls.append(name)
        if len(calls) == type(self).fail_at:
            error = LibvirtCallFailed if name in WRITES else LibvirtUnavailable
            raise error(f'injected failure of call {len(calls)} ({name})')
        return getattr(super(), name)(*args, **kwargs)

    def active(self):
        return self._counted('active')

    def persistent(self):
        return self._counted('persistent')

    def xml(self, inactive=False):
        return self._counted('xml', inactive)

    def metadata(self, live):
        return self._counted('metadata', live)

    def attach(self, xml, live, config):
        return self._counted('attach', xml, live, config)

    def detach(self, alias, live, config):
        return self._counted('detach', alias, live, config)

    def set_metadata(self, records, live, config):
        return self._counted('set_metadata', records, live, config)


def params(tmp_path, name: str, request: str) -> dict:
    return dict(domain=name, state='present', request=request, aliases=ALIASES, addresses=None, attachment_ids=None,
                live=None, persistent=None, timeout=5.0, force=False, uri='qemu:///system', device_spec=SPEC,
                sysfs_root=str(tmp_path / 'sys'), config_path=str(tmp_path / 'etc' / 'state.json'))


def domain_now(dom) -> tuple[list, list]:
    """Our hostdevs (id, address) in the persistent definition, and the metadata records, in order."""
    hostdevs = [(h.attachment_id, str(h.address)) for h in parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))]
    try:
        records = parse_metadata(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    except libvirt.libvirtError:
        records = []
    return sorted(hostdevs), records


@pytest.mark.parametrize('start, request_, changes', [
    pytest.param('vf:1', 'vf:3', ['set_metadata', 'attach', 'attach'], id='attach two'),
    pytest.param('vf:3', 'vf:1', ['detach', 'detach', 'set_metadata'], id='detach two'),
    pytest.param('vf:3', 'vf:2,gpu:1', ['set_metadata', 'attach', 'detach', 'set_metadata'], id='attach one, detach one'),
])
def test_a_failure_at_every_libvirt_call_leaves_the_domain_as_it_was(tmp_path, define_domain, start, request_, changes):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')

    def prepared():
        dom = define_domain()
        run(params(tmp_path, dom.name(), start), False)
        return dom

    # A clean run: how many calls, which ones, and the domain after it.
    dom = prepared()
    FailingCall.calls, FailingCall.fail_at = [], None
    run(params(tmp_path, dom.name(), request_), False, open_domain=FailingCall)
    clean = list(FailingCall.calls)
    after = domain_now(dom)
    assert [name for name in clean if name in WRITES] == changes, clean     # write-ahead: the records before the first attach

    for number, name in enumerate(clean, start=1):
        dom.undefine()       # its devices are free again for the next domain
        dom = prepared()
        before = domain_now(dom)
        FailingCall.calls, FailingCall.fail_at = [], number
        with pytest.raises(PassthroughError) as failed:
            run(params(tmp_path, dom.name(), request_), False, open_domain=FailingCall)
        message = str(failed.value)
        assert f'injected failure of call {number} ({name})' in message
        if message.startswith('the run did what it planned'):
            # the change was complete; only reading the domain back for the result failed
            addresses = sorted(address for _id, address in domain_now(dom)[0])
            assert isinstance(failed.value, ChangeFailed) and addresses == sorted(a for _id, a in after[0]), (number, name, message)
        else:
            assert domain_now(dom) == before, (number, name, message)
            assert 'rollback FAILED' not in message, message
