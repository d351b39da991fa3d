# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: pci_request
short_description: Check an alias request against aliases and return it as a list of {alias, count}
version_added: 0.1.0
description:
  - Parses a request (C("a1:2,b1:1") or a list of C({alias, count})) with the collection's strict grammar against
    Nova-style aliases, and returns it normalised. A malformed part, an unknown alias or, with O(min_count), a
    count below it fails the task with one message naming the part.
  - The roles use it to check C(pci_request) before anything runs.
author:
  - passthrough.libvirt contributors (@passthrough-libvirt)
positional: aliases
options:
  _input:
    description: The request.
    type: raw
    required: true
  aliases:
    description: The aliases the request may name.
    type: list
    elements: dict
    required: true
  min_count:
    description: The smallest count accepted (the module itself accepts 0, meaning none).
    type: int
    default: 0
'''

EXAMPLES = r'''
- name: 'Fails with "pci_request: count ''0'' in ''a1:0'' must be 1 or more"'
  ansible.builtin.debug:
    msg: "{{ 'a1:0' | passthrough.libvirt.pci_request(pci_aliases, min_count=1) }}"
'''

RETURN = r'''
_value:
  description: The request as a list of C({alias, count}), in the order given.
  type: list
  elements: dict
'''

from ansible.errors import AnsibleFilterError

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import SpecError


def pci_request(value, aliases, min_count=0):
    try:
        parsed = parse_request(value, parse_aliases(aliases), where='pci_request', min_count=min_count)
    except SpecError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return [{'alias': item.alias, 'count': item.count} for item in parsed]


class FilterModule:
    def filters(self):
        return {'pci_request': pci_request}
