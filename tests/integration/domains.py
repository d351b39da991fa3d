# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""XML of the test domains: every one is named `pcitest-...`."""

from __future__ import annotations

URI = 'qemu:///system'
PREFIX = 'pcitest-'


def domain_xml(name: str, hostdevs: str = '', dom_type: str = 'kvm') -> str:
    """A diskless q35 domain that boots nothing: enough for libvirt to run it."""
    return f"""
<domain type='{dom_type}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    {hostdevs}
  </devices>
</domain>"""


def hostdev_xml(address: str, alias: str | None = None) -> str:
    domain, bus, rest = address.split(':')
    slot, function = rest.split('.')
    alias_xml = f"<alias name='{alias}'/>" if alias else ''
    return (f"<hostdev mode='subsystem' type='pci' managed='yes'><source>"
            f"<address domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/>"
            f"</source>{alias_xml}</hostdev>")


def second_attach_fails():
    """Test double: the real DomainHandle, except that its second attach call fails as libvirt would. A real
    daemon cannot be made to fail the second of two config-mode attaches on demand. ``calls`` counts them."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import DomainHandle, LibvirtCallFailed

    class SecondAttachFails(DomainHandle):
        calls = 0

        def attach(self, xml, live, config):
            type(self).calls += 1
            if type(self).calls == 2:
                raise LibvirtCallFailed('internal error: injected failure of the second attach')
            super().attach(xml, live, config)

    return SecondAttachFails
