# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The host's state file (the stored whitelist, the drivers devices had before binding) and the host lock."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
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
        return {'version': STATE_VERSION, 'device_spec': None, 'original_drivers': {}, 'sriov': {}}
    except (OSError, ValueError) as exc:
        raise HostStateError(f'config_path {config_path!r} cannot be read as a state file: {exc}') from None
    if not isinstance(state, dict) or not isinstance(state.get('version'), int):
        raise HostStateError(f'config_path {config_path!r} is not a passthrough.libvirt state file (no version)')
    if state['version'] > STATE_VERSION:
        raise HostStateError(
            f'config_path {config_path!r} has state version {state["version"]}, newer than this collection understands ({STATE_VERSION})')
    state.setdefault('device_spec', None)
    state.setdefault('original_drivers', {})
    state.setdefault('sriov', {})
    return state


def save(config_path: str, state: dict[str, Any]) -> None:
    """Write the state atomically: a temporary file beside it, fsync, rename. Mode 0600; the
    directory is created (0700) when missing. A failure leaves the previous file as it was."""
    directory = os.path.dirname(os.path.abspath(config_path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix='.state-', suffix='.tmp', dir=directory)
    except OSError as exc:
        raise HostStateError(f'config_path {config_path!r} cannot be written: {exc.strerror}') from None
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(dict(state, version=STATE_VERSION), handle, indent=2, sort_keys=True)
            handle.write('\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, config_path)
    except (OSError, TypeError, ValueError) as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise HostStateError(f'config_path {config_path!r} cannot be written: {exc}') from None
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class HostLock:
    """An exclusive lock on the host (fcntl on ``<config_path>.lock``) for runs that change it.

    Two jobs at once (an AWX schedule and a person) then never choose the same device or rebind a
    device under each other: the second waits, up to ``timeout`` seconds, and sees the first's result.
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
