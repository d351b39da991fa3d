# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import gzip

from ansible_collections.passthrough.libvirt.plugins.module_utils import _pciids

SAMPLE = """\
# comment line
8086  Intel Corporation
\t1572  Ethernet Controller X710 for 10GbE SFP+
\t\t8086 0006  Ethernet Converged Network Adapter X710-2
\t154c  Ethernet Virtual Function 700 Series
10de  NVIDIA Corporation
\t20b5  GA100 [A100 PCIe 80GB]
C 02  Network controller
\t00  Ethernet controller
"""


def test_parse_vendors_devices_and_stops_at_classes():
    ids = _pciids.PciIds.parse(SAMPLE)
    assert ids.vendor_name('8086') == 'Intel Corporation'
    assert ids.device_name('8086', '1572') == 'Ethernet Controller X710 for 10GbE SFP+'
    assert ids.device_name('10de', '20b5') == 'GA100 [A100 PCIe 80GB]'
    assert ids.device_name('8086', '8086') is None       # a subsystem line is not a device
    assert ids.vendor_name('c 02') is None and ids.vendor_name('0200') is None
    assert ids.vendor_name('1af4') is None


def test_load_given_path_and_gzip(tmp_path):
    plain = tmp_path / 'pci.ids'
    plain.write_text(SAMPLE)
    packed = tmp_path / 'pci.ids.gz'
    with gzip.open(packed, 'wt') as handle:
        handle.write(SAMPLE)
    assert _pciids.load(str(plain)).vendor_name('10de') == 'NVIDIA Corporation'
    assert _pciids.load(str(packed)).device_name('8086', '154c') == 'Ethernet Virtual Function 700 Series'


def test_missing_database_means_no_names(tmp_path):
    ids = _pciids.load(str(tmp_path / 'absent.ids'))
    assert ids.vendor_name('8086') is None and ids.path is None


def test_system_database_is_parsed_once():
    assert _pciids.load() is _pciids.load()
