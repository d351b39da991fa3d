# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""PCI addresses: the only way a user's string becomes a sysfs path or an XML attribute."""

from __future__ import annotations

import re
from collections import namedtuple

# Domain: 1 to 8 hex digits (32-bit domains exist: Intel VMD puts its children in 10000+).
# Bus and slot: exactly 2 hex digits, function: 1 digit 0-7. Nothing else, so the result is
# always safe to join into a path (no '/', no '..') or to put into XML.
_ADDRESS_RE = re.compile(
    r'^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$'
)
_MAX_SLOT = 0x1F


class PciAddressError(ValueError):
    """A string or attribute set that is not a valid PCI address."""


_Fields = namedtuple('_Fields', 'domain bus slot function')


class PciAddress(_Fields):
    """A PCI function address: domain, bus, slot (device) and function, as integers.

    A tuple underneath: immutable, hashable, ordered by (domain, bus, slot, function) and cheap to
    build, which matters when a host has thousands of functions.
    """

    __slots__ = ()

    def __new__(cls, domain: int, bus: int, slot: int, function: int) -> PciAddress:
        for name, value, limit in (
            ('domain', domain, 0xFFFFFFFF),
            ('bus', bus, 0xFF),
            ('slot', slot, _MAX_SLOT),
            ('function', function, 0x7),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise PciAddressError(f'PCI address {name} {value!r} is out of range 0..{limit:#x}')
        return _Fields.__new__(cls, domain, bus, slot, function)

    @classmethod
    def parse(cls, text: object) -> PciAddress:
        """Parse ``DDDD:BB:SS.F`` or ``BB:SS.F`` (domain 0); hex, either case, surrounding spaces allowed."""
        if not isinstance(text, str):
            raise PciAddressError(f'invalid PCI address {text!r}: expected a string like 0000:3b:00.0')
        match = _ADDRESS_RE.match(text.strip())
        if not match:
            raise PciAddressError(
                f'invalid PCI address {text!r}: expected DDDD:BB:SS.F in hex (for example 0000:3b:00.0)'
            )
        domain, bus, slot, function = match.groups()
        slot_number = int(slot, 16)
        if slot_number > _MAX_SLOT:
            raise PciAddressError(f'invalid PCI address {text!r}: slot {slot_number:#04x} is above 0x1f')
        # The pattern bounds every other field, so the checks of __new__ can be skipped.
        return _Fields.__new__(cls, int(domain or '0', 16), int(bus, 16), slot_number, int(function, 16))

    @classmethod
    def from_libvirt(cls, attrs: dict[str, str]) -> PciAddress:
        """Build from a libvirt ``<address domain= bus= slot= function=>`` attribute dict."""
        values = {}
        for name in ('domain', 'bus', 'slot', 'function'):
            raw = attrs.get(name, '0' if name in ('domain', 'function') else None)
            if raw is None:
                raise PciAddressError(f'libvirt PCI address {attrs!r} has no {name}')
            try:
                # libvirt reads these with strtol base 0: "0x1f" is hex, "31" decimal.
                values[name] = int(raw, 16) if raw.lower().startswith('0x') else int(raw, 10)
            except ValueError:
                raise PciAddressError(f'libvirt PCI address {attrs!r} has an invalid {name} {raw!r}') from None
        return cls(values['domain'], values['bus'], values['slot'], values['function'])

    def __str__(self) -> str:
        return f'{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}'

    @property
    def dev_id(self) -> str:
        """libvirt's node device name, ``pci_0000_04_10_0`` (Nova's ``dev_id``)."""
        return f'pci_{self.domain:04x}_{self.bus:02x}_{self.slot:02x}_{self.function:x}'

    def libvirt_attrs(self) -> dict[str, str]:
        """Attributes of a libvirt ``<address type='pci'>`` element."""
        return {
            'domain': f'{self.domain:#06x}',
            'bus': f'{self.bus:#04x}',
            'slot': f'{self.slot:#04x}',
            'function': f'{self.function:#x}',
        }
