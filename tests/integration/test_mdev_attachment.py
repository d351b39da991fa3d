# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mediated devices attached by alias against the real libvirtd, in config mode on defined `pcitest-` domains.

libvirt really writes, keeps and removes the `<hostdev type='mdev'>` and the metadata. The mdevs
themselves live in a fixture sysfs tree: no mdev driver can be loaded on the test machines, so
the kernel's part (a UUID written to `create` makes the mdev, `remove` ends it) is played by a
test double, `tests/mdev_tree.KernelDouble`. The nested lab is where a real mdev driver runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import mdev_tree, sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process

libvirt = pytest.importorskip('libvirt')

FREE = '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11'          # made by someone else (mdevctl, an operator): used, never removed
SPEC = [{'mdev_parent': 'mtty', 'mdev_types': ['mtty-2']}]
SERIAL = {'name': 'serial', 'mdev_type': 'Dual port serial'}


@pytest.fixture
def host(tmp_path):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    mtty = mdev_tree.virtual_parent(root)
    mdev_tree.mdev_parent(root, mtty, {'mtty-1': {'name': 'Single port serial', 'device_api': 'vfio-pci', 'available_instances': 8},
                                       'mtty-2': {'name': 'Dual port serial', 'device_api': 'vfio-pci', 'available_instances': 2}})
    mdev_tree.mdev(root, mtty, 'mtty-2', FREE)
    return {'sysfs_root': str(root), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': SPEC,
            'mdevctl_dir': str(tmp_path / 'mdevctl.d')}


def shared(host) -> dict:
    """The options every module takes (mdevctl_dir is pci_attachment's own)."""
    return {key: value for key, value in host.items() if key != 'mdevctl_dir'}


def attach(host, domain, mdev_sysfs=None, **args):
    from ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment import run
    params = dict(host, domain=domain, state='present', request=None, aliases=[SERIAL], addresses=None, attachment_ids=None,
                  live=None, persistent=None, timeout=5.0, uri='qemu:///system', interface=None, force=False,
                  mdevctl_dir=host['mdevctl_dir'])
    params.update(args)
    kernel = mdev_sysfs or mdev_tree.KernelDouble
    return run(params, False, mdev_sysfs=kernel)


def config_mdevs(dom) -> list[str]:
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import parse_mdevs
    return [m.uuid for m in parse_mdevs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))]


def existing(host) -> list[str]:
    from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs
    return sorted(m.uuid for m in MdevSysfs(host['sysfs_root']).mdevs())


def pool(host, tmp_path) -> dict:
    stats = run_module_process('hypervisor_pci_stats', shared(host), tmp_path).result['hypervisor']['pci_stats']
    (found,) = [p for p in stats if p['dev_type'] == 'type-MDEV']
    return {key: found[key] for key in ('count', 'total', 'allocated', 'free_mdevs')}


def test_mdevs_by_alias_free_ones_first_then_created_and_removed_again(tmp_path, host, define_domain):
    dom = define_domain()
    assert pool(host, tmp_path) == {'count': 3, 'total': 3, 'allocated': 0, 'free_mdevs': [FREE]}
    kernels = []

    def kernel(root):
        kernels.append(mdev_tree.KernelDouble(root))
        return kernels[-1]

    first = attach(host, dom.name(), kernel, request='serial:2')
    attached = first['attached']
    created = attached[1]['attachment_id']
    assert [(a['mdev_uuid'], a['mdev_type'], a['mdev_parent'], a['alias']) for a in attached] == [
        (FREE, 'mtty-2', 'mtty', 'serial'), (created, 'mtty-2', 'mtty', 'serial')]      # a new mdev takes the attachment id
    assert kernels[-1].writes == [('class/mdev_bus/mtty/mdev_supported_types/mtty-2/create', created)]
    assert config_mdevs(dom) == [FREE, created] and existing(host) == sorted([FREE, created])
    # the persistent attachment's new mdev gets an mdevctl definition, so it is there again after a reboot
    definition = tmp_path / 'mdevctl.d' / 'mtty' / created
    assert json.loads(definition.read_text()) == {'mdev_type': 'mtty-2', 'start': 'auto', 'attrs': []}
    assert sorted(p.name for p in (tmp_path / 'mdevctl.d' / 'mtty').iterdir()) == [created]    # none for the one it found
    assert [(d['mdev_uuid'], d['mdev_type'], d['address'], d['alias']) for d in first['pci_devices']] == [
        (FREE, 'mtty-2', None, 'serial'), (created, 'mtty-2', None, 'serial')]
    assert pool(host, tmp_path) == {'count': 1, 'total': 3, 'allocated': 2, 'free_mdevs': []}
    info = run_module_process('pci_device_info', dict(shared(host), device_spec=None), tmp_path).result
    assert {m['uuid']: (m['status'], m['instance_name']) for m in info['mdevs']} == {
        FREE: ('allocated', dom.name()), created: ('allocated', dom.name())}

    again = attach(host, dom.name(), kernel, request='serial:2')
    assert again['changed'] is False and again['pci_devices'] == first['pci_devices']      # the metadata round-trips

    gone = attach(host, dom.name(), kernel, request='serial:0')
    assert [d['mdev_uuid'] for d in gone['detached']] == [created, FREE]
    assert kernels[-1].writes == [(f'bus/mdev/devices/{created}/remove', '1')]             # only the one it created
    assert config_mdevs(dom) == [] and existing(host) == [FREE] and not definition.exists()
    assert pool(host, tmp_path) == {'count': 3, 'total': 3, 'allocated': 0, 'free_mdevs': [FREE]}


