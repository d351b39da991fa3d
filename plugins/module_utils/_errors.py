# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The collection's one family of errors. A module's ``main`` catches ``PassthroughError`` and nothing else.

Two branches, so a reader of a message knows whether the host changed:

- ``Refused``: raised before any change; the message names the field and the value (or the
  host fact) that stopped the run.
- ``ChangeFailed``: a change was under way and failed; the message says what was undone and what
  was left as it is.

Every error the collection raises is one of the two (or a subclass named for where it comes from).
"""

from __future__ import annotations


class PassthroughError(Exception):
    """Any error of the collection; its message is meant for the operator as it is."""


class Refused(PassthroughError):
    """Nothing was changed: bad input, or a host fact that forbids the run."""


class ChangeFailed(PassthroughError):
    """A change failed; the message says what was undone and what was left."""


class SpecError(Refused, ValueError):
    """A whitelist entry, alias or request that cannot be used; the message names the entry, the field and the value."""
