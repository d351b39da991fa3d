# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The host's state file: the stored whitelist and the drivers devices had before binding."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_CONFIG_PATH = '/etc/passthrough-libvirt/state.json'
STATE_VERSION = 1


class HostStateError(Exception):
    """The state file exists but cannot be read or is not ours."""


def load(config_path: str) -> dict[str, Any]:
    """The stored state, or an empty one when the file does not exist yet."""
    try:
        with open(config_path, encoding='utf-8') as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return {'version': STATE_VERSION, 'device_spec': None, 'original_drivers': {}}
    except (OSError, ValueError) as exc:
        raise HostStateError(f'config_path {config_path!r} cannot be read as a state file: {exc}') from None
    if not isinstance(state, dict) or not isinstance(state.get('version'), int):
        raise HostStateError(f'config_path {config_path!r} is not a passthrough.libvirt state file (no version)')
    if state['version'] > STATE_VERSION:
        raise HostStateError(
            f'config_path {config_path!r} has state version {state["version"]}, newer than this collection understands ({STATE_VERSION})')
    state.setdefault('device_spec', None)
    state.setdefault('original_drivers', {})
    return state
