# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Binding and VF counts on fixture trees: the exact sysfs writes, in order.

The kernel's reaction to those writes comes from tests/kernel_double.py (a fixture tree cannot
react by itself); the real kernel does the same in the lab.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs, SysfsControl, SysfsError, SysfsWriteFailed
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.kernel_double import KernelDouble

GPU = PciAddress.parse('0000:3c:00.0')         # A100, bound to nvidia
NVME = PciAddress.parse('0000:19:00.0')        # no driver
VFIO_VF = PciAddress.parse('0000:3b:02.2')     # already vfio-pci with an override
PF = PciAddress.parse('0000:3b:00.0')          # X710, 4 of 64 VFs
CX5 = PciAddress.parse('0000:5e:00.0')         # ConnectX-5, 0 of 8 VFs


@pytest.fixture
def host(tmp_path):
    sysfs_tree.dual_socket_server(tmp_path)
    for driver in ('nvidia', 'nvme'):
        (tmp_path / 'bus/pci/drivers' / driver).mkdir(exist_ok=True)
    kernel = KernelDouble(tmp_path, native_drivers={'0000:3c:00.0': 'nvidia', '0000:19:00.0': 'nvme'})
    return SysfsControl(Sysfs(str(tmp_path)), kernel), kernel


def test_bind_to_vfio_is_the_kernels_recipe_in_order(host):
    control, kernel = host
    assert control.bind(GPU, 'vfio-pci') is True
    assert kernel.writes == [
        ('devices/pci0000:3a/0000:3a:02.0/0000:3c:00.0/driver_override', 'vfio-pci'),
        ('bus/pci/drivers/nvidia/unbind', '0000:3c:00.0'),
        ('bus/pci/drivers_probe', '0000:3c:00.0'),
    ]
    assert control.driver(GPU) == 'vfio-pci' and control.driver_override(GPU) == 'vfio-pci'
    assert control.sysfs.read_device(GPU).driver == 'vfio-pci'      # uevent follows the link


def test_bind_is_idempotent(host):
    control, kernel = host
    assert control.bind(VFIO_VF, 'vfio-pci') is False
    assert kernel.writes == []


def test_bind_an_unbound_device_skips_unbind(host):
    control, kernel = host
    control.bind(NVME, 'vfio-pci')
    assert [path.rsplit('/', 1)[-1] for path, _value in kernel.writes] == ['driver_override', 'drivers_probe']


def test_restore_gives_the_device_back_and_clears_the_override(host):
    control, kernel = host
    control.bind(GPU, 'vfio-pci')
    kernel.writes.clear()
    assert control.restore(GPU, 'nvidia') is True
    assert kernel.writes == [
        ('devices/pci0000:3a/0000:3a:02.0/0000:3c:00.0/driver_override', 'nvidia'),
        ('bus/pci/drivers/vfio-pci/unbind', '0000:3c:00.0'),
        ('bus/pci/drivers_probe', '0000:3c:00.0'),
        ('devices/pci0000:3a/0000:3a:02.0/0000:3c:00.0/driver_override', '\n'),
    ]
    assert control.driver(GPU) == 'nvidia' and control.driver_override(GPU) is None


def test_restore_to_no_driver(host):
    control, kernel = host
    control.bind(NVME, 'vfio-pci')
    kernel.writes.clear()
    assert control.restore(NVME, None) is True
    assert [value for _path, value in kernel.writes] == ['\n', '0000:19:00.0']
    assert control.driver(NVME) is None and control.restore(NVME, None) is False


def test_a_driver_that_does_not_bind_is_reported(host):
    control, _kernel = host
    with pytest.raises(SysfsWriteFailed, match=r'0000:3c:00.0: bound to no driver after probing, expected pci-stub \(is the pci-stub module loaded\?\)'):
        control.bind(GPU, 'pci-stub')


@pytest.mark.parametrize('name', ['../../x', 'vfio pci', '', None, 'a' * 65])
def test_driver_names_are_checked_before_any_write(host, name):
    control, kernel = host
    with pytest.raises(SysfsError, match='is not a kernel driver name'):
        control.bind(GPU, name)
    assert kernel.writes == []


def test_numvfs_goes_through_zero(host):
    control, kernel = host
    assert control.set_numvfs(PF, 8) is True
    assert kernel.writes == [('devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/sriov_numvfs', '0'),
                             ('devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/sriov_numvfs', '8')]
    kernel.writes.clear()
    assert control.set_numvfs(PF, 8) is False and kernel.writes == []
    assert control.set_numvfs(CX5, 2) is True
    assert kernel.writes == [('devices/pci0000:5d/0000:5d:00.0/0000:5e:00.0/sriov_numvfs', '2')]


def test_numvfs_limits(host):
    control, kernel = host
    with pytest.raises(SysfsError, match='0000:5e:00.0: 9 VFs asked, the device supports 0 to 8'):
        control.set_numvfs(CX5, 9)
    with pytest.raises(SysfsError, match='0000:3c:00.0 is not an SR-IOV physical function'):
        control.set_numvfs(GPU, 1)
    assert kernel.writes == []


def test_the_kernel_double_refuses_nonzero_to_nonzero(host):
    """The rule set_numvfs works around is real: the double enforces it like the kernel."""
    _control, kernel = host
    with pytest.raises(SysfsWriteFailed, match='Device or resource busy'):
        kernel.write(str(kernel.root / 'bus/pci/devices/0000:3b:00.0/sriov_numvfs'), '8')
