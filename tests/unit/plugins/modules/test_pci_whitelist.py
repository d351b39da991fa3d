# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_whitelist's run on a fixture tree.

The kernel's side of the sysfs writes is tests/kernel_double.py (a fixture tree cannot react to
writes) and the network facts are given; allocations come from libvirt's own test:/// driver.
The same run on a real kernel is part of the lab (`make lab`).
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs
from ansible_collections.passthrough.libvirt.plugins.module_utils._binding import WhitelistRun
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, Refused
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.kernel_double import KernelDouble

pytest.importorskip('libvirt')

NODE = """<node><domain type='test'><name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
<memory>65536</memory><os><type>hvm</type></os><devices>
<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x86' slot='0x00' function='0x0'/></source></hostdev>
</devices></domain></node>"""
GPUS = [{'vendor_id': '10de', 'product_id': '20b5'}]          # 3c:00.0 on nvidia, 86:00.0 held by vm-a


class Net:
    def __init__(self, addresses=None, default_route=()):
        self._addresses, self._default_route = addresses or {}, set(default_route)

    def addresses(self, ifname):
        return self._addresses.get(ifname, [])

    def default_route_interfaces(self):
        return self._default_route


@pytest.fixture
def host(tmp_path):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    for driver in ('nvidia', 'nvme'):
        (root / 'bus/pci/drivers' / driver).mkdir(exist_ok=True)
    (tmp_path / 'node.xml').write_text(NODE)
    (tmp_path / 'proc').mkdir()
    kernel = KernelDouble(root, native_drivers={'0000:3c:00.0': 'nvidia', '0000:19:00.0': 'nvme', '0000:86:00.0': 'nvidia'})

    def run(check=False, net=None, writer=None, **params):
        base = dict(state='present', device_spec=None, driver='vfio-pci', sriov=None, persist=False,
                    persist_path=str(tmp_path / 'rules'), force=False, uri=f'test://{tmp_path}/node.xml',
                    sysfs_root=str(root), config_path=str(tmp_path / 'etc/state.json'), _diff=True)
        base.update(params)
        return WhitelistRun(base, check, writer or kernel, net or Net(), str(tmp_path / 'proc')).run()

    run.kernel, run.tmp, run.sysfs = kernel, tmp_path, Sysfs(str(root))
    return run


def driver(host, address):
    return host.sysfs.read_device(PciAddress.parse(address)).driver


def test_check_then_run_then_again(host):
    checked = host(check=True, device_spec=GPUS)
    assert checked['changed'] is True
    assert checked['actions'] == ['bind 0000:3c:00.0 to vfio-pci (now nvidia)', 'store the whitelist']
    assert host.kernel.writes == [] and not (host.tmp / 'etc').exists()        # no state file, not even the lock's
    assert checked['diff']['after']['drivers'] == {'0000:3c:00.0': 'vfio-pci'}

    done = host(device_spec=GPUS)
    assert done['changed'] is True and done['bound'] == ['0000:3c:00.0'] and done['restored'] == []
    assert driver(host, '0000:3c:00.0') == 'vfio-pci'
    assert driver(host, '0000:86:00.0') == 'vfio-pci'            # held by vm-a: left alone
    state = json.loads((host.tmp / 'etc/state.json').read_text())
    assert state['original_drivers'] == {'0000:3c:00.0': 'nvidia'} and state['device_spec'] == GPUS
    assert done['diff'] == {'before': {'device_spec': None, 'out_of_service': [], 'drivers': {},
                                       'sriov_numvfs': done['diff']['before']['sriov_numvfs']},
                            'after': {'device_spec': GPUS, 'out_of_service': [], 'drivers': {'0000:3c:00.0': 'vfio-pci'},
                                      'sriov_numvfs': done['diff']['before']['sriov_numvfs']}}

    writes = len(host.kernel.writes)
    again = host(device_spec=GPUS)
    assert again['changed'] is False and again['actions'] == [] and len(host.kernel.writes) == writes


