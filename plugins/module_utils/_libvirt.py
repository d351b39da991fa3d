# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""libvirt access: the only file of the collection that imports ``libvirt``.

Allocation truth is libvirt itself: every domain's live and inactive XML. A PCI device named in
a ``<hostdev type='pci'>`` or an ``<interface type='hostdev'>`` of any domain is allocated.
"""

from __future__ import annotations

import re
import threading
import traceback
import xml.etree.ElementTree as ET
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed, Refused, SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    ALIAS_PREFIX,
    LINK_STATES,
    MDEV_TYPE_RE,
    VLAN_MAX,
    VLAN_MIN,
    DomainInfo,
    Hostdev,
    MdevHostdev,
    PciAddress,
    PciAddressError,
    parse_mac,
    parse_uuid,
)


def libvirt_import_message(error: ImportError) -> str:
    """One line for a failed ``import libvirt``: missing bindings, or the real cause when they are there but cannot load.

    libvirt-python is a thin layer over the libvirt client library (``libvirt.so.0``); without that
    library the bindings are installed but their import fails, which is not the same fix.
    """
    if isinstance(error, ModuleNotFoundError) and error.name == 'libvirt':
        return 'the libvirt Python bindings are not installed (python3-libvirt or libvirt-python)'
    cause = ' '.join(str(error).split()) or type(error).__name__
    message = f'the libvirt Python bindings cannot be imported: {cause}'
    if 'cannot open shared object file' in cause:
        message += '; install the libvirt client library (libvirt-libs on EL, libvirt0 on Debian)'
    return message


LIBVIRT_IMPORT_ERROR: str | None
LIBVIRT_IMPORT_MESSAGE: str | None
try:
    import libvirt
except ImportError as _import_error:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
    LIBVIRT_IMPORT_MESSAGE = libvirt_import_message(_import_error)
else:
    LIBVIRT_IMPORT_ERROR = None
    LIBVIRT_IMPORT_MESSAGE = None


class LibvirtUnavailable(Refused):
    """libvirt cannot be used: bindings missing, the daemon at ``uri`` cannot be reached, or it stopped answering a read."""


class DomainNotFound(Refused):
    """No domain with that name or UUID."""


class LibvirtCallFailed(ChangeFailed):
    """A libvirt call that changes a domain failed; the message is libvirt's."""


def _guest_address(element: ET.Element) -> str | None:
    guest = element.find('address')
    if guest is None or guest.get('type') != 'pci':
        return None
    try:
        return str(PciAddress.from_libvirt(guest.attrib))
    except PciAddressError:
        return None


def domain_root(xml: str | ET.Element) -> ET.Element:
    """A domain XML parsed (an Element is taken as it is, so one parse can serve every reader below)."""
    return xml if isinstance(xml, ET.Element) else ET.fromstring(xml)


def parse_hostdevs(xml: str | ET.Element) -> list[Hostdev]:
    """PCI devices passed through in a domain XML: ``<hostdev type='pci'>`` and ``<interface type='hostdev'>``."""
    root = domain_root(xml)
    result = []
    for kind, element in [('hostdev', e) for e in root.iterfind('devices/hostdev')] + \
            [('interface', e) for e in root.iterfind('devices/interface')]:
        if kind == 'hostdev' and (element.get('mode', 'subsystem') != 'subsystem' or element.get('type') != 'pci'):
            continue
        if kind == 'interface' and element.get('type') != 'hostdev':
            continue
        source = element.find('source/address')
        if source is None or source.get('type', 'pci') != 'pci':
            continue
        try:
            address = PciAddress.from_libvirt(source.attrib)
        except PciAddressError:
            continue
        alias = element.find('alias')
        mac = vlan = None
        if kind == 'interface':
            mac_element, tag = element.find('mac'), element.find('vlan/tag')
            mac = mac_element.get('address', '').lower() or None if mac_element is not None else None
            vlan = _int(tag.get('id')) if tag is not None else None
        result.append(Hostdev(
            address=address,
            alias=alias.get('name') if alias is not None else None,
            inner_address=_guest_address(element),
            managed=element.get('managed', 'no') == 'yes',
            kind=kind,
            mac=mac,
            vlan=vlan,
        ))
    return result