@pytest.mark.parametrize('aliases, request_text, message', [
    ([{'name': 'other', 'mdev_type': 'nvidia-*'}], 'other:1',
     'request: not enough free devices on this host: other: 1 requested, 0 free: no whitelisted mdev type of this host matches '
     'it (device_spec mdev_types)'),
    ([{'name': 'single', 'mdev_type': 'mtty-1'}], 'single:1',      # a type the whitelist does not admit on its parent
     'request: not enough free devices on this host: single: 1 requested, 0 free: no whitelisted mdev type of this host matches '
     'it (device_spec mdev_types)'),
    ([SERIAL], 'serial:4', 'request: not enough free devices on this host: serial: 4 requested, 3 free: mtty-2 on mtty: 3 free'),
    ([dict(SERIAL, device_type='type-PCI')], 'serial:1',
     'aliases[0]: device_type and mdev_type are both given; an alias asks for whole devices or for mediated devices of a type, '
     'not both'),
])
def test_bad_mdev_requests_are_refused_before_any_change(host, define_domain, aliases, request_text, message):
    from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError
    dom = define_domain()
    with pytest.raises(PassthroughError) as info:
        attach(host, dom.name(), aliases=aliases, request=request_text)
    assert str(info.value) == message
    assert config_mdevs(dom) == [] and existing(host) == [FREE]


def test_a_failed_second_attach_removes_the_mdev_it_created(host, define_domain):
    """Test doubles: the real DomainHandle failing its second attach, and the kernel double."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed
    from ansible_collections.passthrough.libvirt.plugins.modules.pci_attachment import run
    from ansible_collections.passthrough.libvirt.tests.integration.domains import second_attach_fails

    dom = define_domain()
    attach(host, dom.name(), request='serial:1')                     # takes FREE
    params = dict(host, domain=dom.name(), state='present', request='serial:3', aliases=[SERIAL], addresses=None,
                  attachment_ids=None, live=None, persistent=None, timeout=5.0, uri='qemu:///system', interface=None)
    # a failure after the new mdev and its definition: both are gone again
    with pytest.raises(ChangeFailed) as info:
        run(params, False, open_domain=second_attach_fails(), mdev_sysfs=mdev_tree.KernelDouble)
    assert str(info.value).startswith('mdev ') and ': attach failed: internal error: injected failure of the second attach; ' \
        'rolled back the 1 device(s) this run attached; nothing was left behind' in str(info.value)
    assert config_mdevs(dom) == [FREE] and existing(host) == [FREE]
    assert not (Path(host['mdevctl_dir']) / 'mtty').exists() or not list((Path(host['mdevctl_dir']) / 'mtty').iterdir())


def test_a_run_killed_after_creating_an_mdev_is_put_right_by_the_next(host, define_domain):
    """What a run killed between creating its mdev and attaching it leaves: the record, the mdev, no device."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import METADATA_KEY, METADATA_URI, metadata_xml
    dom = define_domain()
    stale = '66666666-7777-4888-8999-aaaaaaaaaaaa'
    mdev_tree.KernelDouble(host['sysfs_root']).create('mtty', 'mtty-2', stale)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata_xml([{
        'id': stale, 'alias': 'serial', 'address': None, 'interface': None,
        'mdev': {'uuid': stale, 'parent': 'mtty', 'type': 'mtty-2', 'created': True}}]),
        METADATA_KEY, METADATA_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert existing(host) == sorted([FREE, stale])
    run = attach(host, dom.name(), request='serial:0')
    assert run['changed'] is True and run['stale_records'] == [stale]
    assert existing(host) == [FREE]


# -- NVIDIA SR-IOV vGPU (kernel 6.8 and later): a VF per slice, its type set before the attach ---------------

