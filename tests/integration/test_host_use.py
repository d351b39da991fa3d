# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A whitelisted NIC the host uses, seen the same way by every module (real libvirtd, real processes).

The fixture tree's first NIC carries the name of this machine's real default-route interface, so
the host-use reader finds the route (and the address) in the real /proc and the real kernel: no
fact is faked. The second NIC has a name the kernel does not know: it is free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.conftest import run_module_process
from ansible_collections.passthrough.libvirt.tests.integration.test_pci_attachment import config_hostdevs

libvirt = pytest.importorskip('libvirt')

USED, FREE = '0000:02:00.0', '0000:03:00.0'
NIC = [{'vendor_id': '8086', 'product_id': '10d3'}]
ALIASES = [{'name': 'nic', 'vendor_id': '8086', 'product_id': '10d3'}]


def default_route_interface() -> str | None:
    for line in Path('/proc/net/route').read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == '00000000' and fields[7] == '00000000':
            return fields[0]
    return None


@pytest.fixture
def host(tmp_path):
    ifname = default_route_interface()
    if ifname is None:
        pytest.skip('this machine has no IPv4 default route to borrow')
    e1000e = dict(vendor_id=0x8086, device_id=0x10D3, class_code=0x020000, revision=0x00, subsystem_vendor_id=0x8086,
                  subsystem_device_id=0xA01F, driver='e1000e', numa_node=-1)
    sysfs_tree.write_tree(tmp_path / 'sys', [
        sysfs_tree.FixtureDevice('0000:00:00.0', 0x8086, 0x29C0, 0x060000, iommu_group=0),
        sysfs_tree.FixtureDevice('0000:00:01.0', 0x1B36, 0x000C, 0x060400, driver='pcieport', iommu_group=1),
        sysfs_tree.FixtureDevice('0000:00:02.0', 0x1B36, 0x000C, 0x060400, driver='pcieport', iommu_group=2),
        sysfs_tree.FixtureDevice(USED, **e1000e, iommu_group=3, parent='0000:00:01.0', netdevs=[ifname]),
        sysfs_tree.FixtureDevice(FREE, **e1000e, iommu_group=4, parent='0000:00:02.0', netdevs=['pcitestnic0']),
    ], extra_drivers=('vfio-pci',))
    return {'sysfs_root': str(tmp_path / 'sys'), 'config_path': str(tmp_path / 'etc' / 'state.json'), 'ifname': ifname}


def test_every_module_says_the_host_used_nic_is_unavailable(tmp_path, host, define_domain):
    ifname = host.pop('ifname')
    route = f'network interface {ifname} carries the default route'

    # pci_whitelist: binding it is refused, naming the use; recording the whitelist only reports it unavailable.
    refused = run_module_process('pci_whitelist', dict(host, device_spec=NIC), tmp_path)
    assert refused.rc == 1 and f'{USED}: the host uses it: ' in refused.msg and route in refused.msg, refused.msg
    assert 'nothing was changed' in refused.msg and 'Traceback' not in refused.stderr
    stored = run_module_process('pci_whitelist', dict(host, device_spec=NIC, driver=None), tmp_path)
    assert stored.rc == 0, stored.msg
    [unavailable] = stored.result['unavailable']
    assert unavailable['address'] == USED and unavailable['reason'].startswith('the host uses it: ') and route in unavailable['reason']

    # pci_device_info and hypervisor_pci_stats read the stored whitelist and agree.
    info = run_module_process('pci_device_info', dict(host), tmp_path)
    statuses = {d['address']: (d['status'], d['unavailable_reason']) for d in info.result['pci_devices'] if d['whitelisted']}
    assert statuses == {USED: ('unavailable', unavailable['reason']), FREE: ('available', None)}
    stats = run_module_process('hypervisor_pci_stats', dict(host, aliases=ALIASES), tmp_path)
    [pool] = stats.result['hypervisor']['pci_stats']
    assert (pool['count'], pool['total'], pool['unavailable'], pool['free_addresses']) == (1, 2, 1, [FREE])
    assert stats.result['aliases_free'] == {'nic': 1}

    # pci_attachment: never by address, never by alias; it takes the free one when one is asked for.
    dom = define_domain()
    by_address = run_module_process('pci_attachment', dict(host, domain=dom.name(), addresses=[USED]), tmp_path)
    assert by_address.rc == 1 and by_address.msg.startswith(f'addresses[0]: {USED} cannot be attached: it is unavailable: the host uses it: ')
    assert route in by_address.msg and by_address.msg.endswith('(force: true to take it anyway)')
    by_alias = run_module_process('pci_attachment', dict(host, domain=dom.name(), request='nic:2', aliases=ALIASES), tmp_path)
    assert by_alias.rc == 1 and by_alias.msg.startswith('request: not enough free devices on this host: nic: 2 requested, 1 free: '
                                                        f'{USED} unavailable (the host uses it: ')
    assert by_alias.msg.endswith('; force: true to take it anyway)')
    assert config_hostdevs(dom) == []
    one = run_module_process('pci_attachment', dict(host, domain=dom.name(), request='nic:1', aliases=ALIASES), tmp_path)
    assert one.rc == 0 and [a['address'] for a in one.result['attached']] == [FREE]
    assert config_hostdevs(dom) == [FREE]


def test_force_attaches_it_with_a_warning_and_check_mode_changes_nothing(tmp_path, host, define_domain):
    host.pop('ifname')
    dom = define_domain()
    args = dict(host, domain=dom.name(), addresses=[USED], device_spec=NIC, force=True)
    checked = run_module_process('pci_attachment', dict(args, _ansible_check_mode=True), tmp_path)
    assert checked.rc == 0 and checked.result['changed'] is True and config_hostdevs(dom) == []
    forced = run_module_process('pci_attachment', args, tmp_path)
    assert forced.rc == 0 and config_hostdevs(dom) == [USED]
    # ansible-core 2.19 wraps each warning as {event: {msg}}; older versions give the text
    texts = [w['event']['msg'] if isinstance(w, dict) else w for w in forced.result.get('warnings', [])]
    assert any(t.startswith(f'{USED}: force: true attaches it although the host uses it: ') for t in texts), texts
