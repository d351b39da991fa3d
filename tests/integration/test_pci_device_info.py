# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_device_info on this machine's real /sys, against a real libvirtd with real domains.

Hostdevs are only ever put in domain *configurations* (never started with one), so the host's
devices are not touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest

from ansible_collections.passthrough.libvirt.tests.integration.domains import hostdev_xml

libvirt = pytest.importorskip('libvirt')

SYS_PCI = '/sys/bus/pci/devices'
LSPCI_LINE = re.compile(r'^(?P<address>\S+) (?P<cls>[0-9a-f]{4}): (?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})(?: \(rev (?P<rev>[0-9a-f]{2})\))?')


def _sort_key(address: str):
    domain, bus, rest = address.split(':')
    slot, function = rest.split('.')
    return int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16)


def lspci_devices() -> dict[str, dict]:
    out = subprocess.run(['lspci', '-nDk'], capture_output=True, text=True, check=True).stdout
    devices: dict[str, dict] = {}
    current = None
    for line in out.splitlines():
        match = LSPCI_LINE.match(line)
        if match:
            current = devices[match['address']] = dict(match.groupdict(), driver=None)
        elif current is not None and line.strip().startswith('Kernel driver in use:'):
            current['driver'] = line.split(':', 1)[1].strip()
    return devices


@pytest.fixture(scope='module')
def target_address() -> str:
    """A real endpoint of this machine to name in domain configurations (never started with it)."""
    for name in sorted(os.listdir(SYS_PCI), key=_sort_key, reverse=True):
        with open(os.path.join(SYS_PCI, name, 'class'), encoding='ascii') as handle:
            if not handle.read().strip().startswith('0x06'):
                return name
    pytest.skip('this machine has no PCI endpoint')
    return ''


def test_real_sys_matches_ls_and_lspci(run_module, conn):
    run = run_module('pci_device_info')
    assert run.rc == 0, run.msg
    devices = run.result['pci_devices']
    assert [d['address'] for d in devices] == sorted(os.listdir(SYS_PCI), key=_sort_key)
    lspci = lspci_devices()
    assert sorted(lspci, key=_sort_key) == [d['address'] for d in devices]
    for device in devices:
        seen = lspci[device['address']]
        assert (device['vendor_id'], device['product_id']) == (seen['vendor'], seen['device']), device['address']
        assert device['class_id'][:4] == seen['cls'], device['address']
        assert device['driver'] == seen['driver'], device['address']
        if seen['rev']:
            assert device['extra_info']['revision'] == seen['rev']
    assert run.result['allocations_known'] is True
    assert run.result['hypervisor_hostname'] == conn.getHostname()


def test_defined_domain_allocates_and_undefine_frees(run_module, define_domain, target_address):
    attachment = str(uuid.uuid4())
    dom = define_domain(hostdev_xml(target_address, alias=f'ua-pci-{attachment}'))
    whitelist = [{'address': target_address, 'physical_network': 'physnet1'}]

    run = run_module('pci_device_info', address=target_address, device_spec=whitelist)
    assert run.rc == 0, run.msg
    device = run.result['pci_device']
    assert device['status'] == 'allocated'
    assert device['instance_uuid'] == dom.UUIDString()
    assert device['instance_name'] == dom.name()
    assert device['attachment_id'] == attachment
    assert device['whitelisted'] is True and device['tags'] == {'physical_network': 'physnet1'}
    assert device['extra_info']['allocated_persistent'] is True
    assert device['extra_info']['allocated_live'] is False

    # allocated wins over the whitelist: without one the device is still allocated
    run = run_module('pci_device_info', address=target_address)
    assert run.result['pci_device']['status'] == 'allocated'

    for key in (dom.name(), dom.UUIDString().upper()):
        run = run_module('pci_device_info', domain=key)
        assert run.rc == 0, run.msg
        assert [d['address'] for d in run.result['pci_devices']] == [target_address]

    dom.undefine()
    run = run_module('pci_device_info', address=target_address, device_spec=whitelist)
    device = run.result['pci_device']
    assert (device['status'], device['instance_uuid'], device['instance_name']) == ('available', None, None)
    run = run_module('pci_device_info', address=target_address, status='unmanaged')
    assert run.result['pci_device']['address'] == target_address


def test_running_domain_with_a_hostdev_in_its_persistent_config(run_module, define_domain, target_address):
    dom = define_domain(start=True)
    assert dom.isActive()
    run = run_module('pci_device_info', domain=dom.name())
    assert run.rc == 0 and run.result['pci_devices'] == []

    dom.attachDeviceFlags(hostdev_xml(target_address), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    run = run_module('pci_device_info', domain=dom.name())
    assert [d['address'] for d in run.result['pci_devices']] == [target_address]
    device = run.result['pci_devices'][0]
    assert device['status'] == 'allocated' and device['attachment_id'] is None
    assert device['extra_info']['allocated_persistent'] is True
    assert device['extra_info']['allocated_live'] is False

    # The live path here fails for real (no IOMMU on this machine): nothing becomes live-allocated.
    with pytest.raises(libvirt.libvirtError):
        dom.attachDeviceFlags(hostdev_xml(target_address), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    run = run_module('pci_device_info', address=target_address)
    assert run.result['pci_device']['extra_info']['allocated_live'] is False


def test_unknown_domain_is_one_clear_error(run_module, conn):
    run = run_module('pci_device_info', domain='pcitest-does-not-exist')
    assert run.rc == 1 and run.result['failed']
    assert run.msg == "domain: domain 'pcitest-does-not-exist' does not exist (no domain has that name or UUID)"
    assert 'Traceback' not in run.stderr + str(run.result)


def test_unreachable_uri_is_one_clear_error(run_module, tmp_path):
    uri = f'qemu+unix:///system?socket={tmp_path}/no-such-socket'
    run = run_module('pci_device_info', uri=uri)
    assert run.rc == 1
    assert run.msg.startswith(f"cannot connect to libvirt at uri '{uri}'")
    assert 'Traceback' not in run.stderr + str(run.result) and 'exception' not in run.result


def test_unreachable_uri_tolerated_when_libvirt_is_optional(run_module, tmp_path):
    run = run_module('pci_device_info', uri=f'qemu+unix:///system?socket={tmp_path}/none', require_libvirt=False)
    assert run.rc == 0
    assert run.result['allocations_known'] is False
    assert {d['status'] for d in run.result['pci_devices']} == {'unknown'}
    assert 'allocations unknown' in str(run.result['warnings'])  # a WarningSummary since ansible-core 2.19
