# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_fleet: aggregates the hosts' pci_stats facts on the controller (documentation: plugins/modules/pci_fleet.py)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import cache_loader
from ansible.release import __version__ as ANSIBLE_CORE_VERSION

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._atomic import read_text, write_atomic, write_if_changed
from ansible_collections.passthrough.libvirt.plugins.module_utils._errors import PassthroughError, SpecError
from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import aggregate, candidates, render_html, render_json, report_time

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
    records=dict(type='bool', default=False),
    plain_cache=dict(type='bool', default=True),
)

# The per-host records pci_inventory publishes with set_stats: one variable per host, so that AWX's
# shallow merge of the artifacts of a sliced job's slices (dict.update in finish order) keeps every one.
RECORD_PREFIX = 'pci_fleet_host_'
FACT_KEYS = ('pci_stats', 'pci_hypervisor_hostname', 'pci_hardware_changes', 'pci_out_of_service')
NOT_IN_INVENTORY = ('not in the inventory of this run (a slice of a sliced job, or a Limit) and no pci_stats for it'
                    ' in the fact cache or in the published records')
# ansible-core 2.19 keeps facts in "s1_<host>" files wrapped as {"__payload__": "<json>"}; AWX and
# ansible-runner (and ansible-core before 2.19) write and read the plain JSON of the facts as "<host>".
_WRAPPED_PREFIX = 's1_'
_WRAPPED_KEY = '__payload__'


def record_key(name: str) -> str:
    """The variable a host's record is published as: a valid name, distinct for every inventory name."""
    digest = hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]   # nosec - a name, not a secret
    return f'{RECORD_PREFIX}{re.sub(r"[^A-Za-z0-9_]", "_", name)}_{digest}'


def _core_wraps_cache() -> bool:
    """Whether this ansible-core writes its own (wrapped, s1_) form of the jsonfile cache."""
    try:
        return tuple(int(part) for part in ANSIBLE_CORE_VERSION.split('.')[:2]) >= (2, 19)
    except ValueError:
        return True


def _has_stats(facts: Any) -> bool:
    return isinstance(facts, Mapping) and facts.get('pci_stats') is not None


def _plain(value: Any) -> Any:
    """JSON data of plain types (facts from hostvars may be of ansible-core's own mapping and string types)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class _JsonFileCache:
    """The jsonfile fact cache directory, read and written as files, whichever form each host's file has."""

    def __init__(self, directory: str, prefix: str, timeout: int) -> None:
        self.directory, self.prefix, self.timeout = directory, prefix, timeout

    @classmethod
    def configured(cls) -> '_JsonFileCache | None':
        if C.CACHE_PLUGIN not in ('jsonfile', 'ansible.builtin.jsonfile'):
            return None
        try:
            plugin = cache_loader.get(C.CACHE_PLUGIN)
            directory = plugin.get_option('_uri')
            prefix = plugin.get_option('_prefix') or ''
            timeout = int(plugin.get_option('_timeout') or 0)
        except Exception:   # pylint: disable=broad-except  # no usable cache: read none, write none
            return None
        if not directory:
            return None
        return cls(os.path.expanduser(str(directory)), str(prefix), timeout)

    def plain_path(self, name: str) -> str:
        return os.path.join(self.directory, f'{self.prefix}{name}')

    def _fresh(self, path: str) -> float | None:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        if self.timeout and time.time() - mtime > self.timeout:
            return None
        return mtime

    def facts(self, name: str) -> dict | None:
        """The newest unexpired facts of the host: plain JSON ("<host>") or ansible-core 2.19's wrapped form."""
        if os.sep in name or name in ('.', '..'):
            return None
        found = []
        for path, wrapped in ((self.plain_path(name), False), (os.path.join(self.directory, f'{self.prefix}{_WRAPPED_PREFIX}{name}'), True)):
            mtime = self._fresh(path)
            if mtime is not None:
                found.append((mtime, path, wrapped))
        for _mtime, path, wrapped in sorted(found, reverse=True):
            try:
                data = json.loads(read_text(path) or '')
                if wrapped:
                    data = json.loads(data[_WRAPPED_KEY])
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(data, dict):
                return data
        return None

    def store(self, name: str, facts: dict) -> bool:
        """Merge the host's pci facts into its plain JSON file (the one AWX and ansible-runner read); True when changed."""
        if os.sep in name or name in ('.', '..'):
            return False
        path = self.plain_path(name)
        try:
            current = json.loads(read_text(path) or '{}')
        except ValueError:
            current = {}
        if not isinstance(current, dict):
            current = {}
        merged = dict(current, **{key: _plain(facts[key]) for key in FACT_KEYS if key in facts})
        if merged == current and os.path.exists(path):
            return False
        write_atomic('plain_cache', path, json.dumps(merged), mode=0o600, dir_mode=0o700)
        return True