def test_absent_gives_devices_back(host):
    host(device_spec=GPUS + [{'address': '0000:19:00.0'}])
    assert driver(host, '0000:19:00.0') == 'vfio-pci'
    gone = host(state='absent')
    assert gone['changed'] is True and gone['restored'] == ['0000:19:00.0', '0000:3c:00.0'] and gone['whitelist'] is None
    assert driver(host, '0000:3c:00.0') == 'nvidia' and driver(host, '0000:19:00.0') is None
    assert json.loads((host.tmp / 'etc/state.json').read_text())['original_drivers'] == {}
    assert host(state='absent')['changed'] is False


def test_a_device_leaving_the_whitelist_goes_back(host):
    host(device_spec=GPUS + [{'address': '0000:19:00.0'}])
    result = host(device_spec=GPUS)
    assert result['restored'] == ['0000:19:00.0'] and result['bound'] == []
    assert driver(host, '0000:19:00.0') is None


def test_the_host_uses_the_nic_refused_unless_forced(host):
    net = Net({'ens1f0': ['10.0.0.5']})
    with pytest.raises(Refused) as info:
        host(device_spec=[{'address': '0000:3b:00.0', 'product_id': '1572'}], net=net)
    assert str(info.value) == ('nothing was changed: 0000:3b:00.0: the host uses it: network interface ens1f0 has address 10.0.0.5 '
                               '(force: true to take it anyway)')
    assert host.kernel.writes == [] and not (host.tmp / 'etc/state.json').exists()
    forced = host(device_spec=[{'address': '0000:3b:00.0', 'product_id': '1572'}], net=net, force=True)
    assert forced['bound'] == ['0000:3b:00.0']
    assert forced['warnings'] == ['0000:3b:00.0: force: true takes it for vfio-pci although the host uses it: '
                                  'network interface ens1f0 has address 10.0.0.5']


def test_a_failure_half_way_is_rolled_back(host):
    faulty = KernelDouble(host.kernel.root, native_drivers=host.kernel.native_drivers,
                          fail_on=('bus/pci/drivers_probe', '0000:3c:00.0'))
    with pytest.raises(ChangeFailed) as info:
        host(device_spec=GPUS + [{'address': '0000:19:00.0'}], writer=faulty)
    assert 'Input/output error' in str(info.value)
    # 0000:19:00.0 was bound; 0000:3c:00.0 was unbound from nvidia when probing failed: both are undone
    assert str(info.value).endswith('rolled back 2 change(s); nothing is left changed')
    assert driver(host, '0000:19:00.0') is None and driver(host, '0000:3c:00.0') == 'nvidia'
    assert override_of(host, '0000:3c:00.0') == '(null)' and override_of(host, '0000:19:00.0') == '(null)'
    assert not (host.tmp / 'etc/state.json').exists()


def override_of(host, address):
    return (host.kernel.root / 'bus/pci/devices' / address / 'driver_override').read_text().strip()


def test_vf_counts_and_persistence(host):
    result = host(device_spec=GPUS, sriov=[{'pf': 'ens2np0', 'numvfs': 2}], persist=True)
    assert result['sriov'] == [{'pf': '0000:5e:00.0', 'numvfs': 2, 'previous': 0}]
    assert ('devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0/sriov_numvfs', '2') in host.kernel.writes
    rules = (host.tmp / 'rules').read_text()
    assert 'KERNEL=="0000:3c:00.0", ATTR{driver_override}="vfio-pci"' in rules
    assert 'KERNEL=="0000:5e:00.0", ATTR{sriov_numvfs}="2"' in rules
    again = host(device_spec=GPUS, sriov=[{'pf': 'ens2np0', 'numvfs': 2}], persist=True)
    assert again['changed'] is False
    unpersisted = host(device_spec=GPUS, sriov=[{'pf': 'ens2np0', 'numvfs': 2}], persist=False)
    assert unpersisted['actions'] == ['write the udev rules'] and not (host.tmp / 'rules').exists()