def parse_mdevs(xml: str | ET.Element) -> list[MdevHostdev]:
    """Mediated devices in a domain XML: ``<hostdev mode='subsystem' type='mdev'><source><address uuid=...>``."""
    result = []
    for element in domain_root(xml).iterfind('devices/hostdev'):
        if element.get('mode', 'subsystem') != 'subsystem' or element.get('type') != 'mdev':
            continue
        source = element.find('source/address')
        try:
            uuid = parse_uuid('mdev', source.get('uuid') if source is not None else None)
        except SpecError:
            continue
        alias = element.find('alias')
        result.append(MdevHostdev(uuid, alias.get('name') if alias is not None else None, element.get('model'),
                                  _guest_address(element)))
    return result


def mdev_xml(uuid: str, attachment_id: str) -> str:
    """A mediated device (vfio-pci model) with this collection's user alias; ``uuid`` is parsed here again."""
    return (f"<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='{parse_uuid('mdev', uuid)}'/>"
            f"</source><alias name='{ALIAS_PREFIX}{attachment_id}'/></hostdev>")


def _int(text: str | None) -> int | None:
    try:
        return int(text, 10) if text is not None else None
    except ValueError:
        return None


def interface_macs(xml: str | ET.Element) -> dict[str, str]:
    """Every MAC address a domain's interfaces use (any type), with the interface it belongs to in words."""
    macs = {}
    for element in domain_root(xml).iterfind('devices/interface'):
        mac = element.find('mac')
        if mac is None or not mac.get('address'):
            continue
        alias = element.find('alias')
        name = alias.get('name') if alias is not None and alias.get('name') else None
        macs.setdefault(mac.get('address').lower(), f"interface type={element.get('type', '?')}" + (f' alias {name}' if name else ''))
    return macs


