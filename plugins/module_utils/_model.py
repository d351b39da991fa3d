# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The collection's plain types, with no I/O: what every other layer passes around.

``PciAddress`` is the only way a user's string becomes a sysfs path or an XML attribute. ``PciDevice``
is one PCI function as the host describes it; ``Hostdev`` one passed-through device in a domain's
XML; ``Allocation`` which domain holds a device; ``DeviceState`` a device's status for guests.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import Refused, SpecError

# Domain: 1 to 8 hex digits (32-bit domains exist: Intel VMD puts its children in 10000+).
# Bus and slot: exactly 2 hex digits, function: 1 digit 0-7. Nothing else, so the result is
# always safe to join into a path (no '/', no '..') or to put into XML.
_ADDRESS_RE = re.compile(
    r'^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$'
)
_MAX_SLOT = 0x1F


class PciAddressError(Refused, ValueError):
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
        # %-formatting of the tuple itself: about twice as fast as an f-string of four attributes, and
        # a record of a host of thousands of functions spells thousands of addresses.
        return '%04x:%02x:%02x.%x' % self   # pylint: disable=consider-using-f-string

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


# -- booleans as Nova reads them ---------------------------------------------------------------------

# Whitelist tags (and alias keys) Nova reads as booleans.
BOOL_TAGS = ('managed', 'live_migratable', 'one_time_use')
_TRUE = ('1', 't', 'true', 'on', 'y', 'yes')
_FALSE = ('0', 'f', 'false', 'off', 'n', 'no')


def parse_bool(where: str, value: Any) -> bool:
    """A boolean as Nova reads ``managed`` and ``live_migratable`` (oslo's ``bool_from_string``, strict):
    true/false, yes/no, on/off, 1/0, t/f, y/n in any case and with surrounding spaces; YAML booleans too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise SpecError(f'{where}: {value!r} is not a boolean (true/false, yes/no, on/off, 1/0, t/f or y/n)')


# -- device types, statuses, pool counters -----------------------------------------------------------

DEV_TYPE_PCI = 'type-PCI'
DEV_TYPE_PF = 'type-PF'
DEV_TYPE_VF = 'type-VF'
DEV_TYPES = (DEV_TYPE_PCI, DEV_TYPE_PF, DEV_TYPE_VF)

STATUS_AVAILABLE = 'available'
STATUS_ALLOCATED = 'allocated'
STATUS_UNAVAILABLE = 'unavailable'
STATUS_UNMANAGED = 'unmanaged'
STATUS_UNKNOWN = 'unknown'
STATUSES = (STATUS_AVAILABLE, STATUS_ALLOCATED, STATUS_UNAVAILABLE, STATUS_UNMANAGED, STATUS_UNKNOWN)

# A pool's counters: count is the free devices (Nova's meaning), the others beside it.
COUNTERS = ('count', 'total', 'allocated', 'unavailable')

BRIDGE_CLASS_PREFIXES = ('0604', '0609')  # PCI-to-PCI and semi-transparent bridges

# This collection's attachments carry a user alias "ua-pci-<uuid>" (libvirt requires the "ua-" prefix).
ALIAS_PREFIX = 'ua-pci-'


@dataclass
class PciDevice:
    """One PCI function as sysfs describes it. Ids are lowercase hex strings without ``0x``."""

    address: PciAddress
    vendor_id: str
    product_id: str
    class_id: str
    subsystem_vendor_id: str | None
    subsystem_product_id: str | None
    revision: str | None
    driver: str | None
    numa_node: int | None
    iommu_group: int | None
    physfn: PciAddress | None
    sriov_totalvfs: int | None
    sriov_numvfs: int | None
    link: dict[str, object] = field(default_factory=dict)
    netdevs: list[str] = field(default_factory=list)
    virtfns: list[PciAddress] = field(default_factory=list)

    @property
    def is_bridge(self) -> bool:
        return self.class_id.startswith(BRIDGE_CLASS_PREFIXES)

    @property
    def dev_type(self) -> str:
        """Nova's device type: ``type-VF`` (has a PF), ``type-PF`` (SR-IOV capable) or ``type-PCI``."""
        if self.physfn is not None:
            return DEV_TYPE_VF
        if self.sriov_totalvfs:
            return DEV_TYPE_PF
        return DEV_TYPE_PCI