VGPU_SPEC = [{'vendor_id': '10de', 'mdev_types': ['NVIDIA L40S-*']}]
VGPU_4Q = {'name': 'vgpu-4q', 'mdev_type': 'NVIDIA L40S-4Q'}


@pytest.fixture
def vgpu_host(tmp_path):
    mdev_tree.vgpu_server(tmp_path / 'vgpu')
    return {'sysfs_root': str(tmp_path / 'vgpu'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'device_spec': VGPU_SPEC,
            'mdevctl_dir': str(tmp_path / 'mdevctl.d')}


def current_types(host) -> dict[str, int | None]:
    from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs
    from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
    return {vf: MdevSysfs(host['sysfs_root']).vgpu(PciAddress.parse(vf)).current for vf in ('0000:01:00.4', '0000:01:00.5')}


def vgpu_pools(host, tmp_path) -> dict[str, tuple]:
    stats = run_module_process('hypervisor_pci_stats', shared(host), tmp_path).result['hypervisor']['pci_stats']
    return {p['mdev_name']: (p['count'], p['allocated'], p['free_addresses']) for p in stats if p['dev_type'] == 'type-VGPU'}


def test_an_alias_mark_on_a_vgpu_alias_holds_back_its_type_only(tmp_path, vgpu_host):
    state = Path(vgpu_host['config_path'])
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({'version': 1, 'out_of_service': [
        {'alias': 'vgpu-4q', 'mode': 'no-new', 'reason': 'profile retired', 'alias_entries': [VGPU_4Q]}]}))
    assert vgpu_pools(vgpu_host, tmp_path) == {'NVIDIA L40S-4Q': (0, 0, []),
                                               'NVIDIA L40S-8Q': (2, 0, ['0000:01:00.4', '0000:01:00.5'])}


@pytest.mark.parametrize('marked', [{'alias': 'vgpu-4q'}, {'address': '0000:01:00.4'}, {'pf': '0000:01:00.0'}, {'host': True}],
                         ids=['alias', 'the VF', 'its PF', 'host'])
def test_a_drain_mark_takes_vgpu_slices_out_of_the_domains(tmp_path, vgpu_host, define_domain, marked):
    dom = define_domain()
    done = attach(vgpu_host, dom.name(), aliases=[VGPU_4Q], request='vgpu-4q:1')
    assert [a['address'] for a in done['attached']] == ['0000:01:00.4']
    mark = [dict(marked, mode='drain', reason='profile retired')]
    marked = run_module_process('pci_whitelist', dict(shared(vgpu_host), driver='', out_of_service=mark, aliases=[VGPU_4Q]),
                                tmp_path)
    assert marked.rc == 0, marked.msg
    assert f'drain 1 device(s) from {dom.name()}' in marked.result['actions']
    [record] = [entry for entry in marked.result['drained'] if entry['domain'] == dom.name()]
    assert record['aliases'] == {'vgpu-4q': 1} and [d['address'] for d in record['devices']] == ['0000:01:00.4']
    assert 'hostdev' not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert current_types(vgpu_host) == {'0000:01:00.4': None, '0000:01:00.5': 1156}     # its type reset, as a detach does


