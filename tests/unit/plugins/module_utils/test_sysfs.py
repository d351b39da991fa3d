# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The discovery core on fixture trees written as real files in the kernel's layout."""

from __future__ import annotations

import os

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs, SysfsError
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

PRESETS = {
    'dual-socket': sysfs_tree.dual_socket_server,
    'no-iommu': sysfs_tree.no_iommu_host,
    'synthetic-300': lambda root: sysfs_tree.synthetic(root, 300),
}


@pytest.fixture(params=sorted(PRESETS))
def tree(request, tmp_path):
    devices = PRESETS[request.param](tmp_path)
    return tmp_path, {fixture.address: fixture for fixture in devices}


def expected_type(fixture) -> str:
    if fixture.physfn:
        return 'type-VF'
    return 'type-PF' if fixture.sriov_totalvfs else 'type-PCI'


def test_every_field_matches_the_fixture(tree):
    root, fixtures = tree
    devices = Sysfs(str(root), pcie_link=True).read_devices()
    assert [str(d.address) for d in devices] == sorted(fixtures, key=PciAddress.parse)
    vfs_of: dict[str, list[str]] = {}
    for fixture in fixtures.values():
        if fixture.physfn:
            vfs_of.setdefault(fixture.physfn, []).append(fixture.address)
    for device in devices:
        fixture = fixtures[str(device.address)]
        assert device.vendor_id == f'{fixture.vendor_id:04x}'
        assert device.product_id == f'{fixture.device_id:04x}'
        assert device.class_id == f'{fixture.class_code:06x}'
        assert device.subsystem_vendor_id == f'{fixture.subsystem_vendor_id:04x}'
        assert device.subsystem_product_id == f'{fixture.subsystem_device_id:04x}'
        assert device.revision == f'{fixture.revision:02x}'
        assert device.driver == fixture.driver
        assert device.numa_node == (None if fixture.numa_node < 0 else fixture.numa_node)
        assert device.iommu_group == fixture.iommu_group
        assert device.dev_type == expected_type(fixture)
        assert (str(device.physfn) if device.physfn else None) == fixture.physfn
        assert [str(vf) for vf in device.virtfns] == sorted(vfs_of.get(fixture.address, []), key=PciAddress.parse)
        assert device.sriov_totalvfs == fixture.sriov_totalvfs
        assert device.sriov_numvfs == (fixture.sriov_numvfs if fixture.sriov_totalvfs else None)
        assert device.netdevs == (sorted(fixture.netdevs) if fixture.class_code >> 16 == 0x02 else [])
        if fixture.link_speed is None:
            assert device.link == {}
        else:
            assert device.link['speed'] == fixture.link_speed
            assert device.link['width'] == fixture.link_width


def test_link_is_only_read_on_request(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path)
    assert all(device.link == {} for device in Sysfs(str(tmp_path)).read_devices())
    gpu = Sysfs(str(tmp_path), pcie_link=True).read_device(PciAddress.parse('0000:3c:00.0'))
    assert gpu.link == {'speed': '8.0 GT/s PCIe', 'width': 16, 'max_speed': '16.0 GT/s PCIe', 'max_width': 16}


def test_dual_socket_topology(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path)
    devices = {str(d.address): d for d in Sysfs(str(tmp_path)).read_devices()}
    pf = devices['0000:3b:00.0']
    assert pf.dev_type == 'type-PF' and pf.sriov_totalvfs == 64 and pf.sriov_numvfs == 4
    assert [str(vf) for vf in pf.virtfns] == ['0000:3b:02.0', '0000:3b:02.1', '0000:3b:02.2', '0000:3b:02.3']
    assert devices['0000:3b:02.2'].driver == 'vfio-pci' and str(devices['0000:3b:02.2'].physfn) == '0000:3b:00.0'
    assert devices['0000:5e:00.0'].dev_type == 'type-PF' and devices['0000:5e:00.0'].virtfns == []
    assert devices['0000:19:00.0'].driver is None                      # NVMe with no driver
    assert devices['0000:d8:00.0'].numa_node is None                   # the kernel's -1
    assert devices['10000:e0:00.0'].iommu_group is None                # behind VMD, 32-bit domain
    assert devices['0000:3a:00.0'].is_bridge and not devices['0000:3b:00.0'].is_bridge
    assert devices['0000:af:00.0'].iommu_group == devices['0000:af:00.1'].iommu_group == 24   # GPU + its audio


def test_links_are_relative_and_stay_in_the_tree(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path)
    root = os.path.realpath(tmp_path)
    for name in os.listdir(tmp_path / 'bus/pci/devices'):
        link = tmp_path / 'bus/pci/devices' / name
        assert not os.readlink(link).startswith('/')
        assert os.path.realpath(link).startswith(root + '/devices/pci')
        for attr in ('driver', 'iommu_group', 'physfn'):
            if os.path.islink(link / attr):
                assert not os.readlink(link / attr).startswith('/')
                assert os.path.realpath(link / attr).startswith(root + '/')


def test_host_without_iommu(tmp_path):
    sysfs_tree.no_iommu_host(tmp_path)
    assert all(device.iommu_group is None for device in Sysfs(str(tmp_path)).read_devices())


def test_missing_root_and_missing_bus_are_clear_errors(tmp_path):
    with pytest.raises(SysfsError, match=r"sysfs_root '.*/absent' does not exist"):
        Sysfs(str(tmp_path / 'absent')).read_devices()
    (tmp_path / 'bus').mkdir()
    with pytest.raises(SysfsError, match='has no bus/pci/devices directory'):
        Sysfs(str(tmp_path)).read_devices()


def test_a_device_removed_while_reading_is_skipped(tmp_path):
    sysfs_tree.no_iommu_host(tmp_path)
    sysfs = Sysfs(str(tmp_path))
    gone = PciAddress.parse('0000:7f:00.0')
    with pytest.raises(SysfsError, match='0000:7f:00.0 does not exist'):
        sysfs.read_device(gone)
    (tmp_path / 'bus/pci/devices/0000:7f:00.0').symlink_to('../../../devices/pci0000:00/0000:7f:00.0')  # dangling
    assert gone not in [device.address for device in sysfs.read_devices()]


def test_non_address_entries_are_ignored(tmp_path):
    sysfs_tree.no_iommu_host(tmp_path)
    (tmp_path / 'bus/pci/devices/..hidden').mkdir()
    (tmp_path / 'bus/pci/devices/not-an-address').mkdir()
    assert all(':' in str(address) for address in Sysfs(str(tmp_path)).addresses())