def attachment_id_of(alias: str | None) -> str | None:
    """The attachment id in this collection's user alias ``ua-pci-<uuid>``; None for any other alias."""
    if alias and alias.startswith(ALIAS_PREFIX):
        return alias[len(ALIAS_PREFIX):]
    return None


@dataclass(frozen=True)
class MdevHostdev:
    """One mediated device in one domain's XML (``<hostdev type='mdev'><source><address uuid=...>``)."""

    uuid: str
    alias: str | None
    model: str | None
    inner_address: str | None = None    # the guest-side PCI address libvirt gave it (vfio-pci model)

    @property
    def attachment_id(self) -> str | None:
        return attachment_id_of(self.alias)


@dataclass(frozen=True)
class Hostdev:
    """One PCI device in one domain's XML (``<hostdev type='pci'>`` or ``<interface type='hostdev'>``)."""

    address: PciAddress
    alias: str | None
    inner_address: str | None
    managed: bool
    kind: str  # 'hostdev' or 'interface'
    mac: str | None = None      # an interface's <mac address>
    vlan: int | None = None     # an interface's <vlan><tag id>

    @property
    def attachment_id(self) -> str | None:
        """The id of this collection's attachment (its ``ua-pci-<uuid>`` alias); None for anyone else's device."""
        return attachment_id_of(self.alias)


@dataclass
class DomainInfo:
    """A domain and the PCI devices of its live and persistent definitions (and its mediated devices by UUID)."""

    uuid: str
    name: str
    active: bool
    persistent: bool
    hostdevs_live: list[Hostdev]
    hostdevs_config: list[Hostdev]
    mdevs_live: list[MdevHostdev] = field(default_factory=list)
    mdevs_config: list[MdevHostdev] = field(default_factory=list)


@dataclass
class Allocation:
    """A device held by a domain, in its live configuration, its persistent one, or both."""

    address: PciAddress
    domain_uuid: str
    domain_name: str
    attachment_id: str | None
    inner_address: str | None
    live: bool = False
    persistent: bool = False


def allocations(domains: list[DomainInfo]) -> dict[PciAddress, Allocation]:
    """Which domain holds each device. A device in two domains' XML (only possible in inactive
    configs) is reported for the first domain by name."""
    result: dict[PciAddress, Allocation] = {}
    for info in domains:
        for hostdevs, live in ((info.hostdevs_live, True), (info.hostdevs_config, False)):
            for hostdev in hostdevs:
                allocation = result.get(hostdev.address)
                if allocation is None:
                    allocation = result[hostdev.address] = Allocation(
                        hostdev.address, info.uuid, info.name, hostdev.attachment_id, hostdev.inner_address)
                elif allocation.domain_uuid != info.uuid:
                    continue
                if live:
                    allocation.live = True
                    allocation.inner_address = hostdev.inner_address or allocation.inner_address
                else:
                    allocation.persistent = True
                allocation.attachment_id = allocation.attachment_id or hostdev.attachment_id
    return result


@dataclass(frozen=True)
class DeviceState:
    """A device's status for guests. ``spec`` is the whitelist entry that matches it (a DeviceSpec), if any."""

    device: PciDevice
    spec: Any
    status: str
    reason: str | None = None
    allocation: Allocation | None = None
    host_use: tuple[str, ...] = ()     # why the host needs it (whitelisted, unallocated devices only)
    hardware_changes: tuple[str, ...] = ()   # how it differs from what pci_whitelist recorded (whitelisted devices)
    out_of_service: Any = None         # the _day2.ServiceMark that takes it out of service (whitelisted devices)


@dataclass
class HostUse:
    """Why the host needs each device it uses (address -> reasons, in words an operator reads)."""

    reasons: dict[PciAddress, list[str]] = field(default_factory=dict)

    def add(self, address: PciAddress, reason: str) -> None:
        reasons = self.reasons.setdefault(address, [])
        if reason not in reasons:
            reasons.append(reason)

    def of(self, address: PciAddress) -> list[str]:
        return self.reasons.get(address, [])


# -- NIC VFs given as network interfaces (<interface type='hostdev'>) -----------------------------------

