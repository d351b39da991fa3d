# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The collection's one atomic file writer: the state file, udev rules, the fleet report.

A reader sees the old file or the new one, never half of either: a temporary file beside the
target, fsync, rename, fsync of the directory. It lives apart from ``_host`` so the controller
(pci_fleet) can use it without importing anything that talks to libvirt.
"""

from __future__ import annotations

import os
import tempfile

from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import ChangeFailed


class FileWriteFailed(ChangeFailed):
    """A file could not be written; the previous one, if any, is as it was."""


def read_text(path: str) -> str | None:
    """The file's text; None when it does not exist or cannot be read."""
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read()
    except OSError:
        return None


def write_atomic(where: str, path: str, content: str, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Replace ``path`` with ``content``; ``where`` names the option the path came from, for messages.

    A missing directory is created with ``dir_mode``. On failure the previous file is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix='.passthrough-', suffix='.tmp', dir=directory)
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        temporary = None
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise FileWriteFailed(f'{where} {path!r} cannot be written: {exc.strerror or exc}') from None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def write_if_changed(where: str, path: str, content: str, check_mode: bool, mode: int = 0o644) -> bool:
    """Write ``content`` unless the file already holds it; in check mode only say whether it would change."""
    if read_text(path) == content:
        return False
    if not check_mode:
        write_atomic(where, path, content, mode=mode)
    return True