def _ignore_errors(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default; we report errors ourselves."""


class Libvirt:
    """A connection to one libvirt daemon."""

    def __init__(self, uri: str, read_only: bool = True) -> None:
        if libvirt is None:
            raise LibvirtUnavailable(LIBVIRT_IMPORT_MESSAGE or libvirt_import_message(ModuleNotFoundError(name='libvirt')))
        libvirt.registerErrorHandler(_ignore_errors, None)
        self.uri = uri
        try:
            self.conn = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailable(f'cannot connect to libvirt at uri {uri!r}: {exc.get_error_message()}') from None
        if self.conn is None:
            raise LibvirtUnavailable(f'cannot connect to libvirt at uri {uri!r}')

    def close(self) -> None:
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    def hostname(self) -> str | None:
        try:
            return self.conn.getHostname()
        except libvirt.libvirtError:
            return None

    def _domain_info(self, dom) -> DomainInfo | None:
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
            live = domain_root(dom.XMLDesc(0)) if active else None          # each definition parsed once
            config = domain_root(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if persistent else None
            return DomainInfo(dom.UUIDString(), dom.name(), active, persistent,
                              parse_hostdevs(live) if live is not None else [], parse_hostdevs(config) if config is not None else [],
                              parse_mdevs(live) if live is not None else [], parse_mdevs(config) if config is not None else [])
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None  # undefined or destroyed while we were listing
            raise LibvirtUnavailable(f'cannot read domain XML from {self.uri!r}: {exc.get_error_message()}') from None

    def domains(self) -> list[DomainInfo]:
        """Every domain (running or not) with its passed-through PCI devices, sorted by name."""
        try:
            doms = self.conn.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise LibvirtUnavailable(f'cannot list domains at {self.uri!r}: {exc.get_error_message()}') from None
        infos = [info for info in (self._domain_info(dom) for dom in doms) if info is not None]
        return sorted(infos, key=lambda info: info.name)


def find_domain(domains: list[DomainInfo], name_or_uuid: str) -> DomainInfo:
    """The domain whose name or UUID (any case) is ``name_or_uuid``."""
    wanted = name_or_uuid.strip()
    for info in domains:
        if info.name == wanted or info.uuid.lower() == wanted.lower():
            return info
    raise _not_found(name_or_uuid)


def _not_found(name_or_uuid: str) -> DomainNotFound:
    return DomainNotFound(f'domain: domain {name_or_uuid!r} does not exist (no domain has that name or UUID)')


# -- the write side: attach, detach, metadata, device-removed events ----------------------------------

METADATA_URI = 'urn:passthrough-libvirt:attachments:1'
METADATA_KEY = 'ptlv'


def hostdev_source_xml(address: PciAddress) -> str:
    """A PCI hostdev named only by its source address: what libvirt matches to detach anyone's device from a
    persistent definition (where a device without a user alias has none)."""
    return (f"<hostdev mode='subsystem' type='pci'><source><address domain='0x{address.domain:04x}' bus='0x{address.bus:02x}' "
            f"slot='0x{address.slot:02x}' function='0x{address.function:x}'/></source></hostdev>")


def hostdev_xml(address: PciAddress, attachment_id: str, interface: dict[str, Any] | None = None, managed: bool = True) -> str:
    """A managed PCI hostdev with this collection's user alias. ``address`` is a parsed PciAddress.

    ``managed`` False leaves the device on its driver (an NVIDIA vGPU VF stays on NVIDIA's vfio variant driver).

    With ``interface`` (a record's: ``mac`` parsed, ``vlan`` an int) the device is a NIC VF given as a network
    interface, ``<interface type='hostdev'>``: libvirt sets its MAC and VLAN on the PF before the guest sees it.
    """
    attrs = (f"domain='0x{address.domain:04x}' bus='0x{address.bus:02x}' slot='0x{address.slot:02x}' "
             f"function='0x{address.function:x}'")
    alias = f"<alias name='{ALIAS_PREFIX}{attachment_id}'/>"
    if interface is None:
        return (f"<hostdev mode='subsystem' type='pci' managed='{'yes' if managed else 'no'}'><source><address {attrs}/></source>"
                f"{alias}</hostdev>")
    source = f"<source><address type='pci' {attrs}/></source>"
    mac = f"<mac address='{parse_mac('mac', interface['mac'])}'/>" if interface.get('mac') else ''
    vlan = f"<vlan><tag id='{int(interface['vlan'])}'/></vlan>" if interface.get('vlan') else ''
    return f"<interface type='hostdev' managed='yes'>{mac}<driver name='vfio'/>{source}{vlan}{alias}</interface>"


# An interface record's attributes in the metadata: what it was given, where its VF is, what the PF had before.
_INTERFACE_ATTRS = ('mac', 'vlan', 'trust', 'spoofchk', 'link_state', 'pf', 'vf')
_WAS_ATTRS = ('trust', 'spoofchk', 'link_state')


def _text(value: Any) -> str:
    return ('true' if value else 'false') if isinstance(value, bool) else str(value)


def metadata_xml(records: list[dict[str, Any]]) -> str:
    """``records``: [{id, alias, address, interface}] in attach order; ``interface`` None or a dict of
    ``_INTERFACE_ATTRS`` with ``was`` (the PF's settings of the VF before this attachment changed them)."""
    root = ET.Element('attachments')
    for record in records:
        element = ET.SubElement(root, 'attachment', id=str(record['id']))
        if record.get('address'):
            element.set('address', str(record['address']))
        if record.get('alias'):
            element.set('alias', str(record['alias']))
        mdev = record.get('mdev')
        if mdev:
            ET.SubElement(element, 'mdev', {key: _text(mdev[key]) for key in _MDEV_ATTRS if mdev.get(key) is not None})
        vgpu = record.get('vgpu')
        if vgpu:
            ET.SubElement(element, 'vgpu', {key: str(vgpu[key]) for key in ('type', 'was') if vgpu.get(key) is not None})
        interface = record.get('interface')
        if interface:
            child = ET.SubElement(element, 'interface', {key.replace('_', '-'): _text(interface[key])
                                                         for key in _INTERFACE_ATTRS if interface.get(key) is not None})
            was = interface.get('was') or {}
            if was:
                ET.SubElement(child, 'was', {key.replace('_', '-'): _text(value) for key, value in was.items() if value is not None})
    return ET.tostring(root, encoding='unicode')


# An mdev attachment's record: the mdev, its parent and type, and whether this collection created it (and removes it).
_MDEV_ATTRS = ('uuid', 'parent', 'type', 'created')
_MDEV_PARENT = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$')


def _parse_mdev(element: ET.Element | None) -> dict[str, Any] | None:
    """An mdev record read back strictly: None when any part is not what this collection writes."""
    if element is None:
        return None
    try:
        uuid = parse_uuid('mdev', element.get('uuid'))
    except SpecError:
        return None
    parent, type_id, created = element.get('parent'), element.get('type'), element.get('created')
    if not parent or not _MDEV_PARENT.match(parent) or not type_id or not MDEV_TYPE_RE.match(type_id) or created not in ('true', 'false'):
        return None
    return {'uuid': uuid, 'parent': parent, 'type': type_id, 'created': created == 'true'}


def _setting(key: str, text: str | None) -> Any:
    """One attribute read back strictly; None when absent or not what this collection writes."""
    if text is None:
        return None
    if key in ('trust', 'spoofchk'):
        return {'true': True, 'false': False}.get(text)
    if key == 'link_state':
        return text if text in LINK_STATES else None
    if key == 'vlan':
        number = _int(text)
        return number if number is not None and VLAN_MIN <= number <= VLAN_MAX else None
    if key == 'vf':
        number = _int(text)
        return number if number is not None and number >= 0 else None
    if key == 'mac':
        try:
            return parse_mac('mac', text)
        except SpecError:
            return None
    return text if key == 'pf' and text and '/' not in text and not text.startswith('-') else None


def _parse_interface(element: ET.Element | None) -> dict[str, Any] | None:
    if element is None:
        return None
    interface = {key: _setting(key, element.get(key.replace('_', '-'))) for key in _INTERFACE_ATTRS}
    was = element.find('was')
    interface['was'] = {key: _setting(key, was.get(key.replace('_', '-'))) for key in _WAS_ATTRS
                        if was.get(key.replace('_', '-')) is not None} if was is not None else {}
    return interface


def parse_metadata(xml: str | None) -> list[dict[str, Any]]:
    if not xml:
        return []
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    records = []
    for e in root.iterfind('attachment'):
        if not e.get('id'):
            continue
        record = {'id': e.get('id'), 'alias': e.get('alias'), 'address': e.get('address'), 'interface': _parse_interface(e.find('interface'))}
        if e.find('mdev') is not None:
            record['mdev'] = _parse_mdev(e.find('mdev'))
        if e.find('vgpu') is not None:
            vgpu_type, was = _int(e.find('vgpu').get('type')), _int(e.find('vgpu').get('was'))
            record['vgpu'] = {'type': vgpu_type, 'was': was if was and was > 0 else None} if vgpu_type and vgpu_type > 0 else None
        records.append(record)
    return records


def numa_nodes(xml: str | ET.Element) -> set[int] | None:
    """The host NUMA nodes a domain's memory is bound to (``<numatune><memory nodeset=...>``); None without."""
    memory = domain_root(xml).find('numatune/memory')
    nodeset = memory.get('nodeset') if memory is not None else None
    if not nodeset:
        return None
    nodes: set[int] = set()
    try:
        for part in nodeset.split(','):
            part = part.strip()
            if part.startswith('^'):
                nodes.discard(int(part[1:]))
            elif '-' in part:
                low, high = part.split('-', 1)
                nodes.update(range(int(low), int(high) + 1))
            elif part:
                nodes.add(int(part))
    except ValueError:
        return None        # libvirt validates nodesets; an unreadable one means no placement to honour
    return nodes


class EventLoop:
    """libvirt's default event loop in a daemon thread; must be started before a connection is opened."""

    _started = False

    @classmethod
    def start(cls) -> None:
        if cls._started or libvirt is None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name='libvirt-events', daemon=True).start()
        cls._started = True


class DomainHandle:
    """One domain, opened read-write: its XML, device attach/detach and our metadata.

    Every libvirt error surfaces as one of the collection's errors: a read that fails (the daemon
    stopped, the domain vanished) as ``LibvirtUnavailable``, a change that fails as ``LibvirtCallFailed``.
    """

    def __init__(self, conn: Libvirt, name_or_uuid: str) -> None:
        self.conn = conn
        wanted = name_or_uuid.strip()
        self.dom = None
        for lookup in (conn.conn.lookupByName, conn.conn.lookupByUUIDString):   # one domain, not every domain's XML
            try:
                self.dom = lookup(wanted)
                break
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_INVALID_ARG):
                    raise self._unavailable('look up the domain', exc) from None
                continue
        if self.dom is None:
            raise _not_found(name_or_uuid)
        self.uuid, self.name = self.dom.UUIDString(), self.dom.name()
        self.removed: dict[str, str] = {}       # alias -> 'removed' | 'failed', from events
        self._events = threading.Condition()

    def _unavailable(self, what: str, exc) -> LibvirtUnavailable:
        return LibvirtUnavailable(f'libvirt at uri {self.conn.uri!r} did not answer when asked to {what}: {exc.get_error_message()}')

    def _read(self, what: str, call, *args):
        try:
            return call(*args)
        except libvirt.libvirtError as exc:
            raise self._unavailable(what, exc) from None

    def active(self) -> bool:
        return bool(self._read('say whether the domain runs', self.dom.isActive))

    def persistent(self) -> bool:
        return bool(self._read('say whether the domain is persistent', self.dom.isPersistent))

    def xml(self, inactive: bool = False) -> str:
        return self._read('give the domain XML', self.dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)

    @staticmethod
    def flags(live: bool, config: bool) -> int:
        return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0)

    def attach(self, xml: str, live: bool, config: bool) -> None:
        try:
            self.dom.attachDeviceFlags(xml, self.flags(live, config))
        except libvirt.libvirtError as exc:
            raise LibvirtCallFailed(exc.get_error_message()) from None

    def detach(self, alias: str, live: bool, config: bool) -> None:
        try:
            self.dom.detachDeviceAlias(alias, self.flags(live, config))
        except libvirt.libvirtError as exc:
            raise LibvirtCallFailed(exc.get_error_message()) from None

    def detach_xml(self, xml: str, live: bool, config: bool) -> None:
        """Detach the device the XML describes (another tool's, which has no alias of ours)."""
        try:
            self.dom.detachDeviceFlags(xml, self.flags(live, config))
        except libvirt.libvirtError as exc:
            raise LibvirtCallFailed(exc.get_error_message()) from None

    def metadata(self, live: bool) -> list[dict[str, str | None]]:
        try:
            xml = self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI,
                                    libvirt.VIR_DOMAIN_AFFECT_LIVE if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return []          # no metadata of ours yet
            raise self._unavailable("give the domain's metadata", exc) from None
        return parse_metadata(xml)

    def set_metadata(self, records: list[dict[str, str | None]], live: bool, config: bool) -> None:
        try:
            self.dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, metadata_xml(records) if records else None,
                                 METADATA_KEY, METADATA_URI, self.flags(live, config))
        except libvirt.libvirtError as exc:
            raise LibvirtCallFailed(f'cannot write the attachments metadata: {exc.get_error_message()}') from None

    def watch_removals(self) -> None:
        """Record device-removed and removal-failed events of this domain (needs EventLoop started)."""
        def record(dom, alias, what):
            if dom.UUIDString() == self.uuid:
                with self._events:
                    self.removed[alias] = what
                    self._events.notify_all()

        def removed(_conn, dom, alias, _opaque):
            record(dom, alias, 'removed')

        def failed(_conn, dom, alias, _opaque):
            record(dom, alias, 'failed')

        register = self.conn.conn.domainEventRegisterAny
        self._read('watch device removals', register, self.dom, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, removed, None)
        failed_id = getattr(libvirt, 'VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED', None)
        if failed_id is not None:
            self._read('watch device removals', register, self.dom, failed_id, failed, None)

    def removal_outcome(self, alias: str) -> str | None:
        """'removed' or 'failed' once libvirt's event for ``alias`` came; None before."""
        with self._events:
            return self.removed.get(alias)

    def wait_event(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when a removal event comes."""
        with self._events:
            self._events.wait(seconds)

    def live_aliases(self) -> set[str]:
        """Every device alias in the live definition."""
        return {alias.get('name') for alias in ET.fromstring(self.xml()).iterfind('devices/*/alias') if alias.get('name')}
