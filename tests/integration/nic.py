# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The iproute2 double for the fixture trees' NIC PFs (fake_ip/ip): where it is, the settings it starts with."""

from __future__ import annotations

import json
import os
from pathlib import Path

FAKE_IP = Path(__file__).resolve().parent / 'fake_ip'
# What a VF has before anyone sets it: the kernel's defaults for most PF drivers.
ORIGINAL = {'trust': False, 'spoofchk': True, 'link_state': 'auto'}


def write_state(path: Path, netdev: str = 'ens1f0', vfs: int = 4) -> Path:
    """A PF ``netdev`` with ``vfs`` VFs in their original settings, as the double's state file."""
    path.write_text(json.dumps({netdev: {'operstate': 'UP', 'vfs': {
        str(index): dict(ORIGINAL, mac='00:00:00:00:00:00') for index in range(vfs)}}}))
    return path


def environment(state: Path) -> dict[str, str]:
    """The variables a module process needs to find the double (first in PATH) and its state."""
    return {'PATH': f'{FAKE_IP}{os.pathsep}{os.environ["PATH"]}', 'PTLV_FAKE_IP': str(state)}
