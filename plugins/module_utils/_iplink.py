# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""A NIC PF's per-VF settings (MAC, VLAN, trust, spoof checking, link state), read and set with iproute2.

The kernel gives these over rtnetlink only (``IFLA_VFINFO_LIST`` of the PF's link); sysfs has
none of them, and libvirt sets a VF's MAC and VLAN but neither reports nor sets trust, spoof
checking or link state. They are read with ``ip -json link show dev <pf>`` and set with
``ip link set dev <pf> vf <index> ...``: iproute2 is on every libvirt host (libvirt's own network
code needs it), its JSON is stable across versions, and a netlink client of our own would be a
second implementation of exactly this, on every managed host, with no new Python dependency
either way. Commands run without a shell, from parsed values only: the interface name as sysfs
lists it (checked here), the VF index an integer, each setting one of a fixed set of words.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import LINK_STATES, NicInfo, VfConfig

# Where ip lives when PATH does not say (a sudo secure_path, a minimal environment).
_FALLBACK_PATH = ('/usr/sbin', '/sbin', '/usr/bin', '/bin')
_NETDEV = re.compile(r'^[^\s/:-][^\s/:]{0,14}$')    # the kernel's rule (IFNAMSIZ, no '/', no whitespace), no leading '-'
_TIMEOUT = 10


class IpLinkFailed(ChangeFailed):
    """Setting a VF's trust, spoof checking or link state on its PF failed; the message is ip's."""


def _ip_binary() -> str | None:
    path = os.environ.get('PATH', '')
    return shutil.which('ip', path=os.pathsep.join([path, *_FALLBACK_PATH]) if path else os.pathsep.join(_FALLBACK_PATH))


def _on_off(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ('on', 'off'):
        return value == 'on'
    return None


def parse_vfinfo(entry: dict[str, Any]) -> VfConfig | None:
    """One ``vfinfo_list`` entry of ``ip -json link show``: ``address`` (``mac`` before iproute2 5.3),
    ``vlan_list`` [{vlan, qos}] (or ``vlan``/``qos`` before it), ``spoofchk``, ``trust``, ``link_state``."""
    index = entry.get('vf')
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    mac = entry.get('address', entry.get('mac'))
    mac = mac.lower() if isinstance(mac, str) else None
    vlan = None
    vlans = entry.get('vlan_list')
    if isinstance(vlans, list) and vlans and isinstance(vlans[0], dict):
        vlan = vlans[0].get('vlan')
    elif 'vlan' in entry:
        vlan = entry.get('vlan')
    if not isinstance(vlan, int) or isinstance(vlan, bool) or vlan <= 0:
        vlan = None          # 0: no VLAN
    link_state = entry.get('link_state')
    return VfConfig(index=index, mac=mac, vlan=vlan, trust=_on_off(entry.get('trust')), spoofchk=_on_off(entry.get('spoofchk')),
                    link_state=link_state if link_state in LINK_STATES else None)


def parse_links(text: str) -> dict[str, NicInfo]:
    """The output of ``ip -json link show``: every interface by name, with its VFs' settings."""
    try:
        links = json.loads(text)
    except ValueError:
        return {}
    result = {}
    for link in links if isinstance(links, list) else []:
        name = link.get('ifname') if isinstance(link, dict) else None
        if not isinstance(name, str):
            continue
        operstate = link.get('operstate')
        vfs = {}
        for entry in link.get('vfinfo_list') or []:
            config = parse_vfinfo(entry) if isinstance(entry, dict) else None
            if config is not None:
                vfs[config.index] = config
        result[name] = NicInfo(name, operstate.lower() if isinstance(operstate, str) else None, vfs)
    return result


def check_netdev(name: Any) -> str | None:
    return name if isinstance(name, str) and _NETDEV.match(name) else None


class IpLink:
    """``ip`` for one run. Reads answer None (unknown) when ip or the interface is missing; writes raise IpLinkFailed."""

    _UNSET = object()

    def __init__(self, binary: Any = _UNSET) -> None:
        self._binary = binary

    @property
    def binary(self) -> str | None:
        """The ip command, looked up on first use (in PATH, then the usual sbin directories)."""
        if self._binary is IpLink._UNSET:
            self._binary = _ip_binary()
        return self._binary

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ, LC_ALL='C')
        return subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False, env=env)

    def links(self) -> dict[str, NicInfo]:
        """Every interface's state and VFs' settings, from one ``ip -json link show``; {} when ip cannot tell."""
        if self.binary is None:
            return {}
        try:
            proc = self._run(['-json', 'link', 'show'])
        except (OSError, subprocess.SubprocessError):
            return {}
        return parse_links(proc.stdout) if proc.returncode == 0 else {}

    def set_vf(self, netdev: str, index: int, settings: dict[str, Any]) -> None:
        """Set ``trust``/``spoofchk`` (booleans) and ``link_state`` (auto/enable/disable) of VF ``index``."""
        if not settings:
            return
        where = f'VF {index} of {netdev}'
        if self.binary is None:
            raise IpLinkFailed(f'{where}: cannot set {", ".join(sorted(settings))}: the ip command (iproute2) is not installed')
        if check_netdev(netdev) is None or isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise IpLinkFailed(f'{where}: not a network interface and VF index this collection can set')
        args = ['link', 'set', 'dev', netdev, 'vf', str(index)]
        for key, word in (('trust', 'trust'), ('spoofchk', 'spoofchk'), ('link_state', 'state')):
            if key not in settings:
                continue
            value = settings[key]
            if key == 'link_state':
                if value not in LINK_STATES:
                    raise IpLinkFailed(f'{where}: link_state {value!r} is not one of {", ".join(LINK_STATES)}')
                args += [word, value]
            else:
                args += [word, 'on' if value else 'off']
        try:
            proc = self._run(args)
        except (OSError, subprocess.SubprocessError) as exc:
            raise IpLinkFailed(f'{where}: ip {" ".join(args)} failed: {exc}') from None
        if proc.returncode != 0:
            detail = ' '.join((proc.stderr or proc.stdout).split()) or f'exit status {proc.returncode}'
            raise IpLinkFailed(f'{where}: ip {" ".join(args)} failed: {detail}')