def test_vfs_held_by_a_domain_block_a_new_count(host, tmp_path):
    (tmp_path / 'node.xml').write_text(NODE.replace("bus='0x86' slot='0x00' function='0x0'", "bus='0x3b' slot='0x02' function='0x2'"))
    with pytest.raises(Refused, match='0000:3b:00.0: cannot change its VFs from 4 to 8: a domain holds 0000:3b:02.2'):
        host(device_spec=GPUS, sriov=[{'pf': '0000:3b:00.0', 'numvfs': 8}])
    assert host.kernel.writes == []


@pytest.mark.parametrize('args, message', [
    ({'driver': '../x', 'device_spec': GPUS}, "driver: '../x' is not a kernel driver name (letters, digits, \"_\", \"-\", \".\")"),
    ({'device_spec': [{'vendor_id': 10}]}, 'device_spec[0].vendor_id: 10 must be a string of up to 4 hex digits, like "8086" (quote it in YAML)'),
    ({'device_spec': GPUS, 'sriov': [{'pf': 'eth9', 'numvfs': 1}]}, "sriov[0].pf: no PCI device has the network interface 'eth9'"),
    ({'device_spec': GPUS, 'sriov': [{'pf': 'ens2np0', 'numvfs': 99}]},
     'sriov[0].numvfs: 99 must be a whole number from 0 to 8 (sriov_totalvfs of 0000:5e:00.0)'),
    ({'device_spec': GPUS, 'sysfs_root': '/nonexistent'}, "sysfs_root '/nonexistent' does not exist or is not a directory"),
    ({}, 'state is present but any of the following are missing: device_spec, out_of_service, accept_hardware_changes'),
])
def test_bad_input_through_the_module_changes_nothing(run_module, tmp_path, args, message):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    before = sorted(p.name for p in (root / 'bus/pci/drivers/vfio-pci').iterdir())
    run = run_module('pci_whitelist', **{'sysfs_root': str(root), 'uri': 'test:///default',
                                         'config_path': str(tmp_path / 'state.json'), **args})
    assert run.rc == 1 and run.msg == message
    assert 'Traceback' not in run.stderr
    assert sorted(p.name for p in (root / 'bus/pci/drivers/vfio-pci').iterdir()) == before
    assert not (tmp_path / 'state.json').exists()


def test_a_device_whose_hardware_changed_is_neither_bound_nor_given_back_until_accepted(host):
    host(device_spec=GPUS, driver=None)                      # recorded, left on nvidia
    uevent = host.tmp / 'sys/bus/pci/devices/0000:3c:00.0/uevent'
    uevent.write_text(uevent.read_text().replace('PCI_SUBSYS_ID=10DE:1533', 'PCI_SUBSYS_ID=10DE:1534'))
    held = host(device_spec=GPUS)
    assert held['bound'] == [] and driver(host, '0000:3c:00.0') == 'nvidia' and host.kernel.writes == []
    assert any('0000:3c:00.0: not bound to vfio-pci: hardware changed: subsystem_product_id 1533 \u2192 1534' in w for w in held['warnings'])
    accepted = host(device_spec=GPUS, accept_hardware_changes=['0000:3c:00.0'])
    assert accepted['bound'] == ['0000:3c:00.0'] and driver(host, '0000:3c:00.0') == 'vfio-pci'
    uevent.write_text(uevent.read_text().replace('PCI_SUBSYS_ID=10DE:1534', 'PCI_SUBSYS_ID=10DE:1535'))
    kept = host(device_spec=[])                               # it left the whitelist, changed: it stays where it is
    assert kept['restored'] == [] and driver(host, '0000:3c:00.0') == 'vfio-pci'
    assert json.loads((host.tmp / 'etc/state.json').read_text())['original_drivers'] == {'0000:3c:00.0': 'nvidia'}
