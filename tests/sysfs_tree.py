# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write realistic Linux sysfs PCI trees as real files, for tests and benchmarks.

The directory passed as ``root`` plays the role of ``/sys``.  The generated tree
follows the kernel's own layout closely enough that the real ``lspci`` reads it::

    lspci -A linux-sysfs -O sysfs.path=<root>/bus/pci -vmmnnD -k

What is written:

* ``devices/pciDDDD:BB/<address>/...``: one directory per device, nested under
  its upstream bridge (a VMD-style controller hosts the ``pciDDDD:BB`` root bus
  of its own domain inside its directory);
* ``bus/pci/devices/<address>``: relative links to the device directories;
* ``bus/pci/drivers/<name>/``: ``bind``, ``unbind``, ``new_id``, ``remove_id``
  and one relative link per bound device; ``bus/pci/drivers_probe``;
* ``kernel/iommu_groups/<N>/devices/<address>``: relative links;
* ``class/net/<ifname>`` and ``class/nvme/nvmeN``: relative links.

Each device directory holds the kernel's attribute files in the kernel's own
formats (``vendor``, ``class``, ``uevent``, ``modalias``, ``config`` ...), the
``driver``, ``iommu_group``, ``physfn`` and ``virtfnN`` links, SR-IOV and PCIe
link attributes, and ``net/<ifname>`` or ``nvme/nvmeN`` child directories.

Run as a script to write a preset::

    python tests/sysfs_tree.py synthetic /tmp/sys --count 5000
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PCI_CLASS_BRIDGE_PCI = 0x0604
PCI_CLASS_DISPLAY_VGA = 0x0300
PCI_CLASS_STORAGE_NVME = 0x0108

# PCI Express capability "device/port type" values.
PCIE_TYPE_ENDPOINT = 0x0
PCIE_TYPE_ROOT_PORT = 0x4
PCIE_TYPE_UPSTREAM = 0x5
PCIE_TYPE_DOWNSTREAM = 0x6
PCIE_TYPE_PCIE_TO_PCI = 0x7
PCIE_TYPE_RC_ENDPOINT = 0x9

CONFIG_SIZE_PCI = 256
CONFIG_SIZE_PCIE = 4096
CPUS_PER_NODE = 32
IFNAMSIZ = 16

