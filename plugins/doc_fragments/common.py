# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options and attributes shared by every module of the collection."""

    # Options every host-side module takes. Set them once for a play with
    # module_defaults: {group/passthrough.libvirt.pci: {uri: ..., sysfs_root: ..., config_path: ...}}.
    DOCUMENTATION = r'''
options:
  uri:
    description:
      - libvirt connection URI of the hypervisor on the managed host.
      - The module connects read-only when it only reads.
    type: str
    default: qemu:///system
  sysfs_root:
    description:
      - Root of the sysfs tree to read PCI devices from, normally C(/sys).
      - Point it at a copy or a generated tree (tests, offline analysis); it must contain C(bus/pci/devices).
    type: path
    default: /sys
  config_path:
    description:
      - The host's state file, where M(passthrough.libvirt.pci_whitelist) stores the whitelist and the
        drivers devices had before they were bound to vfio-pci.
      - A missing file means nothing is stored yet; it is not an error.
    type: path
    default: /etc/passthrough-libvirt/state.json
requirements:
  - Python 3.9 or newer on the managed host.
  - The libvirt Python bindings on the managed host (C(python3-libvirt) or C(libvirt-python)).
'''

    ATTRIBUTES = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
  action_group:
    description: Use C(group/passthrough.libvirt.pci) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - passthrough.libvirt.pci
'''

    # Read-only modules: they never change anything, so check mode is full and diff mode does not apply.
    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  platform:
    platforms: posix
'''