def _records_of(task_vars: dict) -> dict[str, dict]:
    """The published per-host records among the task's variables (AWX: the artifacts of earlier workflow nodes), by host."""
    found = {}
    for key, value in task_vars.items():
        if isinstance(key, str) and key.startswith(RECORD_PREFIX) and isinstance(value, dict) and isinstance(value.get('name'), str):
            found[value['name']] = value
    return found


# Stands for the report's time while the report is rendered; each file is rendered once, then given
# the time it keeps (an unchanged report keeps its old one) by replacing it.
_TIME_MARK = '\x00generated_at\x00'


def write_report(files: list[str], fleet: dict, fitting: list | None, title: str, *, rejected: dict | None,
                 request: list | None, aliases: dict | None, check_mode: bool) -> bool:
    """Write fleet.json and fleet.html (``files``) when their content changed; whether one did.

    The report keeps its time while its content is the same: a run that finds nothing new changes nothing.
    """
    def report(generated_at: str | None) -> list[str]:
        return [render_json(fleet, fitting, rejected=rejected, request=request, generated_at=generated_at),
                render_html(fleet, fitting, title, rejected=rejected, request=request, aliases=aliases, generated_at=generated_at)]

    previous = [read_text(path) for path in files]
    before = report_time(previous[0])
    now = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())
    marks = (json.dumps(_TIME_MARK), html.escape(_TIME_MARK, quote=True))
    rendered = report(_TIME_MARK)
    if before is None and previous != [None, None] or any(text.count(mark) != 1 for text, mark in zip(rendered, marks)):
        # A report without a time (or facts that hold the mark itself): rendered for each time, as it always was.
        contents = report(before)
        if contents != previous:
            contents = report(now)
    else:
        def stamped(generated_at: str) -> list[str]:
            return [rendered[0].replace(marks[0], json.dumps(generated_at)),
                    rendered[1].replace(marks[1], html.escape(generated_at, quote=True))]
        contents = stamped(before) if before is not None else None
        if contents != previous:
            contents = stamped(now)
    changed = [write_if_changed('dest', path, content, check_mode) for path, content in zip(files, contents)]   # both written
    return any(changed)


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

        play_hosts = list(task_vars.get('ansible_play_hosts_all') or [])
        records = _records_of(task_vars) if params['records'] else {}
        if params['hosts'] is not None:
            names = list(params['hosts'])
        elif params['records']:
            names = sorted(records)
        else:
            names = play_hosts
        hostvars = task_vars.get('hostvars', {})
        cache = _JsonFileCache.configured()
        facts_of, source, outside = {}, {}, []
        for name in names:
            facts = None
            if name in hostvars:
                facts = hostvars[name].get('ansible_facts')
                source[name] = 'facts'
            else:
                outside.append(name)
            if not _has_stats(facts) and name in records:
                facts, source[name] = records[name], 'record'
            if not _has_stats(facts) and cache is not None:
                cached = cache.facts(name)
                if _has_stats(cached):
                    facts, source[name] = cached, 'cache'
            facts_of[name] = facts if isinstance(facts, Mapping) else None
        fleet = aggregate([(name, facts_of[name]) for name in names])
        for host in fleet['hosts']:
            if host['status'] == 'missing' and host['name'] in outside:
                host['reason'] = NOT_IN_INVENTORY
        out: dict[str, Any] = {'changed': False, 'fleet': fleet}
        # The records of the hosts this run inventoried, to publish with set_stats (pci_inventory does).
        play = set(play_hosts)
        out['records'] = {record_key(host['name']): _plain({'name': host['name'], 'pci_stats': host['pools'] if host['status'] == 'ok' else None,
                                                            'pci_hypervisor_hostname': host['hypervisor_hostname'],
                                                            'pci_hardware_changes': host['hardware_changes'],
                                                            'pci_out_of_service': host['out_of_service']})
                          for host in fleet['hosts'] if host['name'] in play and source.get(host['name']) == 'facts'}
        out['cache_written'] = []
        if params['plain_cache'] and cache is not None and _core_wraps_cache() and not self._task.check_mode:
            for host in fleet['hosts']:
                if host['status'] == 'ok' and source.get(host['name']) == 'facts' and cache.store(host['name'], facts_of[host['name']]):
                    out['cache_written'].append(host['name'])
        fitting = rejected = None
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
            changed = write_report(files, fleet, fitting, params['title'], rejected=rejected, request=request, aliases=aliases,
                                   check_mode=self._task.check_mode)
            out.update(files=files, changed=changed)
        missing = fleet['missing']
        if missing:
            self._display.warning(f'pci_fleet: {len(missing)} of {len(names)} hosts have no pci_stats: {", ".join(missing[:10])}'
                                  + (' ...' if len(missing) > 10 else ''))
        return out
