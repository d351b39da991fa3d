# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The host as every module sees it: one ``HostSnapshot`` per run, the state file, the host lock.

A snapshot holds everything a run needs about the host - PCI devices from sysfs, the whitelist,
every domain's devices from libvirt, what the host itself uses, NUMA sockets - each part read at
most once, on first use, so a run that needs only some of it reads only that. Device states come
from the snapshot through ``_pools.assess`` and nowhere else, so pci_device_info,
hypervisor_pci_stats, pci_whitelist and pci_attachment cannot disagree on whether a device may be
given to a guest.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils import _pciids
from ansible_collections.passthrough.libvirt.plugins.module_utils._day2 import ServiceMark, hardware_changes, host_mark, load_marks, parse_identities
from ansible_collections.passthrough.libvirt.plugins.module_utils._devspec import Whitelist, vf_index
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import Refused
from ansible_collections.passthrough.libvirt.plugins.module_utils._iplink import IpLink
from ansible_collections.passthrough.libvirt.plugins.module_utils._mdev import MdevSysfs
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import Libvirt, LibvirtUnavailable
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import (
    Allocation,
    DeviceState,
    DomainInfo,
    HostUse,
    Mdev,
    MdevParent,
    NicInfo,
    PciAddress,
    PciDevice,
    VfConfig,
    Vgpu,
    allocations as domain_allocations,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import assess
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs

DEFAULT_CONFIG_PATH = '/etc/passthrough-libvirt/state.json'
STATE_VERSION = 1


# -- the state file ---------------------------------------------------------------------------------

class HostStateError(Refused):
    """The state file exists but cannot be read or is not ours, or the host lock cannot be had."""


def empty_state() -> dict[str, Any]:
    return {'version': STATE_VERSION, 'device_spec': None, 'original_drivers': {}, 'sriov': {}, 'identities': {}, 'out_of_service': [], 'drained': {}}


def load_state(config_path: str) -> dict[str, Any]:
    """The stored state, or an empty one when the file does not exist yet."""
    try:
        with open(config_path, encoding='utf-8') as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return empty_state()
    except (OSError, ValueError) as exc:
        raise HostStateError(f'config_path {config_path!r} cannot be read as a state file: {exc}') from None
    if not isinstance(state, dict) or not isinstance(state.get('version'), int):
        raise HostStateError(f'config_path {config_path!r} is not a passthrough.libvirt state file (no version)')
    if state['version'] > STATE_VERSION:
        raise HostStateError(
            f'config_path {config_path!r} has state version {state["version"]}, newer than this collection understands ({STATE_VERSION})')
    for key, value in empty_state().items():
        state.setdefault(key, value)
    return state


def save_state(config_path: str, state: dict[str, Any]) -> None:
    """Write the state atomically, mode 0600, its directory 0700; raises FileWriteFailed."""
    # Imported here: only the runs that write the state need it. pylint: disable-next=import-outside-toplevel
    from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import FileWriteFailed, write_atomic
    try:
        content = json.dumps(dict(state, version=STATE_VERSION), indent=2, sort_keys=True) + '\n'
    except (TypeError, ValueError) as exc:
        raise FileWriteFailed(f'config_path {config_path!r} cannot be written: {exc}') from None
    write_atomic('config_path', config_path, content, mode=0o600, dir_mode=0o700)


class HostLock:
    """An exclusive lock on the host (fcntl on ``<config_path>.lock``) for runs that change it.

    Two jobs at once (an AWX schedule and a person) then never choose the same device or rebind a
    device under each other: the second waits, up to ``timeout`` seconds, and sees the first's
    result. The kernel drops the lock when its holder dies, however it dies.
    """

    def __init__(self, config_path: str, timeout: float = 300.0, check_mode: bool = False) -> None:
        self.path = config_path + '.lock'
        self.timeout = timeout
        self.check_mode = check_mode
        self._fd: int | None = None

    def __enter__(self) -> HostLock:
        if self.check_mode:
            # Check mode changes nothing, not even the lock file; its plan may race a real run, which is harmless.
            return self
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o600)
        except OSError as exc:
            raise HostStateError(f'cannot open the host lock {self.path}: {exc.strerror}') from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise HostStateError(f'another run has held the host lock {self.path} for more than {self.timeout:g} s') from None
                time.sleep(0.1)
        self._fd = fd
        return self

    def __exit__(self, *_exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# -- the snapshot -----------------------------------------------------------------------------------

_UNREAD = object()


class HostSnapshot:
    """Everything a run knows about the host. Build one with ``read`` (each part read on first use)
    or directly from values (tests, the planners' tables): a part given is never read.

    ``domains`` None means libvirt could not be read (``libvirt_error`` says why): then no device
    is known to be free.
    """

    def __init__(self, *, whitelist: Whitelist, devices: Any = _UNREAD, domains: Any = _UNREAD, host_use: Any = _UNREAD,
                 numa_sockets: Any = _UNREAD, hostname: str | None = None, libvirt_error: str | None = None,
                 reader: HostReader | None = None, nics: dict[PciAddress, NicInfo | None] | None = None,
                 identities: dict[PciAddress, dict[str, Any]] | None = None, marks: list[ServiceMark] | None = None) -> None:
        self.whitelist = whitelist
        self.identities = dict(identities or {})    # what pci_whitelist recorded of each device it took
        self.marks = list(marks or [])              # out-of-service marks
        self.stored_device_spec: Any = None         # the whitelist pci_whitelist stored (read with the state file)
        self._devices = devices if devices is _UNREAD else {device.address: device for device in devices}
        self._domains = domains
        self._host_use = host_use
        self._numa_sockets = numa_sockets
        self._hostname = hostname
        self.libvirt_error = libvirt_error
        self._reader = reader
        self.sysfs = reader.sysfs if reader is not None else None
        self._states: dict[str | None, dict[PciAddress, DeviceState]] = {}
        self._groups: dict[int, list[PciAddress]] | None = None
        self._nics: dict[PciAddress, NicInfo | None] = dict(nics or {})
        self._links: dict[str, NicInfo] | None = None
        self._mdev_parents: list[MdevParent] | None = None
        self._mdevs: list[Mdev] | None = None

    @classmethod
    def read(cls, sysfs_root: str = '/sys', uri: str = 'qemu:///system', device_spec: Any = None,
             config_path: str = DEFAULT_CONFIG_PATH, require_libvirt: bool = True, pcie_link: bool = False,
             proc_root: str = '/proc', net: Any = None, read_host_use: bool | None = None,
             conn: Libvirt | None = None) -> HostSnapshot:
        """The host behind these options. ``device_spec`` None means the stored whitelist; ``conn``, a connection
        the run holds already, is the one the domains are read through (none: one is opened for that read).

        ``read_host_use`` None reads what the host uses only when the whitelist has entries (nothing
        else can be blocked by it). Raises the collection's errors (SysfsError, SpecError,
        HostStateError, LibvirtUnavailable when ``require_libvirt``).
        """
        sysfs = Sysfs(sysfs_root, pcie_link=pcie_link)
        sysfs.check()
        state = load_state(config_path)
        whitelist = Whitelist.parse(state.get('device_spec') if device_spec is None else device_spec)
        reader = HostReader(sysfs, uri, require_libvirt, proc_root, net, conn)
        snapshot = cls(whitelist=whitelist, reader=reader, identities=parse_identities(state.get('identities')),
                       marks=load_marks(state.get('out_of_service')))
        snapshot.stored_device_spec = state.get('device_spec')
        if read_host_use is False or (read_host_use is None and not whitelist.entries):
            snapshot._host_use = None
        return snapshot

    # -- parts, each read once --------------------------------------------------------------------
    @property
    def devices(self) -> dict[PciAddress, PciDevice]:
        if self._devices is _UNREAD:
            self._devices = {device.address: device for device in self._reader.devices()}
        return self._devices

    def device(self, address: PciAddress) -> PciDevice | None:
        """One device, without reading the others when they have not been read; None when the host lacks it."""
        if self._devices is _UNREAD:
            try:
                return self._reader.device(address)
            except Refused:
                return None
        return self._devices.get(address)

    def refresh_devices(self) -> dict[PciAddress, PciDevice]:
        """Read sysfs again (after this run created VFs or rebound devices); states are recomputed."""
        self._devices = {device.address: device for device in self._reader.devices()}
        self._states.clear()
        self._groups = None
        return self._devices

    @property
    def domains(self) -> list[DomainInfo] | None:
        if self._domains is _UNREAD:
            self._hostname, self._domains, self.libvirt_error = self._reader.domains()
        return self._domains

    def refresh_domains(self) -> list[DomainInfo] | None:
        self._domains = _UNREAD
        self._states.clear()
        return self.domains

    @property
    def allocations_known(self) -> bool:
        return self.domains is not None

    @property
    def allocations(self) -> dict[PciAddress, Allocation] | None:
        return domain_allocations(self.domains) if self.domains is not None else None

    @property
    def host_use(self) -> HostUse | None:
        """What the host uses, for the whitelisted devices (nothing else can be blocked by it)."""
        if self._host_use is _UNREAD:
            devices = self.devices
            whitelisted = [address for address, device in devices.items()
                           if not device.is_bridge and self.whitelist.match(device, devices) is not None]
            self._host_use = self._reader.host_use(whitelisted)
            wanted = set(whitelisted)
            for mdev in self.mdevs:       # a parent serving mediated devices is the host's: giving it whole ends them
                try:
                    address = PciAddress.parse(mdev.parent)
                except Refused:
                    continue
                if address in wanted:
                    self._host_use.add(address, f'it is the parent of mediated device {mdev.uuid} ({mdev.type_id})')
        return self._host_use

    @property
    def numa_sockets(self) -> dict[int, int]:
        if self._numa_sockets is _UNREAD:
            self._numa_sockets = self._reader.numa_sockets()
        return self._numa_sockets

    @property
    def hostname(self) -> str:
        if self._domains is _UNREAD and self._reader is not None:
            self.domains   # pylint: disable=pointless-statement  # libvirt names the host
        return self._hostname or socket.gethostname()

    @property
    def names(self) -> _pciids.PciIds:
        return _pciids.load()

    def nic(self, pf: PciAddress) -> NicInfo | None:
        """A NIC PF's interface and its VFs' settings (read with ip, once); None when the PF has no interface
        (not a NIC, or bound to vfio-pci)."""
        if pf not in self._nics:
            device = self.devices.get(pf)
            netdev = device.netdevs[0] if device is not None and device.class_id.startswith('02') and device.netdevs else None
            if netdev is None:
                self._nics[pf] = None
            else:
                if self._links is None:
                    self._links = self._reader.links() if self._reader is not None else {}
                self._nics[pf] = self._links.get(netdev) or NicInfo(netdev)
        return self._nics[pf]

    def refresh_nics(self) -> None:
        """Forget what ip said (after this run changed a VF's settings)."""
        self._nics.clear()
        self._links = None

    @property
    def mdev_parents(self) -> list[MdevParent]:
        """Every mdev parent with its types (none without a reader)."""
        if self._mdev_parents is None:
            self._mdev_parents = self._reader.mdev.parents() if self._reader is not None else []
        return self._mdev_parents

    @property
    def mdevs(self) -> list[Mdev]:
        """Every mediated device that exists."""
        if self._mdevs is None:
            self._mdevs = self._reader.mdev.mdevs() if self._reader is not None else []
        return self._mdevs

    def refresh_mdevs(self) -> None:
        self._mdev_parents = self._mdevs = None

    @property
    def vgpus(self) -> dict[PciAddress, Vgpu]:
        """Every NVIDIA SR-IOV vGPU VF's types, by address."""
        found = {}
        for device in self.devices.values():
            vgpu = self.vgpu(device)
            if vgpu is not None:
                found[device.address] = vgpu
        return found

    def vgpu(self, device: PciDevice) -> Vgpu | None:
        """An NVIDIA SR-IOV vGPU VF's types; None for every other device (only NVIDIA VFs are looked at)."""
        if device.vendor_id != '10de' or device.physfn is None or self._reader is None:
            return None
        return self._reader.mdev.vgpu(device.address)

    def vf_of(self, device: PciDevice) -> tuple[NicInfo | None, int | None, VfConfig | None]:
        """For a VF of a NIC: its PF's network facts, its index on the PF and its settings there (each None when unknown)."""
        if device.physfn is None or not device.class_id.startswith('02'):
            return None, None, None
        nic = self.nic(device.physfn)
        index = vf_index(device, self.devices)
        config = nic.vfs.get(index) if nic is not None and nic.vfs is not None and index is not None else None
        return nic, index, config

    # -- what follows from them -------------------------------------------------------------------
    def states(self, for_domain: str | None = None) -> dict[PciAddress, DeviceState]:
        """Every device's status, from ``_pools.assess``: the one judgement every module uses."""
        if for_domain not in self._states:
            self._states[for_domain] = assess(self.devices, self.whitelist, self.allocations, self.host_use, for_domain,
                                              self.identities, self.marks)
        return self._states[for_domain]

    def use_day2(self, identities: dict[PciAddress, dict[str, Any]], marks: list[ServiceMark]) -> None:
        """Judge by these records and marks from now on (pci_whitelist, after storing new ones)."""
        self.identities, self.marks = dict(identities), list(marks)
        self._states.clear()

    def hardware_changes(self) -> dict[PciAddress, list[str]]:
        """Every device pci_whitelist recorded that is not what it was (or is gone), with what changed."""
        return hardware_changes(self.devices, self.identities) if self.identities else {}

    @property
    def host_mark(self) -> ServiceMark | None:
        """The out-of-service mark on the whole host, if any."""
        return host_mark(self.marks)

    def group_members(self, device: PciDevice) -> list[PciAddress]:
        """Every address in the device's IOMMU group, itself included; [] when the IOMMU is off."""
        if device.iommu_group is None:
            return []
        if self._groups is None:
            self._groups = {}
            for other in self.devices.values():
                if other.iommu_group is not None:
                    self._groups.setdefault(other.iommu_group, []).append(other.address)
        return self._groups.get(device.iommu_group, [])

    def domain(self, uuid: str) -> DomainInfo | None:
        for info in self.domains or ():
            if info.uuid == uuid:
                return info
        return None


class HostReader:
    """The I/O behind a snapshot: sysfs, libvirt, the host's own use of devices."""

    def __init__(self, sysfs: Sysfs, uri: str, require_libvirt: bool, proc_root: str, net: Any,
                 conn: Libvirt | None = None) -> None:
        self.conn = conn      # the run's own connection, when it has one: not closed here
        self.iplink = IpLink()
        self.mdev = MdevSysfs(sysfs.root)
        self.sysfs = sysfs
        self.uri = uri
        self.require_libvirt = require_libvirt
        self.proc_root = proc_root
        self.net = net

    def devices(self) -> list[PciDevice]:
        return self.sysfs.read_devices()

    def device(self, address: PciAddress) -> PciDevice:
        return self.sysfs.read_device(address)

    def domains(self) -> tuple[str | None, list[DomainInfo] | None, str | None]:
        """(hostname, domains, error): libvirt's view; domains None with the error when it cannot be read."""
        conn = self.conn
        try:
            if conn is None:
                conn = Libvirt(self.uri)
        except LibvirtUnavailable as exc:
            if self.require_libvirt:
                raise
            return None, None, str(exc)
        try:
            return conn.hostname(), conn.domains(), None
        except LibvirtUnavailable as exc:
            if self.require_libvirt:
                raise
            return None, None, str(exc)
        finally:
            if conn is not self.conn:
                conn.close()

    def host_use(self, only: list[PciAddress]) -> HostUse:
        # Imported here: only a run with a whitelist reads what the host uses. pylint: disable-next=import-outside-toplevel
        from ansible_collections.passthrough.libvirt.plugins.module_utils._hostuse import HostUseReader
        return HostUseReader(self.sysfs.root, self.proc_root, self.net).read(only)

    def numa_sockets(self) -> dict[int, int]:
        return self.sysfs.numa_sockets()

    def links(self) -> dict[str, NicInfo]:
        return self.iplink.links()
