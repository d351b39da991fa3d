# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write each role's README.md from its meta/argument_specs.yml and defaults/main.yml.

Run `python tests/utils/role_readme.py` after changing a role's variables; tests/unit/test_roles.py
fails while a README is not current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ('pci_host', 'pci_inventory', 'pci_attach')
INTRO = {
    'pci_host': 'Prepares a compute host for PCI passthrough. Playbook: `playbooks/prepare_hosts.yml`.',
    'pci_inventory': 'Inventories the PCI devices and pools of the hosts and writes the fleet report. '
                     'Playbook: `playbooks/inventory.yml` (also `make demo`).',
    'pci_attach': 'Attaches PCI devices to a domain by alias and count, or detaches them. '
                  'Playbooks: `playbooks/attach.yml`, `playbooks/detach.yml`.',
}


def _markup(text: str) -> str:
    return re.sub(r'\bC\(([^)]*)\)', r'`\1`', text).replace('|', '/')


def render(role: str) -> str:
    base = ROOT / 'roles' / role
    spec = yaml.safe_load((base / 'meta' / 'argument_specs.yml').read_text(encoding='utf-8'))['argument_specs']['main']
    defaults = yaml.safe_load((base / 'defaults' / 'main.yml').read_text(encoding='utf-8')) or {}
    description = spec['description'] if isinstance(spec['description'], str) else ' '.join(spec['description'])
    out = [f'# passthrough.libvirt.{role}', '', INTRO[role], '', _markup(description), '',
           f'Every variable is checked before the role runs (`meta/argument_specs.yml`); '
           f'`ansible-doc -t role passthrough.libvirt.{role}` shows the same.', '',
           '| variable | type | default | meaning |', '|---|---|---|---|']
    for name, option in spec['options'].items():
        if option.get('required'):
            default = 'required'
        elif name in defaults:
            default = '`' + yaml.safe_dump(defaults[name], default_flow_style=True).strip().removesuffix('...').strip() + '`'
        else:
            default = '-'
        kind = option['type'] + (f" of {option['elements']}" if 'elements' in option else '')
        if 'choices' in option:
            kind += ': ' + ', '.join(option['choices'])
        text = option['description'] if isinstance(option['description'], str) else ' '.join(option['description'])
        out.append(f'| `{name}` | {kind} | {default} | {_markup(text)} |')
    out += ['', 'Generated from `meta/argument_specs.yml` and `defaults/main.yml` by `tests/utils/role_readme.py`.', '']
    return '\n'.join(out)


def main() -> int:
    for role in ROLES:
        (ROOT / 'roles' / role / 'README.md').write_text(render(role), encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