_ADDRESS_RE = re.compile(r"([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
_SPEED_RE = re.compile(r"(\d+(?:\.\d+)?) GT/s(?: PCIe)?")
_SPEED_CODES = {"2.5": 1, "5": 2, "5.0": 2, "8": 3, "8.0": 3, "16": 4, "16.0": 4, "32": 5, "32.0": 5, "64": 6, "64.0": 6}
_DRIVER_FILES = ("bind", "unbind", "new_id", "remove_id")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@dataclass
class FixtureDevice:  # pylint: disable=too-many-instance-attributes
    """One PCI function of a fixture tree.

    Attributes:
        address: ``DDDD:BB:SS.F`` in lowercase hex, the kernel's ``pci_name()``;
            the domain may have more than 4 digits (Intel VMD: ``10000:e0:00.0``).
        vendor_id: 16-bit vendor id (``vendor`` file and config offset 0x00).
        device_id: 16-bit device id.
        class_code: 24-bit class code: base class, subclass, programming interface.
        revision: 8-bit revision id.
        subsystem_vendor_id: 16-bit subsystem vendor id.
        subsystem_device_id: 16-bit subsystem device id.
        driver: name of the bound driver, None when unbound.
        numa_node: value of ``numa_node``; -1 when the firmware gives no locality.
        iommu_group: IOMMU group number; None writes no ``iommu_group`` link
            (host without IOMMU, or a device behind Intel VMD).
        parent: address of the device whose directory holds this one: the
            upstream bridge (same domain), or a VMD-style controller hosting
            this device's root bus (other domain); None for a device on a
            top-level root bus.  VFs may leave it None: they always sit next to
            their PF.
        physfn: on a virtual function, the address of its physical function.
        sriov_totalvfs: on an SR-IOV physical function, ``sriov_totalvfs``.
        sriov_numvfs: number of VFs enabled; must match the VFs in the fixture.
        link_speed: ``current_link_speed`` text such as ``"8.0 GT/s PCIe"`` (older
            kernels' ``"8 GT/s"`` and ``"Unknown"`` are accepted); None makes a
            conventional PCI device: no PCI Express capability, no link files,
            256 bytes of config space.
        link_width: ``current_link_width``; ignored without ``link_speed``.
        netdevs: network interface names, written as ``net/<name>/`` (and
            ``class/net/<name>``); needs a driver.
        sriov_offset: routing-id offset of the first VF; None derives it from
            the VFs in the fixture (16 when there are none).
        sriov_stride: routing-id distance between VFs; None derives it (default 1).
        sriov_vf_device: device id of the VFs; None derives it from the VFs
            (the PF's own device id when there are none).
        max_link_speed: ``max_link_speed``; None means equal to ``link_speed``.
        max_link_width: ``max_link_width``; None means equal to ``link_width``.
        driver_override: content of ``driver_override``; None writes ``(null)``.
        boot_vga: value of ``boot_vga`` (written for VGA class devices only).
        secondary_bus: on a bridge, the secondary bus; None derives it from the
            devices below (a bridge with nothing below must set it).
        subordinate_bus: on a bridge, the subordinate bus; None derives it.
    """

    address: str
    vendor_id: int
    device_id: int
    class_code: int
    revision: int = 0
    subsystem_vendor_id: int = 0
    subsystem_device_id: int = 0
    driver: str | None = None
    numa_node: int = -1
    iommu_group: int | None = None
    parent: str | None = None
    physfn: str | None = None
    sriov_totalvfs: int | None = None
    sriov_numvfs: int = 0
    link_speed: str | None = "8.0 GT/s PCIe"
    link_width: int | None = 8
    netdevs: list[str] = field(default_factory=list)
    sriov_offset: int | None = None
    sriov_stride: int | None = None
    sriov_vf_device: int | None = None
    max_link_speed: str | None = None
    max_link_width: int | None = None
    driver_override: str | None = None
    boot_vga: bool = False
    secondary_bus: int | None = None
    subordinate_bus: int | None = None

    @property
    def is_bridge(self) -> bool:
        """True for a PCI-to-PCI bridge (class 0x0604xx)."""
        return self.class_code >> 8 == PCI_CLASS_BRIDGE_PCI

    @property
    def is_pcie(self) -> bool:
        """True when the device has a PCI Express capability."""
        return self.link_speed is not None


@dataclass(eq=False)
class _Node:  # pylint: disable=too-many-instance-attributes
    """A validated device with everything derived from the whole fixture."""

    dev: FixtureDevice
    domain: int
    bus: int
    slot: int
    func: int
    parent: _Node | None = None
    pf: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    vfs: list[_Node] = field(default_factory=list)
    rel_dir: str = ""
    secondary: int = 0
    subordinate: int = 0
    port_type: int = PCIE_TYPE_ENDPOINT
    vf_offset: int = 0
    vf_stride: int = 0
    vf_device: int = 0
    multifunction: bool = False
    nvme_index: int | None = None

    @property
    def address(self) -> str:
        """The PCI address."""
        return self.dev.address

    @property
    def rid(self) -> int:
        """Routing id (bus, device, function) within the domain."""
        return self.bus << 8 | self.slot << 3 | self.func

    @property
    def sort_key(self) -> tuple[int, int]:
        """Key ordering devices like the kernel lists them."""
        return self.domain, self.rid


def parse_address(address: str) -> tuple[int, int, int, int]:
    """Split ``DDDD:BB:SS.F`` into integers; raise ValueError when it is not canonical."""
    match = _ADDRESS_RE.fullmatch(address)
    if match is None:
        raise ValueError(f"invalid PCI address {address!r}: expected lowercase hex DDDD:BB:SS.F")
    domain, bus, slot = (int(part, 16) for part in match.groups()[:3])
    func = int(match.group(4))
    if slot > 0x1F or format_address(domain, bus, slot, func) != address or domain > 0x7FFFFFFF:
        raise ValueError(f"invalid PCI address {address!r}: not the kernel's spelling")
    return domain, bus, slot, func


def format_address(domain: int, bus: int, slot: int, func: int) -> str:
    """Spell an address the way the kernel does (``%04x:%02x:%02x.%d``)."""
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{func}"


def _relative(target_rel: str, link_rel: str) -> str:
    """Relative symlink text from ``link_rel`` to ``target_rel`` (plain paths relative to the root)."""
    target = target_rel.split("/")
    link_dir = link_rel.split("/")[:-1]
    common = 0
    for left, right in zip(target, link_dir):
        if left != right:
            break
        common += 1
    return "/".join([".."] * (len(link_dir) - common) + target[common:])


def _speed_code(text: str | None, address: str) -> int:
    """Encode a ``current_link_speed`` string as a PCIe link speed code."""
    if text is None or text == "Unknown":
        return 0
    match = _SPEED_RE.fullmatch(text)
    if match is None or match.group(1) not in _SPEED_CODES:
        raise ValueError(f"{address}: unsupported link speed {text!r}")
    return _SPEED_CODES[match.group(1)]


def _check_range(address: str, name: str, value: int | None, limit: int) -> None:
    """Raise ValueError when an integer field is outside 0..limit."""
    if value is not None and not 0 <= value <= limit:
        raise ValueError(f"{address}: {name}={value!r} is outside 0..{limit:#x}")


def _check_fields(dev: FixtureDevice) -> None:
    """Validate the fields of one device on their own."""
    addr = dev.address
    for name, limit in (("vendor_id", 0xFFFF), ("device_id", 0xFFFF), ("class_code", 0xFFFFFF), ("revision", 0xFF),
                        ("subsystem_vendor_id", 0xFFFF), ("subsystem_device_id", 0xFFFF), ("sriov_totalvfs", 0xFFFF),
                        ("sriov_numvfs", 0xFFFF), ("sriov_offset", 0xFFFF), ("sriov_stride", 0xFFFF),
                        ("sriov_vf_device", 0xFFFF), ("secondary_bus", 0xFF), ("subordinate_bus", 0xFF),
                        ("iommu_group", 0x7FFFFFFF)):
        _check_range(addr, name, getattr(dev, name), limit)
    if dev.numa_node < -1:
        raise ValueError(f"{addr}: numa_node must be -1 or a node number")
    if dev.is_pcie:
        _speed_code(dev.link_speed, addr)
        _speed_code(dev.max_link_speed, addr)
        _check_range(addr, "link_width", dev.link_width, 32)
        _check_range(addr, "max_link_width", dev.max_link_width, 32)
    if dev.physfn is not None and dev.sriov_totalvfs is not None:
        raise ValueError(f"{addr}: a VF (physfn set) cannot have sriov_totalvfs")
    if dev.sriov_totalvfs is None and (dev.sriov_numvfs or dev.sriov_offset or dev.sriov_stride or dev.sriov_vf_device):
        raise ValueError(f"{addr}: SR-IOV fields set without sriov_totalvfs")
    if dev.sriov_totalvfs is not None and not dev.is_pcie:
        raise ValueError(f"{addr}: SR-IOV needs a PCI Express device (link_speed is None)")
    if dev.netdevs and dev.driver is None:
        raise ValueError(f"{addr}: netdevs {dev.netdevs} need a bound driver")
    if not dev.is_bridge and (dev.secondary_bus is not None or dev.subordinate_bus is not None):
        raise ValueError(f"{addr}: secondary_bus/subordinate_bus set on a device that is not a bridge")
    for name in ([dev.driver] if dev.driver is not None else []) + list(dev.netdevs):
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{addr}: invalid name {name!r}")
    for name in dev.netdevs:
        if len(name) >= IFNAMSIZ:
            raise ValueError(f"{addr}: interface name {name!r} is longer than {IFNAMSIZ - 1} characters")


def _make_nodes(devices: Iterable[FixtureDevice]) -> dict[str, _Node]:
    """Parse and check every device on its own, rejecting duplicates."""
    nodes: dict[str, _Node] = {}
    for dev in devices:
        if not isinstance(dev, FixtureDevice):
            raise ValueError(f"not a FixtureDevice: {dev!r}")
        domain, bus, slot, func = parse_address(dev.address)
        _check_fields(dev)
        if dev.address in nodes:
            raise ValueError(f"duplicate device address {dev.address}")
        nodes[dev.address] = _Node(dev, domain, bus, slot, func)
    return nodes


def _link_vfs(nodes: dict[str, _Node]) -> None:
    """Attach every VF to its PF."""
    for node in nodes.values():
        if node.dev.physfn is None:
            continue
        pf = nodes.get(node.dev.physfn)
        if pf is None:
            raise ValueError(f"VF {node.address}: its PF {node.dev.physfn} is not in the fixture")
        if pf.dev.sriov_totalvfs is None:
            raise ValueError(f"VF {node.address}: {pf.address} is not an SR-IOV PF (sriov_totalvfs is None)")
        if pf.domain != node.domain or pf.dev.vendor_id != node.dev.vendor_id:
            raise ValueError(f"VF {node.address}: domain and vendor must match its PF {pf.address}")
        if node.dev.parent not in (None, pf.dev.parent):
            raise ValueError(f"VF {node.address}: parent {node.dev.parent} differs from its PF's {pf.dev.parent}")
        node.pf = pf
        pf.vfs.append(node)


def _link_parents(nodes: dict[str, _Node]) -> None:
    """Attach every device to the device whose directory holds it."""
    for node in nodes.values():
        parent_addr = node.pf.dev.parent if node.pf is not None else node.dev.parent
        if parent_addr is None:
            continue
        parent = nodes.get(parent_addr)
        if parent is None:
            raise ValueError(f"{node.address}: parent {parent_addr} is not in the fixture")
        if parent.domain == node.domain and not parent.dev.is_bridge:
            raise ValueError(f"{node.address}: parent {parent_addr} is not a bridge (class {parent.dev.class_code:06x})")
        if parent.domain != node.domain and parent.dev.is_bridge:
            raise ValueError(f"{node.address}: parent bridge {parent_addr} is in another domain")
        node.parent = parent
        parent.children.append(node)


def _assign_dirs(nodes: dict[str, _Node]) -> None:
    """Compute each device directory relative to the root, rejecting cycles."""
    for start in nodes.values():
        chain: list[_Node] = []
        node: _Node | None = start
        while node is not None and not node.rel_dir:
            if node in chain:
                raise ValueError(f"{start.address}: parent cycle through {node.address}")
            chain.append(node)
            node = node.parent
        for item in reversed(chain):
            bus_dir = f"pci{item.domain:04x}:{item.bus:02x}"
            if item.parent is None:
                item.rel_dir = f"devices/{bus_dir}/{item.address}"
            elif item.parent.domain != item.domain:
                item.rel_dir = f"{item.parent.rel_dir}/{bus_dir}/{item.address}"
            else:
                item.rel_dir = f"{item.parent.rel_dir}/{item.address}"


def _bridge_buses(node: _Node) -> None:
    """Set and check the secondary and subordinate bus of a bridge (children first)."""
    dev = node.dev
    local = [child for child in node.children if child.domain == node.domain]
    buses = {child.bus for child in local if child.pf is None}
    if dev.secondary_bus is None and not buses:
        raise ValueError(f"bridge {node.address}: nothing below it; set secondary_bus")
    node.secondary = dev.secondary_bus if dev.secondary_bus is not None else min(buses)
    if buses - {node.secondary}:
        raise ValueError(f"bridge {node.address}: devices below it are on buses {sorted(buses)}, not only {node.secondary:#04x}")
    if node.secondary <= node.bus:
        raise ValueError(f"bridge {node.address}: secondary bus {node.secondary:#04x} must be above its own bus")
    needed = max([node.secondary] + [child.subordinate if child.dev.is_bridge else child.bus for child in local])
    node.subordinate = dev.subordinate_bus if dev.subordinate_bus is not None else needed
    if node.subordinate < needed:
        raise ValueError(f"bridge {node.address}: subordinate bus {node.subordinate:#04x} below bus {needed:#04x} in use")
    for child in local:
        if child.bus < node.secondary:
            raise ValueError(f"{child.address}: bus below the secondary bus of its bridge {node.address}")


def _assign_buses(nodes: dict[str, _Node]) -> None:
    """Derive bridge bus ranges and check that every bus has one owner."""
    for node in sorted(nodes.values(), key=lambda item: -item.rel_dir.count("/")):
        if node.dev.is_bridge:
            _bridge_buses(node)
    owners: dict[tuple[int, int], str | None] = {}
    ranges: dict[int, list[_Node]] = {}
    for node in nodes.values():
        owner = node.parent.address if node.parent is not None else None
        if owners.setdefault((node.domain, node.bus), owner) != owner:
            raise ValueError(f"{node.address}: bus {node.bus:#04x} also holds devices with another parent")
        if node.dev.is_bridge:
            ranges.setdefault(node.domain, []).append(node)
    for node in nodes.values():
        if node.parent is None or node.parent.domain != node.domain:
            for bridge in ranges.get(node.domain, []):
                if bridge.secondary <= node.bus <= bridge.subordinate:
                    raise ValueError(f"{node.address}: on a root bus inside the bus range of bridge {bridge.address}")


def _assign_sriov(pf: _Node) -> None:
    """Order the VFs of a PF and derive or check offset, stride and VF device id."""
    dev = pf.dev
    pf.vfs.sort(key=lambda item: item.sort_key)
    if dev.sriov_numvfs != len(pf.vfs):
        raise ValueError(f"PF {pf.address}: sriov_numvfs={dev.sriov_numvfs} but the fixture has {len(pf.vfs)} VFs")
    if len(pf.vfs) > (dev.sriov_totalvfs or 0):
        raise ValueError(f"PF {pf.address}: {len(pf.vfs)} VFs exceed sriov_totalvfs={dev.sriov_totalvfs}")
    vfs = pf.vfs
    pf.vf_offset = dev.sriov_offset if dev.sriov_offset is not None else (vfs[0].rid - pf.rid if vfs else 16)
    pf.vf_stride = dev.sriov_stride if dev.sriov_stride is not None else (vfs[1].rid - vfs[0].rid if len(vfs) > 1 else 1)
    pf.vf_device = dev.sriov_vf_device if dev.sriov_vf_device is not None else (vfs[0].dev.device_id if vfs else dev.device_id)
    if pf.vf_offset < 1 or pf.vf_stride < 1:
        raise ValueError(f"PF {pf.address}: VF offset and stride must be positive")
    for index, vf in enumerate(vfs):
        expected = pf.rid + pf.vf_offset + index * pf.vf_stride
        if vf.rid != expected:
            raise ValueError(f"PF {pf.address}: VF {index} is {vf.address}, offset/stride place it at bus {expected >> 8:#04x} "
                             f"device {expected >> 3 & 0x1F:#04x} function {expected & 7}")
        if vf.dev.device_id != pf.vf_device:
            raise ValueError(f"VF {vf.address}: device id {vf.dev.device_id:04x} differs from the PF's VF device {pf.vf_device:04x}")


def _port_type(node: _Node) -> int:
    """PCI Express device/port type, from the device's place in the tree."""
    if not node.dev.is_bridge:
        return PCIE_TYPE_RC_ENDPOINT if node.parent is None else PCIE_TYPE_ENDPOINT
    below = [child for child in node.children if child.domain == node.domain]
    if below and not any(child.dev.is_pcie for child in below):
        return PCIE_TYPE_PCIE_TO_PCI
    if node.parent is None or node.parent.domain != node.domain:
        return PCIE_TYPE_ROOT_PORT
    return PCIE_TYPE_DOWNSTREAM if node.parent.port_type == PCIE_TYPE_UPSTREAM else PCIE_TYPE_UPSTREAM


def _finish(nodes: dict[str, _Node]) -> list[_Node]:
    """Derive per-device details that depend on other devices; return nodes in tree order."""
    ordered = sorted(nodes.values(), key=lambda item: item.rel_dir.count("/"))
    slots: dict[tuple[int, int, int], int] = {}
    netdevs: dict[str, str] = {}
    for node in ordered:
        node.port_type = _port_type(node)
        if node.dev.sriov_totalvfs is not None:
            _assign_sriov(node)
        if node.pf is None:
            key = (node.domain, node.bus, node.slot)
            slots[key] = slots.get(key, 0) + 1
        for name in node.dev.netdevs:
            if netdevs.setdefault(name, node.address) != node.address:
                raise ValueError(f"{node.address}: interface name {name} already used by {netdevs[name]}")
    ordered.sort(key=lambda item: item.sort_key)
    nvme_count = 0
    for node in ordered:
        node.multifunction = node.pf is None and slots[(node.domain, node.bus, node.slot)] > 1
        if node.dev.class_code >> 8 == PCI_CLASS_STORAGE_NVME and node.dev.driver == "nvme":
            node.nvme_index = nvme_count
            nvme_count += 1
    ordered.sort(key=lambda item: item.rel_dir.count("/"))
    return ordered


def _build(devices: Iterable[FixtureDevice]) -> list[_Node]:
    """Validate a fixture and derive everything needed to write it."""
    nodes = _make_nodes(devices)
    _link_vfs(nodes)
    _link_parents(nodes)
    _assign_dirs(nodes)
    _assign_buses(nodes)
    return _finish(nodes)


def _pcie_capability(node: _Node, next_ptr: int) -> bytes:
    """PCI Express capability structure (version 2), 0x3c bytes."""
    dev = node.dev
    cur_speed = _speed_code(dev.link_speed, node.address)
    max_speed = _speed_code(dev.max_link_speed or dev.link_speed, node.address)
    cur_width = dev.link_width or 0
    max_width = dev.max_link_width if dev.max_link_width is not None else cur_width
    is_port = node.port_type in (PCIE_TYPE_ROOT_PORT, PCIE_TYPE_DOWNSTREAM)
    flags = 0x2 | node.port_type << 4 | (0x100 if is_port else 0)
    devcap = 0x8001 | (0 if dev.is_bridge else 0x10000000)
    linkcap = max_speed | max_width << 4 | (0x100000 if is_port else 0) | (node.slot << 24 if is_port else 0)
    linksta = cur_speed | cur_width << 4 | 0x1000 | (0x2000 if is_port and cur_speed else 0)
    speeds = ((1 << max_speed) - 1) << 1
    cap = bytearray(0x3C)
    struct.pack_into("<BBHIHHIHH", cap, 0, 0x10, next_ptr, flags, devcap, 0x2830, 0, linkcap, 0x0040, linksta)
    struct.pack_into("<IHHI", cap, 0x24, 0x00000010, 0, 0, speeds)
    struct.pack_into("<H", cap, 0x30, max_speed)
    return bytes(cap)


def _sriov_capability(node: _Node) -> bytes:
    """SR-IOV extended capability, 0x40 bytes, ending the extended list."""
    dev = node.dev
    total = dev.sriov_totalvfs or 0
    control = 0x19 if node.vfs else 0x10
    cap = bytearray(0x40)
    struct.pack_into("<IIHHHHHBBHHHH", cap, 0, 0x00010010, 0, control, 0, total, total, len(node.vfs), node.func, 0,
                     node.vf_offset, node.vf_stride, 0, node.vf_device)
    struct.pack_into("<II", cap, 0x1C, 0x553, 0x1)
    return bytes(cap)


def _capabilities(node: _Node) -> list[tuple[int, bytes]]:
    """Standard capabilities as (offset, bytes), chained from offset 0x40."""
    dev = node.dev
    chain: list[tuple[int, bytes | None]] = [(8, struct.pack("<BBHHBB", 0x01, 0, 0x0003, 0x0008, 0, 0))]
    if dev.is_bridge and dev.subsystem_vendor_id:
        chain.append((8, struct.pack("<BBHHH", 0x0D, 0, 0, dev.subsystem_vendor_id, dev.subsystem_device_id)))
    if dev.is_pcie:
        chain.append((0x3C, None))
    placed: list[tuple[int, bytes]] = []
    offset = 0x40
    for index, (size, body) in enumerate(chain):
        next_ptr = 0 if index == len(chain) - 1 else (offset + size + 0xF) & ~0xF
        data = _pcie_capability(node, next_ptr) if body is None else body[:1] + bytes([next_ptr]) + body[2:]
        placed.append((offset, data))
        offset = next_ptr
    return placed


def _config_space(node: _Node, irq: int) -> bytes:
    """Config space bytes consistent with the device's ids, type and capabilities."""
    dev = node.dev
    config = bytearray(CONFIG_SIZE_PCIE if dev.is_pcie else CONFIG_SIZE_PCI)
    command = 0x0406 if dev.driver is not None else 0
    if dev.is_bridge:
        command = 0x0407
    header = (1 if dev.is_bridge else 0) | (0x80 if node.multifunction else 0)
    struct.pack_into("<HHHHBBBBBBBB", config, 0, dev.vendor_id, dev.device_id, command, 0x0010, dev.revision,
                     dev.class_code & 0xFF, dev.class_code >> 8 & 0xFF, dev.class_code >> 16, 0x10, 0, header, 0)
    if dev.is_bridge:
        struct.pack_into("<BBBBBBH", config, 0x18, node.bus, node.secondary, node.subordinate, 0, 0xF0, 0x00, 0)
        struct.pack_into("<HHHH", config, 0x20, 0xFFF0, 0x0000, 0xFFF1, 0x0001)
    else:
        struct.pack_into("<HH", config, 0x2C, dev.subsystem_vendor_id, dev.subsystem_device_id)
    capabilities = _capabilities(node)
    struct.pack_into("<B", config, 0x34, capabilities[0][0])
    struct.pack_into("<BB", config, 0x3C, irq & 0xFF, 0 if node.pf is not None else 1)
    for offset, data in capabilities:
        config[offset:offset + len(data)] = data
    if dev.sriov_totalvfs is not None:
        sriov = _sriov_capability(node)
        config[0x100:0x100 + len(sriov)] = sriov
    return bytes(config)


def _modalias(dev: FixtureDevice) -> str:
    """The kernel's ``pci:v...`` module alias."""
    cls = dev.class_code
    return (f"pci:v{dev.vendor_id:08X}d{dev.device_id:08X}sv{dev.subsystem_vendor_id:08X}sd{dev.subsystem_device_id:08X}"
            f"bc{cls >> 16:02X}sc{cls >> 8 & 0xFF:02X}i{cls & 0xFF:02X}")


def _uevent(dev: FixtureDevice) -> str:
    """The ``uevent`` attribute as the kernel prints it."""
    lines = [f"DRIVER={dev.driver}"] if dev.driver is not None else []
    lines += [f"PCI_CLASS={dev.class_code:04X}", f"PCI_ID={dev.vendor_id:04X}:{dev.device_id:04X}",
              f"PCI_SUBSYS_ID={dev.subsystem_vendor_id:04X}:{dev.subsystem_device_id:04X}",
              f"PCI_SLOT_NAME={dev.address}", f"MODALIAS={_modalias(dev)}"]
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def _cpu_files(node_count: int, node: int) -> tuple[str, str]:
    """(local_cpus, local_cpulist) for a NUMA node of a host with ``node_count`` nodes.

    Each node has CPUS_PER_NODE CPUs: half of them in the first half of the
    CPU numbers, their hyperthread siblings in the second half; -1 means all CPUs.
    """
    total = node_count * CPUS_PER_NODE
    half = CPUS_PER_NODE // 2
    if node < 0:
        ranges = [(0, total - 1)]
    else:
        first = node % node_count * half
        ranges = [(first, first + half - 1), (total // 2 + first, total // 2 + first + half - 1)]
    mask = 0
    for low, high in ranges:
        mask |= ((1 << (high - low + 1)) - 1) << low
    words = [f"{mask >> shift & 0xFFFFFFFF:08x}" for shift in range(total - 32, -1, -32)]
    return ",".join(words) + "\n", ",".join(f"{low}-{high}" for low, high in ranges) + "\n"


class _Writer:
    """Writes validated nodes below a root directory."""

    def __init__(self, root: Path, nodes: Sequence[_Node]) -> None:
        self.root = str(root)
        self.nodes = nodes
        self.made: set[str] = set()
        self.node_count = max(1, max((node.dev.numa_node for node in nodes), default=0) + 1)

    def path(self, rel: str) -> str:
        """Absolute path of a path relative to the root."""
        return f"{self.root}/{rel}"

    @staticmethod
    def text(path: str, content: str | bytes) -> None:
        """Write one attribute file (os.open is much faster than open() for many tiny files)."""
        handle = os.open(path, _CREATE_FLAGS, 0o644)
        try:
            os.write(handle, content.encode("ascii") if isinstance(content, str) else content)
        finally:
            os.close(handle)

    def link(self, link_rel: str, target_rel: str) -> None:
        """Create ``link_rel`` as a relative symlink to ``target_rel`` (both relative to the root)."""
        os.symlink(_relative(target_rel, link_rel), self.path(link_rel))

    def write(self) -> None:
        """Write the whole tree."""
        for rel in ("devices", "bus/pci/devices", "bus/pci/drivers", "bus/pci/slots", "kernel/iommu_groups", "class/net", "class/nvme"):
            os.makedirs(self.path(rel), exist_ok=True)
        self.text(self.path("bus/pci/drivers_probe"), "")
        self.text(self.path("bus/pci/drivers_autoprobe"), "1\n")
        self.text(self.path("bus/pci/rescan"), "")
        for node in self.nodes:
            self.device(node)
        for node in self.nodes:
            for index, vf in enumerate(node.vfs):
                self.link(f"{node.rel_dir}/virtfn{index}", vf.rel_dir)
                self.link(f"{vf.rel_dir}/physfn", node.rel_dir)

    def root_bus(self, node: _Node) -> None:
        """Create the ``pciDDDD:BB`` directory holding a device on a root bus, once."""
        bus_rel = os.path.dirname(node.rel_dir)
        if bus_rel not in self.made:
            self.made.add(bus_rel)
            os.makedirs(self.path(f"{bus_rel}/pci_bus/{node.domain:04x}:{node.bus:02x}"))
            self.text(self.path(f"{bus_rel}/uevent"), "")

    def device(self, node: _Node) -> None:
        """Write one device directory and the links pointing at it."""
        dev = node.dev
        if node.parent is None or node.parent.domain != node.domain:
            self.root_bus(node)
        os.mkdir(self.path(node.rel_dir))
        self.attributes(node)
        self.link(f"bus/pci/devices/{dev.address}", node.rel_dir)
        self.link(f"{node.rel_dir}/subsystem", "bus/pci")
        if dev.driver is not None:
            self.bind(node, dev.driver)
        if dev.iommu_group is not None:
            self.group(node)
        for index, name in enumerate(dev.netdevs):
            self.netdev(node, name, index)
        if node.nvme_index is not None:
            name = f"nvme{node.nvme_index}"
            os.makedirs(self.path(f"{node.rel_dir}/nvme/{name}"))
            self.link(f"{node.rel_dir}/nvme/{name}/device", node.rel_dir)
            self.link(f"class/nvme/{name}", f"{node.rel_dir}/nvme/{name}")

    def attributes(self, node: _Node) -> None:
        """Write the regular attribute files of a device."""
        dev = node.dev
        irq = 0 if node.pf is not None else 16 + (node.domain + node.bus + node.slot * 4 + node.func) % 100
        local_cpus, local_cpulist = _cpu_files(self.node_count, dev.numa_node)
        resources = 17 if dev.is_bridge else 13
        enabled = dev.driver is not None or dev.is_bridge
        files = {
            "vendor": f"0x{dev.vendor_id:04x}\n", "device": f"0x{dev.device_id:04x}\n",
            "subsystem_vendor": f"0x{dev.subsystem_vendor_id:04x}\n", "subsystem_device": f"0x{dev.subsystem_device_id:04x}\n",
            "class": f"0x{dev.class_code:06x}\n", "revision": f"0x{dev.revision:02x}\n",
            "numa_node": f"{dev.numa_node}\n", "local_cpus": local_cpus, "local_cpulist": local_cpulist,
            "driver_override": f"{dev.driver_override if dev.driver_override is not None else '(null)'}\n",
            "irq": f"{irq}\n", "enable": "1\n" if enabled else "0\n", "modalias": _modalias(dev) + "\n",
            "uevent": _uevent(dev), "resource": "0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * resources,
        }
        files.update(self.optional_attributes(node))
        base = self.path(node.rel_dir)
        for name, content in files.items():
            self.text(f"{base}/{name}", content)
        self.text(f"{base}/config", _config_space(node, irq))

    @staticmethod
    def optional_attributes(node: _Node) -> dict[str, str]:
        """Attribute files that only some devices have."""
        dev = node.dev
        files: dict[str, str] = {}
        if dev.is_pcie:
            width = dev.link_width or 0
            files.update({"current_link_speed": f"{dev.link_speed}\n", "current_link_width": f"{width}\n",
                          "max_link_speed": f"{dev.max_link_speed or dev.link_speed}\n",
                          "max_link_width": f"{dev.max_link_width if dev.max_link_width is not None else width}\n"})
        if dev.is_bridge:
            files.update({"secondary_bus_number": f"{node.secondary}\n", "subordinate_bus_number": f"{node.subordinate}\n"})
        if dev.sriov_totalvfs is not None:
            files.update({"sriov_totalvfs": f"{dev.sriov_totalvfs}\n", "sriov_numvfs": f"{len(node.vfs)}\n",
                          "sriov_offset": f"{node.vf_offset}\n", "sriov_stride": f"{node.vf_stride}\n",
                          "sriov_vf_device": f"{node.vf_device:x}\n", "sriov_drivers_autoprobe": "1\n"})
        if dev.class_code >> 8 == PCI_CLASS_DISPLAY_VGA:
            files["boot_vga"] = "1\n" if dev.boot_vga else "0\n"
        return files

    def bind(self, node: _Node, driver: str) -> None:
        """Create the driver directory if needed and link device and driver both ways."""
        driver_rel = f"bus/pci/drivers/{driver}"
        if driver_rel not in self.made:
            self.driver_dir(driver)
        self.link(f"{driver_rel}/{node.address}", node.rel_dir)
        self.link(f"{node.rel_dir}/driver", driver_rel)

    def driver_dir(self, name: str) -> None:
        """Create an empty driver directory with its control files."""
        driver_rel = f"bus/pci/drivers/{name}"
        if driver_rel in self.made:
            return
        self.made.add(driver_rel)
        driver_path = self.path(driver_rel)
        os.mkdir(driver_path)
        for control in _DRIVER_FILES:
            self.text(f"{driver_path}/{control}", "")

    def group(self, node: _Node) -> None:
        """Create the IOMMU group if needed and link device and group both ways."""
        group_rel = f"kernel/iommu_groups/{node.dev.iommu_group}"
        if group_rel not in self.made:
            self.made.add(group_rel)
            os.makedirs(self.path(f"{group_rel}/devices"))
            self.text(self.path(f"{group_rel}/type"), "DMA\n")
        self.link(f"{group_rel}/devices/{node.address}", node.rel_dir)
        self.link(f"{node.rel_dir}/iommu_group", group_rel)

    def netdev(self, node: _Node, name: str, index: int) -> None:
        """Create ``net/<name>`` with a MAC address derived from the PCI address."""
        net_rel = f"{node.rel_dir}/net/{name}"
        os.makedirs(self.path(net_rel))
        octets = (0x02, node.domain >> 8 & 0xFF, node.domain & 0xFF, node.bus, node.slot << 3 | node.func, index & 0xFF)
        self.text(self.path(f"{net_rel}/address"), ":".join(f"{octet:02x}" for octet in octets) + "\n")
        self.link(f"{net_rel}/device", node.rel_dir)
        self.link(f"class/net/{name}", net_rel)


def write_tree(root: str | os.PathLike[str], devices: Iterable[FixtureDevice], extra_drivers: Iterable[str] = ()) -> Path:
    """Validate ``devices`` and write them as a sysfs tree under ``root`` (created; must be empty).

    ``extra_drivers`` names driver directories to create even when no device is
    bound to them (for example ``vfio-pci`` before a test binds to it).
    Raises ValueError, before writing anything, when the fixture is inconsistent.
    """
    nodes = _build(devices)
    extra = list(extra_drivers)
    for name in extra:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid driver name {name!r}")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise ValueError(f"{path} is not empty")
    writer = _Writer(path, nodes)
    writer.write()
    for name in extra:
        writer.driver_dir(name)
    return path


# --- presets ---------------------------------------------------------------

INTEL, NVIDIA, MELLANOX, SAMSUNG, ASPEED, BROADCOM, SUPERMICRO = 0x8086, 0x10DE, 0x15B3, 0x144D, 0x1A03, 0x14E4, 0x15D9
GEN3, GEN4 = "8.0 GT/s PCIe", "16.0 GT/s PCIe"


def _host_bridge(address: str, numa: int, group: int | None, device_id: int = 0x2020, revision: int = 0x04) -> FixtureDevice:
    """An Intel host bridge on a root bus (no driver, no PCIe link)."""
    return FixtureDevice(address, INTEL, device_id, 0x060000, revision, INTEL, 0x0000, numa_node=numa, iommu_group=group,
                         link_speed=None)


def _root_port(address: str, numa: int, group: int | None, width: int, device_id: int = 0x2030) -> FixtureDevice:
    """An Intel PCIe root port bound to pcieport."""
    return FixtureDevice(address, INTEL, device_id, 0x060400, 0x04, INTEL, 0x0000, "pcieport", numa, group,
                         link_width=width)


def dual_socket_server(root: str | os.PathLike[str]) -> list[FixtureDevice]:
    """Write a two-socket Skylake-SP style server and return its 30 devices.

    Socket 0 (NUMA 0) owns root buses 00, 17, 3a, 5d and 64; socket 1 (NUMA 1)
    owns 80, 85, ae and d7 (d7's devices report NUMA -1).  Highlights: X710 PF
    0000:3b:00.0 with 4 VFs (2 iavf, 2 vfio-pci), ConnectX-5 with 8 VFs
    possible and none created, A100s on both sockets, an RTX 3090 sharing its
    IOMMU group with its HDMI audio function, an unbound NVMe, an ASPEED boot
    VGA behind a PCIe-to-PCI bridge, and a Samsung NVMe behind Intel VMD in
    domain 10000 (no IOMMU group, like the kernel shows VMD children).
    """
    x710 = {"vendor_id": INTEL, "device_id": 0x1572, "class_code": 0x020000, "revision": 0x02, "subsystem_vendor_id": INTEL,
            "subsystem_device_id": 0x0006, "driver": "i40e", "numa_node": 0, "parent": "0000:3a:00.0",
            "sriov_totalvfs": 64, "sriov_vf_device": 0x154C}
    vf = {"vendor_id": INTEL, "device_id": 0x154C, "class_code": 0x020000, "revision": 0x02, "subsystem_vendor_id": INTEL,
          "subsystem_device_id": 0x0000, "numa_node": 0, "parent": "0000:3a:00.0", "physfn": "0000:3b:00.0"}
    a100 = {"vendor_id": NVIDIA, "device_id": 0x20B5, "class_code": 0x030200, "revision": 0xA1, "subsystem_vendor_id": NVIDIA,
            "subsystem_device_id": 0x1533, "link_speed": GEN3, "link_width": 16, "max_link_speed": GEN4}
    rtx = {"vendor_id": NVIDIA, "revision": 0xA1, "subsystem_vendor_id": NVIDIA, "subsystem_device_id": 0x147D, "numa_node": 1,
           "iommu_group": 24, "parent": "0000:ae:00.0", "link_speed": GEN3, "link_width": 16, "max_link_speed": GEN4}
    devices = [
        _host_bridge("0000:00:00.0", 0, 0),
        FixtureDevice("0000:00:17.0", INTEL, 0xA182, 0x010601, 0x09, SUPERMICRO, 0x095D, "ahci", 0, 1, link_speed=None),
        FixtureDevice("0000:00:1c.5", INTEL, 0xA195, 0x060400, 0xF9, SUPERMICRO, 0x095D, "pcieport", 0, 2, link_width=1,
                      link_speed="5.0 GT/s PCIe"),
        FixtureDevice("0000:02:00.0", ASPEED, 0x1150, 0x060400, 0x04, SUPERMICRO, 0x095D, None, 0, 3, "0000:00:1c.5",
                      link_speed="5.0 GT/s PCIe", link_width=1),
        FixtureDevice("0000:03:00.0", ASPEED, 0x2000, 0x030000, 0x41, SUPERMICRO, 0x095D, "ast", 0, 3, "0000:02:00.0",
                      link_speed=None, boot_vga=True),
        _root_port("0000:17:00.0", 0, 4, 4),
        FixtureDevice("0000:18:00.0", SAMSUNG, 0xA808, 0x010802, 0x00, SAMSUNG, 0xA801, "nvme", 0, 5, "0000:17:00.0",
                      link_width=4),
        _root_port("0000:17:02.0", 0, 6, 4, 0x2032),
        FixtureDevice("0000:19:00.0", SAMSUNG, 0xA80A, 0x010802, 0x00, SAMSUNG, 0xA813, None, 0, 7, "0000:17:02.0",
                      link_width=4, max_link_speed=GEN4),
        _root_port("0000:3a:00.0", 0, 8, 8),
        FixtureDevice("0000:3b:00.0", **x710, iommu_group=9, sriov_numvfs=4, netdevs=["ens1f0"]),
        FixtureDevice("0000:3b:00.1", **x710, iommu_group=10, sriov_offset=79, netdevs=["ens1f1"]),
        FixtureDevice("0000:3b:02.0", **vf, driver="iavf", iommu_group=11, netdevs=["ens1f0v0"]),
        FixtureDevice("0000:3b:02.1", **vf, driver="iavf", iommu_group=12, netdevs=["ens1f0v1"]),
        FixtureDevice("0000:3b:02.2", **vf, driver="vfio-pci", iommu_group=13, driver_override="vfio-pci"),
        FixtureDevice("0000:3b:02.3", **vf, driver="vfio-pci", iommu_group=14, driver_override="vfio-pci"),
        _root_port("0000:3a:02.0", 0, 15, 16, 0x2032),
        FixtureDevice("0000:3c:00.0", **a100, driver="nvidia", numa_node=0, iommu_group=16, parent="0000:3a:02.0"),
        _root_port("0000:5d:00.0", 0, 17, 16),
        FixtureDevice("0000:5e:00.0", MELLANOX, 0x1017, 0x020000, 0x00, MELLANOX, 0x0006, "mlx5_core", 0, 18, "0000:5d:00.0",
                      sriov_totalvfs=8, sriov_offset=1, sriov_vf_device=0x1018, link_width=16, netdevs=["ens2np0"]),
        FixtureDevice("0000:64:05.5", INTEL, 0x201D, 0x010400, 0x04, INTEL, 0x0000, "vmd", 0, 19, link_speed="Unknown",
                      link_width=0),
        FixtureDevice("10000:e0:00.0", SAMSUNG, 0xA824, 0x010802, 0x00, 0x1028, 0x2040, "nvme", 0, None, "0000:64:05.5",
                      link_width=4, max_link_speed=GEN4),
        _host_bridge("0000:80:00.0", 1, 20),
        _root_port("0000:85:00.0", 1, 21, 16),
        FixtureDevice("0000:86:00.0", **a100, driver="vfio-pci", numa_node=1, iommu_group=22, parent="0000:85:00.0",
                      driver_override="vfio-pci"),
        _root_port("0000:ae:00.0", 1, 23, 16),
        FixtureDevice(address="0000:af:00.0", device_id=0x2204, class_code=0x030000, driver="nvidia", **rtx),
        FixtureDevice(address="0000:af:00.1", device_id=0x1AEF, class_code=0x040300, driver="snd_hda_intel", **rtx),
        _root_port("0000:d7:00.0", -1, 25, 8),
        FixtureDevice("0000:d8:00.0", BROADCOM, 0x16D8, 0x020000, 0x01, BROADCOM, 0x4161, "bnxt_en", -1, 26, "0000:d7:00.0",
                      netdevs=["ens3f0np0"]),
    ]
    write_tree(root, devices, extra_drivers=("vfio-pci",))
    return devices


def no_iommu_host(root: str | os.PathLike[str]) -> list[FixtureDevice]:
    """Write a small single-socket desktop without IOMMU (no groups, NUMA -1) and return its 7 devices."""
    devices = [
        _host_bridge("0000:00:00.0", -1, None, 0x3EC2, 0x07),
        FixtureDevice("0000:00:01.0", INTEL, 0x1901, 0x060400, 0x07, 0x1043, 0x8694, "pcieport", link_width=16),
        FixtureDevice("0000:01:00.0", NVIDIA, 0x1C82, 0x030000, 0xA1, 0x1043, 0x85D1, "nouveau", parent="0000:00:01.0",
                      link_width=16, boot_vga=True),
        FixtureDevice("0000:01:00.1", NVIDIA, 0x0FB9, 0x040300, 0xA1, 0x1043, 0x85D1, "snd_hda_intel", parent="0000:00:01.0",
                      link_width=16),
        FixtureDevice("0000:00:1d.0", INTEL, 0xA330, 0x060400, 0xF0, 0x1043, 0x8694, "pcieport", link_width=4),
        FixtureDevice("0000:02:00.0", INTEL, 0xF1A8, 0x010802, 0x03, INTEL, 0x390D, "nvme", parent="0000:00:1d.0", link_width=4),
        FixtureDevice("0000:00:1f.6", INTEL, 0x15BB, 0x020000, 0x10, 0x1043, 0x8694, "e1000e", link_speed=None, netdevs=["eno1"]),
    ]
    write_tree(root, devices)
    return devices


class _Synthetic:
    """Deterministic generator of large fixtures: domains of root ports with assorted endpoints."""

    PORTS_PER_DOMAIN = 32
    PATTERN = ("sriov_nic", "nvme", "gpu_audio", "cx5", "nvme", "a100", "nvme", "nic")
    SIZES = {"sriov_nic": 11, "nvme": 2, "gpu_audio": 3, "cx5": 6, "a100": 2, "nic": 2}

    def __init__(self, count: int) -> None:
        self.count = count
        self.devices: list[FixtureDevice] = []
        self.group = 0
        self.domain = -1
        self.ports = self.PORTS_PER_DOMAIN

    def next_group(self) -> int:
        """A fresh IOMMU group number."""
        self.group += 1
        return self.group - 1

    def add(self, dev: FixtureDevice) -> FixtureDevice:
        """Append one device."""
        self.devices.append(dev)
        return dev

    def generate(self) -> list[FixtureDevice]:
        """Build exactly ``count`` devices."""
        kind_index = 0
        while len(self.devices) < self.count:
            if self.ports == self.PORTS_PER_DOMAIN:
                self.domain += 1
                self.ports = 0
                self.add(_host_bridge(format_address(self.domain, 0, 0, 0), self.numa, self.next_group()))
                continue
            left = self.count - len(self.devices)
            kind = self.PATTERN[kind_index % len(self.PATTERN)]
            if self.SIZES[kind] <= left:
                kind_index += 1
            else:
                kind = "nvme" if left >= 2 else "empty"
            self.port(kind)
        return self.devices

    @property
    def numa(self) -> int:
        """NUMA node of the current domain."""
        return self.domain % 2

    def port(self, kind: str) -> None:
        """Add a root port and the devices of one kind below it."""
        index = self.ports
        self.ports += 1
        bus = index + 1
        address = format_address(self.domain, 0, 1 + index // 8, index % 8)
        width = {"gpu_audio": 16, "a100": 16, "cx5": 16, "nvme": 4}.get(kind, 8)
        port = _root_port(address, self.numa, self.next_group(), width)
        if kind == "empty":
            port.secondary_bus = bus
        self.add(port)
        getattr(self, f"add_{kind}", lambda *_: None)(address, bus)

    def endpoint(self, parent: str, bus: int, func: int, **fields: Any) -> FixtureDevice:
        """Add an endpoint on ``bus`` below ``parent``."""
        fields.setdefault("iommu_group", self.next_group())
        return self.add(FixtureDevice(format_address(self.domain, bus, 0, func), parent=parent, numa_node=self.numa, **fields))

    def ifname(self, bus: int, func: int) -> str:
        """Predictable interface name of a function at slot 0."""
        prefix = f"P{self.domain}" if self.domain else ""
        return f"en{prefix}p{bus}s0f{func}"

    def add_sriov_nic(self, parent: str, bus: int) -> None:
        """X710 PF pair; PF0 with 8 VFs, half on iavf, half on vfio-pci."""
        nic = {"vendor_id": INTEL, "device_id": 0x1572, "class_code": 0x020000, "revision": 0x02, "subsystem_vendor_id": INTEL,
               "subsystem_device_id": 0x0006, "driver": "i40e", "sriov_totalvfs": 64, "sriov_vf_device": 0x154C}
        pf0 = self.endpoint(parent, bus, 0, **nic, sriov_numvfs=8, netdevs=[self.ifname(bus, 0)])
        self.endpoint(parent, bus, 1, **nic, sriov_offset=79, netdevs=[self.ifname(bus, 1)])
        for index in range(8):
            driver = "iavf" if index % 2 == 0 else "vfio-pci"
            netdevs = [f"{self.ifname(bus, 0)}v{index}"] if driver == "iavf" else []
            self.add(FixtureDevice(format_address(self.domain, bus, 2, index), INTEL, 0x154C, 0x020000, 0x02, INTEL, 0x0000, driver,
                                   self.numa, self.next_group(), physfn=pf0.address, netdevs=netdevs))

    def add_nvme(self, parent: str, bus: int) -> None:
        """Samsung NVMe, bound to nvme on even buses."""
        self.endpoint(parent, bus, 0, vendor_id=SAMSUNG, device_id=0xA80A, class_code=0x010802, subsystem_vendor_id=SAMSUNG,
                      subsystem_device_id=0xA813, driver="nvme" if bus % 2 == 0 else None, link_width=4, max_link_speed=GEN4)

    def add_gpu_audio(self, parent: str, bus: int) -> None:
        """RTX 3090 and its HDMI audio function sharing one IOMMU group."""
        group = self.next_group()
        common = {"vendor_id": NVIDIA, "revision": 0xA1, "subsystem_vendor_id": NVIDIA, "subsystem_device_id": 0x147D,
                  "iommu_group": group, "link_width": 16}
        self.endpoint(parent, bus, 0, device_id=0x2204, class_code=0x030000, driver="vfio-pci", **common)
        self.endpoint(parent, bus, 1, device_id=0x1AEF, class_code=0x040300, driver="vfio-pci", **common)

    def add_cx5(self, parent: str, bus: int) -> None:
        """ConnectX-5 PF with 4 VFs on mlx5_core."""
        pf = self.endpoint(parent, bus, 0, vendor_id=MELLANOX, device_id=0x1017, class_code=0x020000, subsystem_vendor_id=MELLANOX,
                           subsystem_device_id=0x0006, driver="mlx5_core", sriov_totalvfs=8, sriov_numvfs=4, link_width=16,
                           netdevs=[self.ifname(bus, 0) + "np0"])
        for func in range(1, 5):
            self.add(FixtureDevice(format_address(self.domain, bus, 0, func), MELLANOX, 0x1018, 0x020000, 0x00, MELLANOX, 0x0006,
                                   "mlx5_core", self.numa, self.next_group(), physfn=pf.address, netdevs=[self.ifname(bus, func)]))

    def add_a100(self, parent: str, bus: int) -> None:
        """A100 bound to vfio-pci."""
        self.endpoint(parent, bus, 0, vendor_id=NVIDIA, device_id=0x20B5, class_code=0x030200, revision=0xA1,
                      subsystem_vendor_id=NVIDIA, subsystem_device_id=0x1533, driver="vfio-pci", link_width=16)

    def add_nic(self, parent: str, bus: int) -> None:
        """Single-function Broadcom NIC."""
        self.endpoint(parent, bus, 0, vendor_id=BROADCOM, device_id=0x16D8, class_code=0x020000, revision=0x01,
                      subsystem_vendor_id=BROADCOM, subsystem_device_id=0x4161, driver="bnxt_en", netdevs=[self.ifname(bus, 0)])


def synthetic(root: str | os.PathLike[str], count: int) -> list[FixtureDevice]:
    """Write exactly ``count`` devices (deterministic) and return them.

    Every domain has a host bridge and up to 32 root ports on bus 00; below the
    ports, in a fixed rotation: X710 PF pairs with 8 VFs, NVMe drives, GPU plus
    audio pairs sharing a group, ConnectX-5 PFs with 4 VFs, A100s and NICs.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    devices = _Synthetic(count).generate()
    write_tree(root, devices, extra_drivers=("vfio-pci",))
    return devices


PRESETS = {"dual-socket": dual_socket_server, "no-iommu": no_iommu_host}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: write a preset tree."""
    parser = argparse.ArgumentParser(description="Write a fake sysfs PCI tree (ROOT plays /sys).")
    parser.add_argument("preset", choices=sorted(PRESETS) + ["synthetic"])
    parser.add_argument("root")
    parser.add_argument("--count", type=int, default=1000, help="number of devices for the synthetic preset (default 1000)")
    args = parser.parse_args(argv)
    try:
        if args.preset == "synthetic":
            devices = synthetic(args.root, args.count)
        else:
            devices = PRESETS[args.preset](args.root)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {len(devices)} devices to {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
