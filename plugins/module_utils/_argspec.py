# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""Options every host-side module shares (documented once in the ``common`` doc fragment), and which options combine."""

from __future__ import annotations

from typing import Any

from ansible_collections.passthrough.libvirt.plugins.module_utils._host import DEFAULT_CONFIG_PATH


def host_options() -> dict[str, dict[str, Any]]:
    """``uri``, ``sysfs_root`` and ``config_path``: where the host's libvirt, sysfs and state are."""
    return dict(
        uri=dict(type='str', default='qemu:///system'),
        sysfs_root=dict(type='path', default='/sys'),
        config_path=dict(type='path', default=DEFAULT_CONFIG_PATH),
    )


def with_host_options(**options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A module's argument spec: its own options, then the shared ones."""
    spec = dict(options)
    spec.update(host_options())
    return spec


# Which options combine, declared with the argument specs (the messages are Ansible's own).
PCI_ATTACHMENT_RULES: dict[str, Any] = dict(
    mutually_exclusive=[('request', 'addresses', 'attachment_ids')],
    required_if=[('state', 'present', ('request', 'addresses'), True),
                 ('state', 'absent', ('request', 'addresses', 'attachment_ids'), True),
                 ('state', 'present', ('domain',)), ('state', 'absent', ('domain',)), ('state', 'query', ('domain',))],
    required_by={'request': 'aliases'},
)
PCI_WHITELIST_RULES: dict[str, Any] = dict(
    required_if=[('state', 'present', ('device_spec', 'out_of_service', 'accept_hardware_changes'), True)],
)
