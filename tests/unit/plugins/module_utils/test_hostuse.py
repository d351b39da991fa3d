# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the host uses, on a fixture tree with network facts given by a static reader and a
proc tree written as real files."""

from __future__ import annotations

import os

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._model import PciAddress
from ansible_collections.passthrough.libvirt.plugins.module_utils._hostuse import HostUseReader, KernelNetFacts, pci_address_in_path
from ansible_collections.passthrough.libvirt.tests import sysfs_tree


class StaticNet:
    """Network facts as given: the injectable reader the guards are tested with."""

    def __init__(self, addresses: dict[str, list[str]], default_route: set[str]) -> None:
        self._addresses = addresses
        self._default_route = default_route

    def addresses(self, ifname: str) -> list[str]:
        return self._addresses.get(ifname, [])

    def default_route_interfaces(self) -> set[str]:
        return self._default_route


def link(path, target) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


@pytest.fixture
def host(tmp_path):
    sys_root, proc = tmp_path / 'sys', tmp_path / 'proc'
    sysfs_tree.dual_socket_server(sys_root)
    devices = sys_root / 'bus/pci/devices'
    # ens2np0 (ConnectX-5) is enslaved to bond0, a virtual interface that has the address
    bond = sys_root / 'devices/virtual/net/bond0'
    bond.mkdir(parents=True)
    link(sys_root / 'class/net/bond0', bond)
    link(sys_root / 'class/net/ens2np0/master', bond)
    # / is on nvme0n1p2 of 0000:18:00.0; /data on a device-mapper volume over the NVMe behind VMD
    nvme_part = (devices / '0000:18:00.0').resolve() / 'nvme/nvme0/nvme0n1/nvme0n1p2'
    nvme_part.mkdir(parents=True)
    link(sys_root / 'dev/block/259:2', nvme_part)
    vmd_disk = (devices / '10000:e0:00.0').resolve() / 'nvme/nvme1/nvme1n1'
    vmd_disk.mkdir(parents=True)
    (vmd_disk / 'dev').write_text('259:5\n')
    link(sys_root / 'dev/block/259:5', vmd_disk)
    dm = sys_root / 'devices/virtual/block/dm-0'
    (dm / 'slaves').mkdir(parents=True)
    link(dm / 'slaves/nvme1n1', vmd_disk)
    link(sys_root / 'dev/block/253:0', dm)
    (proc / 'self').mkdir(parents=True)
    (proc / 'self/mountinfo').write_text(
        '22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n'
        '23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw\n'
        '40 22 253:0 / /data rw,relatime shared:9 - xfs /dev/mapper/vg-data rw\n')
    (proc / 'swaps').write_text('Filename\tType\tSize\tUsed\tPriority\n')
    net = StaticNet({'ens1f0': ['10.0.0.5'], 'bond0': ['192.0.2.10']}, {'ens1f1'})
    return HostUseReader(str(sys_root), str(proc), net).read()


def test_each_reason_names_the_device_and_why(host):
    assert host.of(PciAddress.parse('0000:3b:00.0')) == ['network interface ens1f0 has address 10.0.0.5']
    assert host.of(PciAddress.parse('0000:3b:00.1')) == ['network interface ens1f1 carries the default route']
    assert host.of(PciAddress.parse('0000:5e:00.0')) == ['network interface ens2np0 has address 192.0.2.10 through bond0']
    assert host.of(PciAddress.parse('0000:18:00.0')) == ['holds the mounted filesystem / (/dev/nvme0n1p2)']
    assert host.of(PciAddress.parse('10000:e0:00.0')) == ['holds the mounted filesystem /data (/dev/mapper/vg-data)']
    assert host.of(PciAddress.parse('0000:03:00.0')) == ['is the boot VGA device (the console)']


def test_devices_the_host_does_not_use_have_no_reason(host):
    assert set(map(str, host.reasons)) == {'0000:3b:00.0', '0000:3b:00.1', '0000:5e:00.0', '0000:18:00.0', '10000:e0:00.0', '0000:03:00.0'}
    assert host.of(PciAddress.parse('0000:3b:02.0')) == []      # a VF with an interface but no address
    assert host.of(PciAddress.parse('0000:19:00.0')) == []      # an NVMe nothing is mounted from


@pytest.mark.parametrize('path, expected', [
    ('/sys/devices/pci0000:00/0000:00:03.0/virtio3/net/eth0', '0000:00:03.0'),
    ('/sys/devices/pci0000:17/0000:17:00.0/0000:18:00.0/nvme/nvme0/nvme0n1/nvme0n1p2', '0000:18:00.0'),
    ('/sys/devices/pci0000:64/0000:64:05.5/pci10000:e0/10000:e0:00.0/nvme/nvme1/nvme1n1', '10000:e0:00.0'),
    ('/sys/devices/virtual/net/bond0', None),
])
def test_pci_address_in_path(path, expected):
    found = pci_address_in_path(path)
    assert (str(found) if found else None) == expected


def test_this_machine(tmp_path):
    """The kernel reader on this machine: the interface with the default route and the disk of /."""
    routes = KernelNetFacts().default_route_interfaces()
    use = HostUseReader().read()
    for ifname in routes:
        address = pci_address_in_path(os.path.realpath(f'/sys/class/net/{ifname}'))
        if address is not None:
            assert f'network interface {ifname} carries the default route' in use.of(address)
    root = os.stat('/').st_dev
    disk = pci_address_in_path(os.path.realpath(f'/sys/dev/block/{os.major(root)}:{os.minor(root)}'))
    if disk is not None:
        assert any(reason.startswith('holds the mounted filesystem / ') for reason in use.of(disk))


def test_global_ipv6_addresses_come_from_one_reading_of_if_inet6(tmp_path):
    """Global addresses are an interface's, link-local ones are not; the table is read once per facts object, so
    a second reading of the host (a new object, as every HostUseReader.read() makes) sees a change."""
    table = tmp_path / 'net' / 'if_inet6'
    table.parent.mkdir()
    table.write_text('20010db8000000000000000000000001 02 40 00 80     eth9\n'
                     'fe800000000000000000000000000001 02 40 20 80     eth9\n'
                     '20010db8000000000000000000000002 03 40 00 80    eth10\n', encoding='ascii')
    facts = KernelNetFacts(str(tmp_path))
    assert facts.addresses('eth9') == ['2001:db8::1']
    assert facts.addresses('eth10') == ['2001:db8::2']
    table.write_text('', encoding='ascii')
    assert facts.addresses('eth9') == ['2001:db8::1']
    assert KernelNetFacts(str(tmp_path)).addresses('eth9') == []
