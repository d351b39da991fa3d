# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mediated devices read from fixture sysfs trees: each shape the kernel gives, and the writes against the kernel double."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import mdev_xml, parse_mdevs
from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs, MdevWriteFailed, parse_creatable
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import Mdev, MdevType, PciAddress, Vgpu
from ansible_collections.passthrough.libvirt.tests import mdev_tree, sysfs_tree

A = PciAddress.parse
U1, U2 = '6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20', '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11'
# The GRID types of an A100 before kernel 6.8 (vGPU as mdevs of the PCI function)
A100_TYPES = {'nvidia-470': {'name': 'GRID A100-4C', 'description': 'num_heads=1, frl_config=60, framebuffer=4096M',
                             'device_api': 'vfio-pci', 'available_instances': 10},
              'nvidia-471': {'name': 'GRID A100-8C', 'description': 'num_heads=1, frl_config=60, framebuffer=8192M',
                             'device_api': 'vfio-pci', 'available_instances': 0}}
MTTY_TYPES = {'mtty-1': {'name': 'Single port serial', 'device_api': 'vfio-pci', 'available_instances': 24},
              'mtty-2': {'name': 'Dual port serial', 'device_api': 'vfio-pci', 'available_instances': 12}}


@pytest.fixture
def root(tmp_path) -> Path:
    sysfs_tree.dual_socket_server(tmp_path)
    return tmp_path


def test_a_pci_parent_with_types_and_its_mdevs(root):
    parent = mdev_tree.device_dir(root, '0000:3c:00.0')
    mdev_tree.mdev_parent(root, parent, A100_TYPES)
    mdev_tree.mdev(root, parent, 'nvidia-470', U1)
    sysfs = MdevSysfs(str(root))
    (found,) = sysfs.parents()
    assert (found.name, found.address) == ('0000:3c:00.0', A('0000:3c:00.0'))
    assert found.types == [MdevType('nvidia-470', 'GRID A100-4C', 'num_heads=1, frl_config=60, framebuffer=4096M', 'vfio-pci', 10),
                           MdevType('nvidia-471', 'GRID A100-8C', 'num_heads=1, frl_config=60, framebuffer=8192M', 'vfio-pci', 0)]
    assert sysfs.mdevs() == [Mdev(U1, '0000:3c:00.0', 'nvidia-470')]


def test_a_virtual_parent(root):
    parent = mdev_tree.virtual_parent(root, 'mtty')
    mdev_tree.mdev_parent(root, parent, MTTY_TYPES)
    (found,) = MdevSysfs(str(root)).parents()
    assert (found.name, found.address, [t.type_id for t in found.types]) == ('mtty', None, ['mtty-1', 'mtty-2'])
    assert found.types[0].description is None          # mtty gives no description


def test_an_nvidia_sriov_vgpu_vf(root):
    mdev_tree.nvidia_vgpu(root, '0000:86:00.0', {556: 'NVIDIA A100-1-5C', 557: 'NVIDIA A100-2-10C'}, current=557)
    sysfs = MdevSysfs(str(root))
    assert sysfs.vgpu(A('0000:86:00.0')) == Vgpu({556: 'NVIDIA A100-1-5C', 557: 'NVIDIA A100-2-10C'}, 557)
    assert sysfs.vgpu(A('0000:3c:00.0')) is None
    assert parse_creatable('ID    : vGPU Name\n') == {} and parse_creatable(None) == {}


def test_no_mdev_support_reads_as_nothing(root):
    sysfs = MdevSysfs(str(root))
    assert sysfs.parents() == [] and sysfs.mdevs() == []


def test_create_and_remove_against_the_kernel_double_and_a_parent_with_no_free_instance(root):
    parent = mdev_tree.device_dir(root, '0000:3c:00.0')
    mdev_tree.mdev_parent(root, parent, A100_TYPES)
    kernel = mdev_tree.KernelDouble(str(root))
    kernel.create('0000:3c:00.0', 'nvidia-470', U2)
    assert kernel.mdevs() == [Mdev(U2, '0000:3c:00.0', 'nvidia-470')] and kernel.exists(U2)
    assert kernel.parents()[0].types[0].available_instances == 9
    with pytest.raises(MdevWriteFailed) as info:
        kernel.create('0000:3c:00.0', 'nvidia-471', U1)
    assert str(info.value) == f'create mdev {U1} of type nvidia-471 on 0000:3c:00.0: the kernel refused it: No space left on device'
    kernel.remove(U2)
    assert kernel.mdevs() == [] and kernel.parents()[0].types[0].available_instances == 10
    assert kernel.writes == [('class/mdev_bus/0000:3c:00.0/mdev_supported_types/nvidia-470/create', U2),
                             ('class/mdev_bus/0000:3c:00.0/mdev_supported_types/nvidia-471/create', U1),
                             (f'bus/mdev/devices/{U2}/remove', '1')]


@pytest.mark.parametrize('call, message', [
    (lambda s: s.create('0000:3c:00.0', '../../x', U1), f"mdev {U1}: parent '0000:3c:00.0' or type '../../x' is not one sysfs lists"),
    (lambda s: s.create('..', 'mtty-1', U1), f"mdev {U1}: parent '..' or type 'mtty-1' is not one sysfs lists"),
    (lambda s: s.remove('../../etc'), "mdev: '../../etc' is not a UUID like 6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20"),
    (lambda s: s.set_vgpu_type(A('0000:86:00.0'), -1), '0000:86:00.0: vGPU type -1 is not a type number'),
])
def test_nothing_unchecked_reaches_a_path(root, call, message):
    with pytest.raises(Exception) as info:
        call(MdevSysfs(str(root)))
    assert str(info.value) == message


def test_setting_a_vgpu_type_writes_current_vgpu_type(root):
    mdev_tree.nvidia_vgpu(root, '0000:86:00.0', {556: 'NVIDIA A100-1-5C'})
    sysfs = MdevSysfs(str(root))
    sysfs.set_vgpu_type(A('0000:86:00.0'), 556)
    assert sysfs.vgpu(A('0000:86:00.0')).current == 556
    sysfs.set_vgpu_type(A('0000:86:00.0'), 0)
    assert sysfs.vgpu(A('0000:86:00.0')).current is None


def test_mdev_hostdev_xml_round_trip():
    xml = mdev_xml(U1.upper(), U2)
    assert xml == (f"<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{U1}'/></source>"
                   f"<alias name='ua-pci-{U2}'/></hostdev>")
    (found,) = parse_mdevs(f"<domain><devices>{xml}<hostdev mode='subsystem' type='pci'/></devices></domain>")
    assert (found.uuid, found.attachment_id, found.model, found.inner_address) == (U1, U2, 'vfio-pci', None)
    # In a running domain libvirt gives the vfio-pci device a guest-side PCI address.
    placed = xml.replace('</hostdev>', "<address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/></hostdev>")
    (found,) = parse_mdevs(f'<domain><devices>{placed}</devices></domain>')
    assert found.inner_address == '0000:07:00.0'
