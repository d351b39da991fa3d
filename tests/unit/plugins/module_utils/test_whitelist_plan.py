# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_whitelist's decisions as tables of cases, on the dual-socket fixture."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import HostUse
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs, SysfsError
from ansible_collections.passthrough.libvirt.plugins.module_utils._binding import Bind, Restore, SetVfs, plan_bindings, plan_sriov
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

A = PciAddress.parse


@pytest.fixture(scope='module')
def devices(tmp_path_factory):
    root = tmp_path_factory.mktemp('sys')
    sysfs_tree.dual_socket_server(root)
    return {device.address: device for device in Sysfs(str(root)).read_devices()}


def use(**reasons) -> HostUse:
    host = HostUse()
    for address, reason in reasons.items():
        host.add(A(address.replace('_', ':', 2).replace('_', '.')), reason)
    return host


def bindings(devices, spec, original=None, allocated=(), host=None, force=False, driver='vfio-pci'):
    return plan_bindings(devices, Whitelist.parse(spec), driver, original or {}, set(map(A, allocated)), host or HostUse(), force)


def test_binds_what_the_whitelist_matches_and_records_the_drivers(devices):
    plan = bindings(devices, [{'vendor_id': '10de', 'product_id': '20b5'}, {'address': '0000:19:00.0'}])
    assert plan.refusals == []
    assert plan.changes == [Bind(A('0000:19:00.0'), 'vfio-pci', None), Bind(A('0000:3c:00.0'), 'vfio-pci', 'nvidia')]
    # 0000:86:00.0 is an A100 already on vfio-pci: nothing to do, nothing recorded
    assert plan.original_drivers == {'0000:19:00.0': None, '0000:3c:00.0': 'nvidia'}


def test_already_bound_is_no_change(devices):
    plan = bindings(devices, [{'address': '0000:3b:02.2'}, {'address': '0000:86:00.0'}])
    assert plan.changes == [] and plan.refusals == []


def test_devices_leaving_the_whitelist_go_back_to_their_driver(devices):
    original = {'0000:86:00.0': 'nvidia', '0000:3b:02.2': 'iavf', '0000:99:00.0': 'gone'}
    plan = bindings(devices, [{'address': '0000:3b:02.2'}], original=original)
    assert plan.changes == [Restore(A('0000:86:00.0'), 'nvidia', 'vfio-pci')]
    # still whitelisted: kept; no longer on the host: forgotten
    assert plan.original_drivers == {'0000:3b:02.2': 'iavf'}


def test_state_absent_gives_everything_back(devices):
    plan = bindings(devices, [], original={'0000:86:00.0': 'nvidia', '0000:3b:02.3': None})
    assert plan.changes == [Restore(A('0000:3b:02.3'), None, 'vfio-pci'), Restore(A('0000:86:00.0'), 'nvidia', 'vfio-pci')]
    assert plan.original_drivers == {}


def test_record_only_touches_no_binding(devices):
    plan = bindings(devices, [{'vendor_id': '10de'}], original={'0000:86:00.0': 'nvidia'}, driver=None)
    assert plan.changes == [] and plan.original_drivers == {'0000:86:00.0': 'nvidia'}


def test_devices_the_host_uses_are_refused_unless_forced(devices):
    host = use(**{'0000_3b_00_0': 'network interface ens1f0 has address 10.0.0.5',
                  '0000_03_00_0': 'is the boot VGA device (the console)'})
    spec = [{'address': '0000:3b:00.0'}, {'address': '0000:03:00.0'}, {'address': '0000:19:00.0'}]
    plan = bindings(devices, spec, host=host)
    assert plan.refusals == [
        '0000:03:00.0: the host uses it: is the boot VGA device (the console) (force: true to take it anyway)',
        '0000:3b:00.0: the host uses it: network interface ens1f0 has address 10.0.0.5 (force: true to take it anyway)',
    ]
    forced = bindings(devices, spec, host=host, force=True)
    assert forced.refusals == [] and A('0000:3b:00.0') in [change.address for change in forced.changes]


