# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_fleet: aggregates the hosts' pci_stats facts on the controller (documentation: plugins/modules/pci_fleet.py)."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action import ActionBase

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import write_if_changed
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError, SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import aggregate, candidates, render_html, render_json

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:
    HAS_JMESPATH = False

ARGUMENT_SPEC = dict(
    hosts=dict(type='list', elements='str'),
    request=dict(type='raw'),
    aliases=dict(type='list', elements='dict'),
    query=dict(type='str'),
    dest=dict(type='path'),
    title=dict(type='str', default='PCI fleet'),
)


def _facts_of(hostvars: Any, name: str) -> dict | None:
    """The host's ansible_facts; None when it has none."""
    if name not in hostvars:
        raise AnsibleError(f'hosts: {name!r} is not in the inventory')
    facts = hostvars[name].get('ansible_facts')
    return facts if isinstance(facts, dict) else None


class ActionModule(ActionBase):
    BYPASS_HOST_LOOP = True
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        try:
            result.update(self._run(params, task_vars))
        except (PassthroughError, AnsibleError, OSError, ValueError) as exc:
            result.update(failed=True, msg=to_native(exc))
        return result

    def _run(self, params: dict, task_vars: dict) -> dict:
        if params['request'] is not None and params['aliases'] is None:
            raise SpecError('request: needs aliases to say what each alias name means')
        aliases = parse_aliases(params['aliases'])
        request = parse_request(params['request'], aliases) if params['request'] is not None else None
        if params['query'] is not None and not HAS_JMESPATH:
            raise AnsibleError('query: the jmespath Python library is not installed on the controller (pip install jmespath)')

        names = params['hosts'] if params['hosts'] is not None else list(task_vars.get('ansible_play_hosts_all') or [])
        hostvars = task_vars.get('hostvars', {})
        fleet = aggregate([(name, _facts_of(hostvars, name)) for name in names])
        out: dict[str, Any] = {'changed': False, 'fleet': fleet}
        fitting = None
        if request is not None:
            fitting, rejected = candidates(fleet, request, aliases)
            out.update(candidates=fitting, rejected=rejected)
        if params['query'] is not None:
            report = dict(fleet, candidates=fitting) if fitting is not None else fleet
            try:
                out['query_result'] = jmespath.search(params['query'], report)
            except jmespath.exceptions.JMESPathError as exc:
                raise AnsibleError(f'query: {params["query"]!r} is not a valid JMESPath expression: {exc}') from None
        if params['dest'] is not None:
            dest = params['dest']
            if os.path.exists(dest) and not os.path.isdir(dest):
                raise AnsibleError(f'dest: {dest!r} exists and is not a directory')
            if not self._task.check_mode:
                os.makedirs(dest, exist_ok=True)
            files = [os.path.join(dest, 'fleet.json'), os.path.join(dest, 'fleet.html')]
            changed = [write_if_changed('dest', files[0], render_json(fleet, fitting), self._task.check_mode),
                       write_if_changed('dest', files[1], render_html(fleet, fitting, params['title']), self._task.check_mode)]
            out.update(files=files, changed=any(changed))
        missing = fleet['missing']
        if missing:
            self._display.warning(f'pci_fleet: {len(missing)} of {len(names)} hosts have no pci_stats: {", ".join(missing[:10])}'
                                  + (' ...' if len(missing) > 10 else ''))
        return out
