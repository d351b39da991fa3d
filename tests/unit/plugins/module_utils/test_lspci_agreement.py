# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The real lspci reads the same fixture trees and agrees with us on every device."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs
from ansible_collections.passthrough.libvirt.tests import sysfs_tree

pytestmark = pytest.mark.skipif(shutil.which('lspci') is None, reason='lspci (pciutils) is not installed; `make test` installs it')


def lspci_records(root) -> dict[str, dict[str, str]]:
    proc = subprocess.run(['lspci', '-A', 'linux-sysfs', '-O', f'sysfs.path={root}/bus/pci', '-vmmnnD', '-k'],
                          capture_output=True, text=True, check=True)
    # Without /lib/modules/$(uname -r) (containers) `-k` says so once on stderr; nothing else may appear.
    assert [line for line in proc.stderr.splitlines() if 'libkmod' not in line] == []
    records = {}
    for block in proc.stdout.strip().split('\n\n'):
        fields = dict(line.split(':\t', 1) for line in block.splitlines())
        records[fields['Slot']] = fields
    return records


def bracketed_id(value: str) -> str:
    """'Intel Corporation [8086]' -> '8086'."""
    return value.rsplit('[', 1)[1].rstrip(']')


@pytest.mark.parametrize('preset', [sysfs_tree.dual_socket_server, sysfs_tree.no_iommu_host, lambda root: sysfs_tree.synthetic(root, 200)])
def test_ids_class_and_driver_agree_with_lspci(tmp_path, preset):
    preset(tmp_path)
    ours = {str(device.address): device for device in Sysfs(str(tmp_path)).read_devices()}
    seen = lspci_records(tmp_path)
    assert sorted(seen) == sorted(ours)
    for address, device in ours.items():
        record = seen[address]
        assert bracketed_id(record['Vendor']) == device.vendor_id, address
        assert bracketed_id(record['Device']) == device.product_id, address
        assert bracketed_id(record['Class']) + record.get('ProgIf', '00') == device.class_id, address
        assert record.get('Rev', '00') == device.revision, address
        assert bracketed_id(record['SVendor']) == device.subsystem_vendor_id, address
        assert bracketed_id(record['SDevice']) == device.subsystem_product_id, address
        assert record.get('Driver') == device.driver, address
        assert record.get('NUMANode') == (str(device.numa_node) if device.numa_node is not None else None), address
        assert record.get('IOMMUGroup') == (str(device.iommu_group) if device.iommu_group is not None else None), address