def test_a_half_bound_iommu_group_is_refused_and_listed(devices):
    plan = bindings(devices, [{'address': '0000:af:00.0'}])      # the RTX 3090 without its audio function
    assert plan.refusals == ['IOMMU group 24 would be left half bound: 0000:af:00.1 (snd_hda_intel) would stay with the host '
                             'while 0000:af:00.0 moves to vfio-pci; whitelist the whole group: 0000:af:00.0, 0000:af:00.1']
    assert plan.changes == []
    whole = bindings(devices, [{'address': '0000:af:00.*'}])
    assert whole.refusals == [] and [change.address for change in whole.changes] == [A('0000:af:00.0'), A('0000:af:00.1')]


def test_devices_held_by_domains_are_left_alone(devices):
    plan = bindings(devices, [{'address': '0000:3c:00.0'}], allocated=['0000:3c:00.0'])
    assert plan.changes == []
    leaving = bindings(devices, [], original={'0000:86:00.0': 'nvidia'}, allocated=['0000:86:00.0'])
    assert leaving.refusals == ['0000:86:00.0: left the whitelist but a domain holds it; detach it first'] and leaving.changes == []


def test_bad_driver_names_are_refused_before_planning(devices):
    with pytest.raises(SysfsError, match="driver: '../x' is not a kernel driver name"):
        bindings(devices, [{'address': '0000:19:00.0'}], driver='../x')


def sriov(devices, items, allocated=(), host=None, force=False):
    return plan_sriov(items, devices, set(map(A, allocated)), host or HostUse(), force)


def test_vf_counts_by_address_or_interface(devices):
    plan = sriov(devices, [{'pf': '0000:5e:00.0', 'numvfs': 4}, {'pf': 'ens1f0', 'numvfs': 4}, {'pf': 'ens1f1', 'numvfs': 8}])
    assert plan.changes == [SetVfs(A('0000:5e:00.0'), 4, 0), SetVfs(A('0000:3b:00.1'), 8, 0)]   # ens1f0 already has 4


def test_vf_changes_are_refused_while_a_vf_is_held_or_used(devices):
    held = sriov(devices, [{'pf': '0000:3b:00.0', 'numvfs': 8}], allocated=['0000:3b:02.2'])
    assert held.refusals == ['0000:3b:00.0: cannot change its VFs from 4 to 8: a domain holds 0000:3b:02.2 '
                             '(changing the count destroys every VF first)']
    host = use(**{'0000_3b_02_0': 'network interface ens1f0v0 has address 10.1.0.2'})
    used = sriov(devices, [{'pf': '0000:3b:00.0', 'numvfs': 0}], host=host)
    assert used.refusals == ['0000:3b:00.0: cannot change its VFs from 4 to 0: the host uses 0000:3b:02.0 '
                             '(network interface ens1f0v0 has address 10.1.0.2) (force: true to do it anyway)']
    assert sriov(devices, [{'pf': '0000:3b:00.0', 'numvfs': 0}], host=host, force=True).changes == [SetVfs(A('0000:3b:00.0'), 0, 4)]


@pytest.mark.parametrize('items, message', [
    ([{'pf': '0000:3c:00.0', 'numvfs': 1}], 'sriov[0].pf: 0000:3c:00.0 is not an SR-IOV physical function'),
    ([{'pf': 'ens1f0v0', 'numvfs': 1}], 'sriov[0].pf: 0000:3b:02.0 (ens1f0v0) is not an SR-IOV physical function'),
    ([{'pf': 'eth9', 'numvfs': 1}], "sriov[0].pf: no PCI device has the network interface 'eth9'"),
    ([{'pf': '0000:99:00.0', 'numvfs': 1}], "sriov[0].pf: there is no PCI device '0000:99:00.0' on this host"),
    ([{'pf': 'ens2np0', 'numvfs': 9}], 'sriov[0].numvfs: 9 must be a whole number from 0 to 8 (sriov_totalvfs of 0000:5e:00.0)'),
    ([{'pf': 'ens2np0', 'numvfs': '2'}], "sriov[0].numvfs: '2' must be a whole number from 0 to 8"),
    ([{'pf': 'ens2np0'}], "sriov[0]: {'pf': 'ens2np0'} must be a dict with exactly the keys pf and numvfs"),
    ([{'pf': 'ens2np0', 'numvfs': 1}, {'pf': '0000:5e:00.0', 'numvfs': 2}], 'sriov[1].pf: 0000:5e:00.0 is given twice'),
])
def test_sriov_errors_name_the_field(devices, items, message):
    with pytest.raises(SpecError) as info:
        sriov(devices, items)
    assert str(info.value).startswith(message)