VLAN_MIN, VLAN_MAX = 1, 4094
LINK_STATES = ('auto', 'enable', 'disable')    # a VF's link state, as the PF's driver takes it
MAC_AUTO = 'auto'
INTERFACE_KEYS = ('vlan', 'mac', 'trust', 'spoofchk', 'link_state')
# The PF's per-VF settings libvirt does not set (it sets the MAC and the VLAN itself).
VF_SETTINGS = ('trust', 'spoofchk', 'link_state')
_MAC_RE = re.compile(r'^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$')


def parse_mac(where: str, value: Any) -> str:
    """A unicast Ethernet address ``xx:xx:xx:xx:xx:xx`` (either case), returned in lower case."""
    if not isinstance(value, str) or not _MAC_RE.match(value.strip().lower()):
        raise SpecError(f'{where}: {value!r} is not a MAC address (expected six hex pairs like 02:5a:11:00:00:01)')
    mac = value.strip().lower()
    if int(mac[:2], 16) & 1:
        raise SpecError(f'{where}: {mac} is a multicast address (the first octet is odd); a guest NIC needs a unicast one')
    if mac == '00:00:00:00:00:00':
        raise SpecError(f'{where}: {mac} is the null address')
    return mac


def auto_mac(seed: str, attempt: int = 0) -> str:
    """A locally administered unicast MAC derived from ``seed`` (an attachment id): the same id always gives the
    same address, so an attachment keeps its MAC however often it is attached again."""
    digest = hashlib.sha256(f'{seed}/{attempt}'.encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02] + list(digest[1:6])
    return ':'.join(f'{octet:02x}' for octet in octets)


@dataclass(frozen=True)
class InterfaceOptions:
    """How NIC VFs are given to a guest as network interfaces: ``mac`` is ``auto`` or a tuple of addresses
    (one per device, in order); a key left None is not set (libvirt's or the PF's default)."""

    vlan: int | None = None
    mac: Any = None
    trust: bool | None = None
    spoofchk: bool | None = None
    link_state: str | None = None

    @classmethod
    def parse(cls, where: str, value: Any, mac_list: bool = True) -> InterfaceOptions:
        """``mac_list``: whether ``mac`` may list addresses (not in an alias, which many domains share)."""
        if not isinstance(value, dict):
            raise SpecError(f'{where}: {value!r} must be a dict like {{vlan: 100, mac: auto, trust: true}}')
        unknown = sorted(str(key) for key in value if key not in INTERFACE_KEYS)
        if unknown:
            raise SpecError(f'{where}: unknown key(s) {", ".join(map(repr, unknown))} (known: {", ".join(INTERFACE_KEYS)})')
        vlan = value.get('vlan')
        if vlan is not None:
            text = str(vlan).strip() if isinstance(vlan, (int, str)) and not isinstance(vlan, bool) else ''
            if not text.isdigit() or not text.isascii() or not VLAN_MIN <= int(text) <= VLAN_MAX:
                raise SpecError(f'{where}.vlan: {vlan!r} must be a VLAN id from {VLAN_MIN} to {VLAN_MAX}')
            vlan = int(text)
        mac = value.get('mac')
        if isinstance(mac, str) and mac.strip().lower() == MAC_AUTO:
            mac = MAC_AUTO
        elif isinstance(mac, list) and mac_list:
            if not mac:
                raise SpecError(f'{where}.mac: an empty list gives no device a MAC address (use auto or list them)')
            mac = tuple(parse_mac(f'{where}.mac[{index}]', item) for index, item in enumerate(mac))
            twice = sorted({item for item in mac if mac.count(item) > 1})
            if twice:
                raise SpecError(f'{where}.mac: {", ".join(twice)} is listed more than once (each interface needs its own)')
        elif mac is not None:
            if mac_list:
                raise SpecError(f'{where}.mac: {mac!r} must be auto or a list of MAC addresses, one per device')
            raise SpecError(f'{where}.mac: {mac!r} must be auto here (an alias serves many domains; list MAC addresses '
                            'in pci_attachment\'s interface option)')
        flags = {key: parse_bool(f'{where}.{key}', value[key]) for key in ('trust', 'spoofchk') if value.get(key) is not None}
        link_state = value.get('link_state')
        if link_state is not None and link_state not in LINK_STATES:
            raise SpecError(f'{where}.link_state: {link_state!r} must be one of {", ".join(LINK_STATES)}')
        return cls(vlan=vlan, mac=mac, link_state=link_state, **flags)

    def __repr__(self) -> str:
        given = {key: getattr(self, key) for key in INTERFACE_KEYS if getattr(self, key) is not None}
        return '{' + ', '.join(f'{key}: {list(value) if isinstance(value, tuple) else value}' for key, value in given.items()) + '}'

    def merged(self, over: InterfaceOptions | None) -> InterfaceOptions:
        """These options with the keys ``over`` sets taking their place."""
        if over is None:
            return self
        return InterfaceOptions(*(getattr(over, key) if getattr(over, key) is not None else getattr(self, key)
                                  for key in INTERFACE_KEYS))

    def vf_settings(self) -> dict[str, Any]:
        """The PF-side settings this run sets (trust, spoofchk, link_state), those given only."""
        return {key: getattr(self, key) for key in VF_SETTINGS if getattr(self, key) is not None}


