# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-test of a lab hypervisor with raw libvirt calls: real VFIO hot-plug and unplug.

Runs inside a lab hypervisor (python3 + python3-libvirt), as root, and prints one JSON object.
1. Binds the two e1000e NICs to vfio-pci through sysfs.
2. Native-hot-plug domain: live attach of the first NIC, its guest-side address from the live XML,
   live detach confirmed by libvirt's device-removed event.
3. ACPI-hot-plug domain with no OS: live attach of the second NIC, then a detach that never
   completes: no event and the device still in the live XML after the wait.
Later issues replace these raw calls with the collection's modules.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import libvirt

SYS_PCI = '/sys/bus/pci/devices'
E1000E = ('0x8086', '0x10d3')
NATIVE, ACPI = 'pcitest-native', 'pcitest-acpi'
STUCK_WAIT = 10.0
REMOVE_WAIT = 30.0


def read(path: str) -> str:
    with open(path, encoding='ascii') as handle:
        return handle.read().strip()


def write(path: str, value: str) -> None:
    with open(path, 'w', encoding='ascii') as handle:
        handle.write(value)


def e1000e_addresses() -> list[str]:
    found = []
    for name in sorted(os.listdir(SYS_PCI)):
        base = os.path.join(SYS_PCI, name)
        if (read(f'{base}/vendor'), read(f'{base}/device')) == E1000E:
            found.append(name)
    return found


def bind_vfio(address: str) -> str:
    """The kernel's recipe: driver_override, unbind, drivers_probe; returns the driver now bound."""
    base = os.path.join(SYS_PCI, address)
    write(f'{base}/driver_override', 'vfio-pci')
    if os.path.exists(f'{base}/driver'):
        write(f'{base}/driver/unbind', address)
    write('/sys/bus/pci/drivers_probe', address)
    return os.path.basename(os.readlink(f'{base}/driver'))


def hostdev_xml(address: str, alias: str) -> str:
    domain, bus, rest = address.split(':')
    slot, function = rest.split('.')
    return (f"<hostdev mode='subsystem' type='pci' managed='yes'><source>"
            f"<address domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/></source>"
            f"<alias name='{alias}'/></hostdev>")


def guest_address(dom, alias: str) -> str | None:
    """The guest-side PCI address of our hostdev in the live XML; None when it is not there."""
    root = ET.fromstring(dom.XMLDesc(0))
    for hostdev in root.iterfind('devices/hostdev'):
        element = hostdev.find('alias')
        if element is not None and element.get('name') == alias:
            guest = hostdev.find('address')
            if guest is None:
                return '?'
            return '{}:{}:{}.{}'.format(*(guest.get(k, '0x0')[2:].zfill(w) for k, w in
                                          (('domain', 4), ('bus', 2), ('slot', 2), ('function', 1))))
    return None


class RemovalEvents:
    """libvirt's device-removed and removal-failed events, with a real event loop in a thread."""

    def __init__(self, conn) -> None:
        self.removed: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self.cond = threading.Condition()
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._removed, None)
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED, self._failed, None)

    def _removed(self, _conn, _dom, alias, _opaque) -> None:
        with self.cond:
            self.removed[alias] = time.monotonic()
            self.cond.notify_all()

    def _failed(self, _conn, _dom, alias, _opaque) -> None:
        with self.cond:
            self.failed[alias] = time.monotonic()
            self.cond.notify_all()

    def wait(self, alias: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while alias not in self.removed and alias not in self.failed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 'timeout'
                self.cond.wait(left)
        return 'removed' if alias in self.removed else 'removal-failed'


def run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def ensure_running(conn, name: str):
    dom = conn.lookupByName(name)
    if not dom.isActive():
        dom.create()
    return dom


def hotplug(conn, events: RemovalEvents, name: str, address: str, wait: float) -> dict:
    dom = ensure_running(conn, name)
    alias = f'ua-pci-{uuid.uuid4()}'
    result: dict = {'domain': name, 'address': address, 'alias': alias}
    started = time.monotonic()
    dom.attachDeviceFlags(hostdev_xml(address, alias), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    result['attach_s'] = round(time.monotonic() - started, 2)
    result['inner_address'] = guest_address(dom, alias)

    started = time.monotonic()
    try:
        dom.detachDeviceFlags(hostdev_xml(address, alias), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        result['detach_call'] = 'returned'
    except libvirt.libvirtError as exc:
        result['detach_call'] = f'error: {exc.get_error_message()}'
    result['detach_call_s'] = round(time.monotonic() - started, 2)
    result['event'] = events.wait(alias, wait)
    result['gone_s'] = round(time.monotonic() - started, 2)
    result['still_in_live_xml'] = guest_address(dom, alias) is not None
    return result


def main() -> int:
    libvirt.virEventRegisterDefaultImpl()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    threading.Thread(target=run_event_loop, daemon=True).start()
    conn = libvirt.open('qemu:///system')
    events = RemovalEvents(conn)
    report: dict = {'host': os.uname().nodename}
    nics = e1000e_addresses()
    report['e1000e'] = nics
    if len(nics) < 2:
        report['error'] = f'expected 2 e1000e NICs, found {nics}'
        print(json.dumps(report))
        return 1
    report['drivers'] = {address: bind_vfio(address) for address in nics}
    report['native'] = hotplug(conn, events, NATIVE, nics[0], REMOVE_WAIT)
    report['acpi'] = hotplug(conn, events, ACPI, nics[1], STUCK_WAIT)
    # The ACPI guest never lets go: destroying the domain is what releases the device.
    conn.lookupByName(ACPI).destroy()
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