def test_an_nvidia_vgpu_vf_gets_its_type_set_before_the_attach_and_reset_after(tmp_path, vgpu_host, define_domain):
    dom = define_domain()
    # VF .5 has 8Q set already, so it can only be an 8Q; VF .4 can be either
    assert vgpu_pools(vgpu_host, tmp_path) == {'NVIDIA L40S-4Q': (1, 0, ['0000:01:00.4']),
                                               'NVIDIA L40S-8Q': (2, 0, ['0000:01:00.4', '0000:01:00.5'])}
    done = attach(vgpu_host, dom.name(), aliases=[VGPU_4Q], request='vgpu-4q:1')
    assert [(a['address'], a['vgpu_type'], a['alias']) for a in done['attached']] == [('0000:01:00.4', 1155, 'vgpu-4q')]
    assert current_types(vgpu_host) == {'0000:01:00.4': 1155, '0000:01:00.5': 1156}
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<hostdev mode='subsystem' type='pci' managed='no'>" in xml     # it stays on NVIDIA's vfio variant driver
    assert vgpu_pools(vgpu_host, tmp_path) == {'NVIDIA L40S-4Q': (0, 1, []), 'NVIDIA L40S-8Q': (1, 0, ['0000:01:00.5'])}

    from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import Refused
    with pytest.raises(Refused) as info:
        attach(vgpu_host, dom.name(), aliases=[VGPU_4Q], request='vgpu-4q:2')
    assert str(info.value) == ('request: not enough free devices on this host: vgpu-4q: 2 requested, the domain holds 1, '
                               '0 more free: 1155 on 0000:01:00.0: 0 free (1 held by domains)')

    gone = attach(vgpu_host, dom.name(), aliases=[VGPU_4Q], request='vgpu-4q:0')
    assert [d['address'] for d in gone['detached']] == ['0000:01:00.4']
    assert current_types(vgpu_host) == {'0000:01:00.4': None, '0000:01:00.5': 1156}     # back to none, as it was
    assert 'hostdev' not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_a_drain_mark_on_an_mdev_parent_takes_its_mdevs_out_of_the_domains(tmp_path, define_domain):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    gpu = '0000:3c:00.0'
    mdev_tree.mdev_parent(root, mdev_tree.device_dir(root, gpu),
                          {'nvidia-63': {'name': 'GRID T4-1Q', 'device_api': 'vfio-pci', 'available_instances': 4}})
    host = {'sysfs_root': str(root), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'mdevctl_dir': str(tmp_path / 'mdevctl.d'),
            'device_spec': [{'mdev_parent': gpu, 'mdev_types': ['nvidia-63']}]}
    dom = define_domain()
    done = attach(host, dom.name(), aliases=[{'name': 'vgpu', 'mdev_type': 'nvidia-63'}], request='vgpu:1')
    [uuid] = config_mdevs(dom)
    assert done['attached'][0]['mdev_parent'] == gpu
    mark = [{'address': gpu, 'mode': 'drain', 'reason': 'Xid 79'}]
    marked = run_module_process('pci_whitelist', dict(shared(host), driver='', out_of_service=mark), tmp_path)
    assert marked.rc == 0, marked.msg
    assert f'drain 1 device(s) from {dom.name()}' in marked.result['actions']
    [record] = [entry for entry in marked.result['drained'] if entry['domain'] == dom.name()]
    assert record['aliases'] == {'vgpu': 1} and [d['mdev_uuid'] for d in record['devices']] == [uuid]
    assert config_mdevs(dom) == []


def test_a_drain_mark_on_an_mdev_alias_takes_out_its_type_only_and_no_new_one_is_given(tmp_path, define_domain):
    """An alias mark on an alias of mediated devices covers the mdevs of its type: drained out of the domain, the pool
    unavailable; the other type on the same parent stays where it is."""
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    gpu = '0000:3c:00.0'
    mdev_tree.mdev_parent(root, mdev_tree.device_dir(root, gpu),
                          {'nvidia-63': {'name': 'GRID T4-1Q', 'device_api': 'vfio-pci', 'available_instances': 4},
                           'nvidia-64': {'name': 'GRID T4-2Q', 'device_api': 'vfio-pci', 'available_instances': 2}})
    host = {'sysfs_root': str(root), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'mdevctl_dir': str(tmp_path / 'mdevctl.d'),
            'device_spec': [{'mdev_parent': gpu, 'mdev_types': ['nvidia-63', 'nvidia-64']}]}
    aliases = [{'name': 'small', 'mdev_type': 'nvidia-63'}, {'name': 'large', 'mdev_type': 'nvidia-64'}]
    dom = define_domain()
    done = attach(host, dom.name(), aliases=aliases, request='small:1,large:1')
    uuid = {item['alias']: item['mdev_uuid'] for item in done['attached']}
    assert sorted(config_mdevs(dom)) == sorted(uuid.values())
    mark = [{'alias': 'small', 'mode': 'drain', 'reason': 'vGPU profile retired'}]
    marked = run_module_process('pci_whitelist', dict(shared(host), driver='', out_of_service=mark, aliases=aliases), tmp_path)
    assert marked.rc == 0, marked.msg
    assert f'drain 1 device(s) from {dom.name()}' in marked.result['actions']
    [record] = [entry for entry in marked.result['drained'] if entry['domain'] == dom.name()]
    assert record['aliases'] == {'small': 1} and [d['mdev_uuid'] for d in record['devices']] == [uuid['small']]
    assert config_mdevs(dom) == [uuid['large']]
    stats = run_module_process('hypervisor_pci_stats', dict(shared(host), aliases=aliases), tmp_path).result
    pools = {p['mdev_type']: p for p in stats['hypervisor']['pci_stats'] if p['dev_type'] == 'type-MDEV'}
    assert pools['nvidia-63']['count'] == 0
    assert list(pools['nvidia-63']['unavailable_reasons']) == ['out of service (drain, alias small): vGPU profile retired']
    assert pools['nvidia-64']['count'] > 0 and stats['aliases_free']['small'] == 0