@dataclass(frozen=True)
class VfConfig:
    """One VF's settings as its PF's driver reports them (rtnetlink's IFLA_VF_INFO); None when not reported."""

    index: int
    mac: str | None = None
    vlan: int | None = None
    trust: bool | None = None
    spoofchk: bool | None = None
    link_state: str | None = None

    def settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in VF_SETTINGS}


@dataclass(frozen=True)
class NicInfo:
    """A NIC PF's network facts: its interface, that interface's state, its VFs' settings by index (None: unreadable)."""

    netdev: str
    operstate: str | None = None
    vfs: dict[int, VfConfig] | None = None


# -- mediated devices (mdev) and NVIDIA's SR-IOV vGPU ------------------------------------------------------

_UUID_RE = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
# A type id as the kernel names its directory (mtty-2, nvidia-35, i915-GVTg_V5_4): nothing that could leave a path
MDEV_TYPE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$')


def parse_uuid(where: str, value: Any) -> str:
    """A UUID in its canonical lower-case form (an mdev's name, an attachment id)."""
    text = value.strip().lower() if isinstance(value, str) else ''
    if not _UUID_RE.match(text):
        raise SpecError(f'{where}: {value!r} is not a UUID like 6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20')
    return text


@dataclass(frozen=True)
class MdevType:
    """One type a parent can create (``mdev_supported_types/<type_id>/``)."""

    type_id: str
    name: str | None
    description: str | None
    device_api: str | None
    available_instances: int | None


@dataclass
class MdevParent:
    """A device that can create mediated devices: a PCI function (``address``) or a virtual one (``mtty``)."""

    name: str                       # the parent's device name: a PCI address, or the virtual device's name
    address: PciAddress | None      # for a PCI parent
    types: list[MdevType] = field(default_factory=list)


@dataclass(frozen=True)
class Mdev:
    """A mediated device that exists (``/sys/bus/mdev/devices/<uuid>``)."""

    uuid: str
    parent: str
    type_id: str | None


@dataclass(frozen=True)
class Vgpu:
    """An NVIDIA SR-IOV vGPU VF (``nvidia/creatable_vgpu_types``, ``nvidia/current_vgpu_type``): type id -> name,
    and the type it has now (None: none, the kernel's 0)."""

    creatable: dict[int, str]
    current: int | None


# An mdev type as an entry or alias names it: a type id or name, '*' and '?' as wildcards; nothing that leaves a path.
MDEV_PATTERN = re.compile(r'^[A-Za-z0-9_.+*?() -]{1,128}$')


def parse_mdev_pattern(where: str, value: Any) -> str:
    """A type id (``nvidia-470``, ``mtty-2``) or name (``GRID A100-4C``), with ``*`` and ``?`` as wildcards."""
    if not isinstance(value, str) or not MDEV_PATTERN.match(value.strip()):
        raise SpecError(f'{where}: {value!r} must be an mdev type id or name like "nvidia-470" or "GRID A100-4C" ("*" and "?" as '
                        'wildcards)')
    return value.strip()


def mdev_type_matches(pattern: str, mdev_type: MdevType) -> bool:
    """A pattern matches a type by its id or its name, whole, case-sensitively (the kernel's names)."""
    return any(text is not None and fnmatch.fnmatchcase(text, pattern) for text in (mdev_type.type_id, mdev_type.name))
