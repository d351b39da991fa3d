# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_attachment against the real libvirtd, in config mode on defined `pcitest-` domains.

The devices come from the dual-socket fixture tree: libvirt accepts their addresses in a
persistent configuration (it checks the host device only when the domain starts), so nothing on
this machine is touched.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process

libvirt = pytest.importorskip('libvirt')

VFS = ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']
ALIASES = [{'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'},
           {'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]
SPEC = [{'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}, {'vendor_id': '10de', 'product_id': '20b5'}]


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path / 'sys')
    return {'sysfs_root': str(tmp_path / 'sys'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': SPEC}


def attach(tmp_path, host, domain, **args):
    return run_module_process('pci_attachment', dict(host, domain=domain, **args), tmp_path)


def config_hostdevs(dom):
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import parse_hostdevs
    return sorted(str(h.address) for h in parse_hostdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))


def test_attach_by_alias_is_declarative(tmp_path, host, define_domain):
    dom = define_domain()
    first = attach(tmp_path, host, dom.name(), request='vf:2', aliases=ALIASES)
    assert first.rc == 0, first.msg
    assert first.result['changed'] is True
    assert [a['address'] for a in first.result['attached']] == VFS[:2]
    assert config_hostdevs(dom) == VFS[:2]
    devices = first.result['pci_devices']
    assert [(d['address'], d['alias'], d['vendor_id'], d['product_id'], d['serverId']) for d in devices] == [
        (VFS[0], 'vf', '8086', '154c', dom.UUIDString()), (VFS[1], 'vf', '8086', '154c', dom.UUIDString())]
    assert all(d['attachment_id'] and d['dev_id'].startswith('pci_0000_3b_02_') for d in devices)
    assert first.result['domain'] == {'name': dom.name(), 'uuid': dom.UUIDString()}
    by_uuid = attach(tmp_path, host, dom.UUIDString().upper(), state='query')
    assert by_uuid.result['domain']['name'] == dom.name() and by_uuid.result['pci_devices'] == devices

    again = attach(tmp_path, host, dom.name(), request='vf:2', aliases=ALIASES)
    assert again.rc == 0 and again.result['changed'] is False and again.result['attached'] == []
    assert again.result['pci_devices'] == devices                     # metadata round-trips: ids and aliases

    grown = attach(tmp_path, host, dom.name(), request='vf:3,gpu:1', aliases=ALIASES)
    assert [(a['address'], a['alias']) for a in grown.result['attached']] == [(VFS[2], 'vf'), ('0000:3c:00.0', 'gpu')]
    assert config_hostdevs(dom) == VFS[:3] + ['0000:3c:00.0']

    shrunk = attach(tmp_path, host, dom.name(), request='vf:1', aliases=ALIASES)
    # most recently attached first: 02.2, then 02.1; the GPU (alias not named) stays
    assert [d['address'] for d in shrunk.result['detached']] == [VFS[2], VFS[1]]
    assert config_hostdevs(dom) == [VFS[0], '0000:3c:00.0']


def test_detach_by_attachment_id_address_and_alias(tmp_path, host, define_domain):
    dom = define_domain()
    run = attach(tmp_path, host, dom.name(), request='vf:3,gpu:1', aliases=ALIASES)
    ids = {d['address']: d['attachment_id'] for d in run.result['pci_devices']}
    by_id = attach(tmp_path, host, dom.name(), state='absent', attachment_ids=[ids[VFS[1]]])
    assert [(d['address'], d['confirmed_by']) for d in by_id.result['detached']] == [(VFS[1], 'persistent configuration')]
    by_address = attach(tmp_path, host, dom.name(), state='absent', addresses=['0000:3c:00.0'])
    assert [d['address'] for d in by_address.result['detached']] == ['0000:3c:00.0']
    by_alias = attach(tmp_path, host, dom.name(), state='absent', request='vf:5', aliases=ALIASES)
    assert sorted(d['address'] for d in by_alias.result['detached']) == [VFS[0], VFS[2]]
    assert config_hostdevs(dom) == []
    assert attach(tmp_path, host, dom.name(), state='absent', request='vf:5', aliases=ALIASES).result['changed'] is False
    missing = attach(tmp_path, host, dom.name(), state='absent', attachment_ids=[ids[VFS[1]]])
    assert missing.rc == 1 and missing.msg == f"attachment_ids[0]: {ids[VFS[1]]} is not attached to domain '{dom.name()}'"


def test_check_mode_changes_nothing(tmp_path, host, define_domain):
    dom = define_domain()
    args = dict(host, domain=dom.name(), request='vf:2', aliases=ALIASES, _ansible_check_mode=True)
    checked = run_module_process('pci_attachment', args, tmp_path)
    assert checked.rc == 0, checked.msg
    assert checked.result['changed'] is True
    assert [a['address'] for a in checked.result['attached']] == VFS[:2]
    assert config_hostdevs(dom) == []
    assert not (tmp_path / 'etc').exists()        # not even the host lock's file and directory


def test_a_device_held_by_one_domain_is_never_given_to_another(tmp_path, host, define_domain):
    a, b = define_domain(), define_domain()
    attach(tmp_path, host, a.name(), request='gpu:1', aliases=ALIASES)
    second = attach(tmp_path, host, b.name(), request='gpu:1', aliases=ALIASES)
    assert second.result['attached'][0]['address'] == '0000:86:00.0'
    third = attach(tmp_path, host, b.name(), request='gpu:2', aliases=ALIASES)
    assert third.rc == 1 and third.msg == ('request: not enough free devices on this host: gpu: 2 requested, the domain holds 1, 0 more free: '
                                           f'0000:3c:00.0 held by domain {a.name()}')
    taken = attach(tmp_path, host, b.name(), addresses=['0000:3c:00.0'])
    assert taken.rc == 1 and taken.msg == f"addresses[0]: 0000:3c:00.0 cannot be attached: it is allocated to domain {a.name()}"
    assert config_hostdevs(a) == ['0000:3c:00.0'] and config_hostdevs(b) == ['0000:86:00.0']


@pytest.mark.parametrize('args, message', [
    ({'domain': 'pcitest-nonexistent', 'request': 'vf:1', 'aliases': ALIASES},
     "domain: domain 'pcitest-nonexistent' does not exist (no domain has that name or UUID)"),
    ({'request': 'tpu:1', 'aliases': ALIASES}, "request: 'tpu:1' names unknown alias 'tpu' (known: gpu, vf)"),
    ({'request': 'vf:x', 'aliases': ALIASES}, "request: count 'x' in 'vf:x' is not a whole number"),
    ({'request': 'vf:1'}, "missing parameter(s) required by 'request': aliases"),
    ({'request': 'vf:9', 'aliases': ALIASES}, 'request: not enough free devices on this host: vf: 9 requested, 4 free'),
    ({'addresses': ['0000:19:00.0']}, 'addresses[0]: 0000:19:00.0 cannot be attached: it is not in the whitelist'),
    ({'addresses': ['../etc']}, "addresses[0]: invalid PCI address '../etc'"),
    ({'addresses': ['0000:3b:02.0'], 'live': True}, "live: true, but domain '{name}' is shut off"),
    ({'addresses': ['0000:3b:02.0'], 'timeout': 0}, 'timeout: 0.0 must be a number of seconds above 0 and at most 3600'),
    ({'addresses': ['0000:3b:02.0'], 'timeout': -5}, 'timeout: -5.0 must be a number of seconds above 0 and at most 3600'),
    ({'state': 'absent', 'attachment_ids': ['nope']}, "attachment_ids[0]: 'nope' is not an attachment id (a UUID)"),
    ({'request': 'vf:1', 'aliases': ALIASES, 'addresses': ['0000:3b:02.0']},
     'parameters are mutually exclusive: request|addresses|attachment_ids'),
    ({'state': 'absent'}, 'state is absent but any of the following are missing: request, addresses, attachment_ids'),
])
def test_bad_input_is_one_clear_message_and_changes_nothing(tmp_path, host, define_domain, args, message):
    dom = define_domain()
    run = attach(tmp_path, host, args.pop('domain', dom.name()), **args)
    assert run.rc == 1 and run.msg.startswith(message.format(name=dom.name())), run.msg
    assert 'Traceback' not in run.stderr and config_hostdevs(dom) == []


def test_a_transient_domain_has_no_persistent_configuration(tmp_path, host, conn):
    from ansible_collections.passthrough.libvirt.tests.integration.domains import domain_xml
    name = f'pcitest-transient-{os.getpid()}'
    try:
        dom = conn.createXML(domain_xml(name), 0)
    except libvirt.libvirtError:
        dom = conn.createXML(domain_xml(name, dom_type='qemu'), 0)
    try:
        run = attach(tmp_path, host, name, addresses=['0000:3b:02.0'], persistent=True)
        assert run.rc == 1 and run.msg == f"persistent: true, but domain '{name}' is transient (it has no persistent configuration)"
    finally:
        dom.destroy()


def test_live_attach_refused_by_libvirt_is_rolled_back(tmp_path, host, define_domain):
    """A running KVM domain: libvirt refuses the live hostdev here (no IOMMU, no such host device)."""
    dom = define_domain(start=True)
    run = attach(tmp_path, host, dom.name(), request='vf:2', aliases=ALIASES)
    assert run.rc == 1
    assert run.msg.startswith(f'{VFS[0]} (alias vf): attach failed: ')
    assert run.msg.endswith('rolled back the 0 device(s) this run attached; nothing was left behind')
    assert config_hostdevs(dom) == [] and '<hostdev' not in dom.XMLDesc(0)


# a1: the 4 X710 VFs or the 2 A100s (entries with one name are OR-ed)
A1 = [{'name': 'a1', 'vendor_id': '8086', 'product_id': '154c'}, {'name': 'a1', 'vendor_id': '10de', 'product_id': '20b5'}]


def _concurrent(args):
    tmp, host, name = args
    run = run_module_process('pci_attachment', dict(host, domain=name, request='a1:1', aliases=A1), tmp)
    return run.rc, run.msg, [a['address'] for a in run.result.get('attached', [])]


def test_eight_jobs_at_once_five_free_devices(tmp_path, host, define_domain, conn):
    # 6 devices match a1; one A100 is taken by another domain first, so 5 are free
    holder = define_domain()
    assert attach(tmp_path, host, holder.name(), addresses=['0000:86:00.0']).rc == 0
    domains = [define_domain().name() for _number in range(8)]
    jobs = []
    for index, name in enumerate(domains):
        job_tmp = tmp_path / f'job{index}'
        job_tmp.mkdir()
        jobs.append((job_tmp, host, name))
    with multiprocessing.get_context('spawn').Pool(8) as pool:
        results = pool.map(_concurrent, jobs)
    ok = [r for r in results if r[0] == 0]
    failed = [r for r in results if r[0] != 0]
    given = [address for r in ok for address in r[2]]
    assert len(given) == len(set(given))
    assert len(ok) == 5 and len(failed) == 3, results
    # each refusal says why: the six devices a1 matches are held by six domains
    assert all(r[1].startswith('request: not enough free devices on this host: a1: 1 requested, 0 free: 6 held by 6 domains (e.g. ')
               for r in failed), failed
    assert sorted(given) == sorted(VFS + ['0000:3c:00.0'])
    # and libvirt agrees: no device is in two domains' configurations
    everywhere = [address for name in domains + [holder.name()] for address in config_hostdevs(conn.lookupByName(name))]
    assert len(everywhere) == len(set(everywhere)) == 6


def test_a_failure_on_the_second_device_rolls_back_the_first(tmp_path, host, define_domain):
    """Test double: the real DomainHandle, except that its second attach call fails as libvirt would.
    A real daemon cannot be made to fail the second of two config-mode attaches on demand."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed
    from ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment import run
    from ansible_collections.passthrough.libvirt.tests.integration.domains import second_attach_fails

    SecondAttachFails = second_attach_fails()     # pylint: disable=invalid-name
    dom = define_domain()
    params = dict(host, domain=dom.name(), state='present', request='vf:2', aliases=ALIASES, addresses=None,
                  attachment_ids=None, live=None, persistent=None, timeout=5.0, uri='qemu:///system')
    with pytest.raises(ChangeFailed) as info:
        run(params, False, open_domain=SecondAttachFails)
    assert str(info.value) == (f'{VFS[1]} (alias vf): attach failed: internal error: injected failure of the second attach; '
                               'rolled back the 1 device(s) this run attached; nothing was left behind')
    assert SecondAttachFails.calls == 2
    assert config_hostdevs(dom) == []
    # and the host is as it was: the same request now succeeds with the same devices
    done = run(params, False)
    assert [a['address'] for a in done['attached']] == VFS[:2]


NATIVE_HOTPLUG = (Path(__file__).resolve().parents[1] / 'lab' / 'domains' / 'pcitest-native.xml')


def _running(conn, xml_text, name):
    for dom_type in ('kvm', 'qemu'):
        dom = conn.defineXML(xml_text.replace('@TYPE@', dom_type).replace('pcitest-native', name))
        try:
            dom.create()
            return dom
        except libvirt.libvirtError:
            dom.undefine()
    pytest.fail('no domain type runs here')


@pytest.mark.parametrize('native, expected', [(True, 'event'), (False, 'timeout')])
def test_a_live_unplug_is_confirmed_by_the_device_removed_event(conn, native, expected):
    """The confirmation machinery on the real daemon, with a device this machine can hot-plug (virtio-rng;
    hostdevs need the lab). Native PCIe hot-plug releases it at once; ACPI hot-plug without a guest OS never."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._attachment import wait_removed
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import DomainHandle, EventLoop, Libvirt

    EventLoop.start()
    handle_conn = Libvirt('qemu:///system', read_only=False)
    text = NATIVE_HOTPLUG.read_text()
    if not native:
        text = text.split('<qemu:commandline>')[0] + '</domain>'
    name = f'pcitest-events-{os.getpid()}-{expected}'
    dom = _running(conn, text, name)
    try:
        handle = DomainHandle(handle_conn, name)
        handle.watch_removals()
        dom.attachDeviceFlags("<rng model='virtio'><backend model='random'>/dev/urandom</backend><alias name='ua-rng-t'/></rng>",
                              libvirt.VIR_DOMAIN_AFFECT_LIVE)
        handle.detach('ua-rng-t', True, False)
        assert wait_removed(handle, 'ua-rng-t', 3.0) == expected
        assert ("ua-rng-t" in dom.XMLDesc(0)) is (expected == 'timeout')
    finally:
        dom.destroy()
        dom.undefine()
        handle_conn.close()


def test_orphans_and_stale_records_are_reported_and_reconciled(tmp_path, host, define_domain):
    """A ua-pci- hostdev without a record (an older version killed after attaching) and a record without its
    device (a run killed between recording its intent and attaching), as libvirt holds them."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import METADATA_KEY, METADATA_URI, metadata_xml
    from ansible_collections.passthrough.libvirt.tests.integration.domains import hostdev_xml
    orphan, stale = '11111111-2222-4333-8444-555555555555', '66666666-7777-4888-8999-aaaaaaaaaaaa'
    dom = define_domain(hostdevs=hostdev_xml(VFS[0], f'ua-pci-{orphan}'))
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata_xml([{'id': stale, 'alias': 'vf', 'address': VFS[1]}]),
                    METADATA_KEY, METADATA_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def texts(run):
        return [w['event']['msg'] if isinstance(w, dict) else w for w in run.result.get('warnings', [])]

    query = attach(tmp_path, host, dom.name(), state='query')
    assert query.result['orphans'] == [{'attachment_id': orphan, 'address': VFS[0]}]
    assert query.result['stale_records'] == [stale] and query.result['changed'] is False
    assert any(t.startswith(f"{VFS[0]} (attachment {orphan}) carries this collection's alias but no record") for t in texts(query))

    present = attach(tmp_path, host, dom.name(), request='vf:1', aliases=ALIASES)
    assert present.rc == 0 and present.result['stale_records'] == [stale]
    assert [a['address'] for a in present.result['attached']] == [VFS[1]]       # the orphan counts for no alias
    assert config_hostdevs(dom) == VFS[:2]
    again = attach(tmp_path, host, dom.name(), request='vf:1', aliases=ALIASES)
    assert again.result['changed'] is False and again.result['stale_records'] == []

    removed = attach(tmp_path, host, dom.name(), state='absent', addresses=[VFS[0]])
    assert removed.rc == 0 and [d['attachment_id'] for d in removed.result['detached']] == [orphan]
    assert config_hostdevs(dom) == [VFS[1]] and removed.result['orphans'] == []
