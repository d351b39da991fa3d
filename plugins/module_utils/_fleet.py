# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""The fleet view on the controller: hosts' pci_stats facts aggregated, requests fitted to hosts.

Pure functions over plain data; pci_fleet (an action plugin) feeds them hostvars.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias, AliasRequest
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import COUNTERS
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import candidates_from_pools, fit
FLEET_POOL_KEYS = ('vendor_id', 'product_id', 'dev_type')
_POOL_REQUIRED = COUNTERS + FLEET_POOL_KEYS


def _check_pools(stats: Any) -> str:
    """Why the fact is not a list of pools (called once a host's pools failed to add up)."""
    if not isinstance(stats, list):
        return f'pci_stats is a {type(stats).__name__}, not a list of pools'
    for index, pool in enumerate(stats):
        if not isinstance(pool, Mapping):
            return f'pci_stats[{index}] is not a dict'
        missing = [key for key in _POOL_REQUIRED if key not in pool]
        if missing:
            return f'pci_stats[{index}] lacks {", ".join(missing)}'
        if not all(isinstance(pool[key], int) and not isinstance(pool[key], bool) for key in COUNTERS):
            return f'pci_stats[{index}]: {", ".join(COUNTERS)} must be whole numbers'
        tags = pool.get('tags')
        if tags is not None and not isinstance(tags, Mapping):
            return f'pci_stats[{index}].tags is not a dict'
    return 'pci_stats are not pools'


class _BadHost(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.name, self.reason = name, reason


def aggregate(hosts: Iterable[tuple[str, Mapping[str, Any] | None]]) -> dict[str, Any]:
    """``hosts``: (inventory name, the host's ansible_facts or None when it has none).

    Returns ``{hosts, pools, totals, missing}``: per host its pools and totals (hosts without
    usable facts are listed with ``status: missing`` and why, never dropped), per pool across the
    fleet (vendor, product, type and tags; NUMA nodes and PFs are per host), and fleet totals.
    """
    hosts = list(hosts)
    bad: dict[str, str] = {}
    while True:
        try:
            return _aggregate(hosts, bad)
        except _BadHost as exc:   # rare: start again without the host whose facts are not pools
            bad[exc.name] = exc.reason


def _aggregate(hosts: list[tuple[str, Mapping[str, Any] | None]], bad: Mapping[str, str]) -> dict[str, Any]:
    # The hot loop of pci_fleet (10,000 hosts x 50 pools in bench/fleet): plain locals and lists,
    # the facts are checked only through what adding them up raises or yields.
    host_entries = []
    missing = []
    merged_pools: dict[tuple, list] = {}
    fleet_count = fleet_total = fleet_allocated = fleet_unavailable = 0
    for name, facts in hosts:
        stats = facts.get('pci_stats') if facts else None
        problem = bad.get(name)
        if stats is None:
            problem = 'no pci_stats fact (hypervisor_pci_stats has not run on it, or its facts are not cached)'
        if problem is not None:
            missing.append(name)
            host_entries.append({'name': name, 'status': 'missing', 'reason': problem, 'hypervisor_hostname': None,
                                 'totals': dict.fromkeys(COUNTERS, 0), 'pools': []})
            continue
        count = total = allocated = unavailable = 0
        try:
            for pool in stats:
                pool_count, pool_total, pool_allocated, pool_unavailable = pool['count'], pool['total'], pool['allocated'], pool['unavailable']
                count += pool_count
                total += pool_total
                allocated += pool_allocated
                unavailable += pool_unavailable
                tags = pool.get('tags')
                if tags:
                    key = (pool['vendor_id'], pool['product_id'], pool['dev_type'],
                           tuple(tags.items()) if len(tags) == 1 else tuple(sorted(tags.items())))
                else:
                    key = (pool['vendor_id'], pool['product_id'], pool['dev_type'])
                merged = merged_pools.get(key)
                if merged is None:
                    merged_pools[key] = merged = [0, 0, 0, 0, [name], tags]
                elif merged[4][-1] != name:
                    merged[4].append(name)
                merged[0] += pool_count
                merged[1] += pool_total
                merged[2] += pool_allocated
                merged[3] += pool_unavailable
        except (KeyError, TypeError, AttributeError, ValueError):
            raise _BadHost(name, _check_pools(stats)) from None
        if not (isinstance(count, int) and isinstance(total, int) and isinstance(allocated, int) and isinstance(unavailable, int)):
            raise _BadHost(name, _check_pools(stats))
        fleet_count += count
        fleet_total += total
        fleet_allocated += allocated
        fleet_unavailable += unavailable
        host_entries.append({'name': name, 'status': 'ok', 'reason': None, 'hypervisor_hostname': facts.get('pci_hypervisor_hostname'),
                             'totals': {'count': count, 'total': total, 'allocated': allocated, 'unavailable': unavailable},
                             'pools': stats})
    pools = []
    for key in sorted(merged_pools, key=lambda k: tuple(map(str, k))):   # str: facts may hold any type
        merged = merged_pools[key]
        pools.append({'count': merged[0], 'total': merged[1], 'allocated': merged[2], 'unavailable': merged[3],
                      'vendor_id': key[0], 'product_id': key[1], 'dev_type': key[2], 'tags': dict(merged[5] or {}),
                      'hosts': merged[4]})
    return {
        'hosts': host_entries,
        'pools': pools,
        'totals': {'count': fleet_count, 'total': fleet_total, 'allocated': fleet_allocated, 'unavailable': fleet_unavailable},
        'missing': missing,
    }


class _PoolDevice:
    """What alias matching reads of a device, for a whole pool."""

    __slots__ = ('vendor_id', 'product_id', 'dev_type')

    def __init__(self, vendor_id: str, product_id: str, dev_type: str) -> None:
        self.vendor_id, self.product_id, self.dev_type = vendor_id, product_id, dev_type


def candidates(fleet: Mapping[str, Any], request: list[AliasRequest], aliases: Mapping[str, Alias]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Hosts that can satisfy ``request``, best first (most free of the requested aliases, then name),
    each with the devices it would give; and why each other host cannot.

    Pools the request's aliases do not match are skipped, and a host whose matching pools hold
    fewer free devices than asked is answered from the counts alone; only the others are fitted
    device by device (at most twice the request from each pool: enough for any PF/VF exclusion).
    """
    fitting = []
    rejected = {}
    wanted = [item for item in request if item.count > 0]
    needed = sum(item.count for item in wanted)
    matches: dict[tuple, tuple[bool, ...]] = {}     # pool key -> does each wanted alias match it
    for host in fleet['hosts']:
        if host['status'] != 'ok':
            rejected[host['name']] = 'its pci_stats are missing'
            continue
        try:
            entry = _fit_host(host, request, aliases, wanted, needed, matches)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:   # facts this collection did not write
            entry = f'its pci_stats cannot be fitted: {type(exc).__name__}: {exc}'
        if isinstance(entry, str):
            rejected[host['name']] = entry
        else:
            fitting.append(entry)
    fitting.sort(key=lambda entry: (-sum(entry['free'].values()), entry['host']))
    return fitting, rejected


def _fit_host(host: Mapping[str, Any], request: list[AliasRequest], aliases: Mapping[str, Alias], wanted: list[AliasRequest],
              needed: int, matches: dict[tuple, tuple[bool, ...]]) -> dict[str, Any] | str:
    """The candidate entry of one host, or why the request does not fit there."""
    free = [0] * len(wanted)
    relevant = []
    for pool in host['pools']:
        if not pool['count']:
            continue
        tags = pool.get('tags') or {}
        key = (pool['vendor_id'], pool['product_id'], pool['dev_type'], tuple(sorted(tags.items())))
        hit = matches.get(key)
        if hit is None:
            device = _PoolDevice(pool['vendor_id'], pool['product_id'], pool['dev_type'])
            hit = matches[key] = tuple(aliases[item.alias].matches(device, tags) for item in wanted)
        if any(hit):
            relevant.append(pool)
            for index, matched in enumerate(hit):
                if matched:
                    free[index] += pool['count']
    short = [f'{item.alias}: {item.count} requested, {count} free' for item, count in zip(wanted, free) if count < item.count]
    if short:
        return '; '.join(short)
    trimmed = [dict(pool, free_addresses=(pool.get('free_addresses') or [])[:2 * needed]) for pool in relevant]
    result = fit(request, aliases, candidates_from_pools(trimmed))
    if not result.ok:
        return '; '.join(result.problems)
    return {'host': host['name'], 'hypervisor_hostname': host['hypervisor_hostname'],
            'free': {item.alias: count for item, count in zip(wanted, free)},
            'devices': {name: [str(a) for a in addresses] for name, addresses in result.devices.items()}}


# -- the report page --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1d1d1f}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1em;margin:1.5em 0 .4em}
table{border-collapse:collapse;margin:.4em 0}th,td{padding:.25em .7em;text-align:left;border-bottom:1px solid #ddd;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:flex;width:14em;height:.9em;background:#eee;border-radius:2px;overflow:hidden}
.bar span{display:block;height:100%}.free{background:#2e9e4f}.used{background:#d9822b}.blocked{background:#9a9a9a}
.missing{color:#b00020}.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
"""


def _esc(value: Any) -> str:
    return html.escape('' if value is None else str(value), quote=True)


def _or_dash(value: Any) -> Any:
    return '-' if value is None or value == '' else value


def _tags_text(tags: Mapping[str, Any] | None) -> str:
    return ', '.join(f'{key}={value}' for key, value in sorted((tags or {}).items())) or '-'


def _bar(pool: Mapping[str, Any]) -> str:
    total = pool['total'] or 1
    parts = (('free', pool['count'], 'free'), ('used', pool['allocated'], 'allocated'), ('blocked', pool['unavailable'], 'unavailable'))
    spans = ''.join(f'<span class="{css}" style="width:{100 * value / total:.1f}%" title="{value} {label}"></span>'
                    for css, value, label in parts if value)
    return f'<div class="bar" role="img" aria-label="{pool["count"]} free of {pool["total"]}">{spans}</div>'


def _pool_row(pool: Mapping[str, Any], extra: str = '') -> str:
    return (f'<tr><td>{_esc(pool["vendor_id"])}:{_esc(pool["product_id"])}</td><td>{_esc(pool["dev_type"])}</td>{extra}'
            f'<td>{_esc(_tags_text(pool.get("tags")))}</td><td class="n">{pool["count"]}</td><td class="n">{pool["allocated"]}</td>'
            f'<td class="n">{pool["unavailable"]}</td><td class="n">{pool["total"]}</td><td>{_bar(pool)}</td></tr>')


_HEAD = '<th>free</th><th>allocated</th><th>unavailable</th><th>total</th><th></th>'


def render_html(fleet: Mapping[str, Any], candidate_hosts: list[dict[str, Any]] | None = None, title: str = 'PCI fleet') -> str:
    """One self-contained page: no script, no style sheet, font or image from anywhere else."""
    totals = fleet['totals']
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
           f'<title>{_esc(title)}</title><style>{_CSS}</style></head><body>',
           f'<h1>{_esc(title)}</h1>',
           f'<p>{len(fleet["hosts"])} hosts ({len(fleet["missing"])} without pci_stats), {len(fleet["pools"])} pools: '
           f'<b>{totals["count"]}</b> free, {totals["allocated"]} allocated, {totals["unavailable"]} unavailable, '
           f'{totals["total"]} whitelisted devices.</p>',
           '<p class="legend"><span class="free"></span>free<span class="used"></span>allocated'
           '<span class="blocked"></span>unavailable</p>']
    if fleet['missing']:
        out.append('<h2>Hosts without pci_stats</h2><ul>')
        out.extend(f'<li class="missing" id="missing-{_esc(h["name"])}">{_esc(h["name"])}: {_esc(h["reason"])}</li>'
                   for h in fleet['hosts'] if h['status'] != 'ok')
        out.append('</ul>')
    if candidate_hosts is not None:
        out.append('<h2>Hosts that can satisfy the request</h2>')
        if candidate_hosts:
            out.append('<table><tr><th>host</th><th>free of the requested aliases</th><th>devices it would give</th></tr>')
            for entry in candidate_hosts:
                devices = '; '.join(f'{alias}: {", ".join(addresses) or "-"}' for alias, addresses in entry['devices'].items())
                free = ', '.join(f'{alias} {count}' for alias, count in entry['free'].items())
                out.append(f'<tr><td>{_esc(entry["host"])}</td><td>{_esc(free)}</td><td>{_esc(devices)}</td></tr>')
            out.append('</table>')
        else:
            out.append('<p>None.</p>')
    out.append(f'<h2>Pools across the fleet</h2><table id="fleet-pools"><tr><th>vendor:product</th><th>type</th><th>tags</th>{_HEAD}</tr>')
    out.extend(_pool_row(pool) for pool in fleet['pools'])
    out.append('</table><h2>Hosts</h2>')
    for host in fleet['hosts']:
        if host['status'] != 'ok':
            continue
        name = host['name']
        shown = f' ({_esc(host["hypervisor_hostname"])})' if host['hypervisor_hostname'] not in (None, name) else ''
        out.append(f'<h3 id="host-{_esc(name)}">{_esc(name)}{shown}: {host["totals"]["count"]} free of {host["totals"]["total"]}</h3>')
        out.append(f'<table class="host"><tr><th>vendor:product</th><th>type</th><th>NUMA</th><th>PF</th><th>tags</th>{_HEAD}</tr>')
        out.extend(_pool_row(pool, f'<td>{_esc(_or_dash(pool.get("numa_node")))}</td><td>{_esc(_or_dash(pool.get("parent_addr")))}</td>')
                   for pool in host['pools'])
        out.append('</table>')
    out.append('</body></html>\n')
    return '\n'.join(out)


def render_json(fleet: Mapping[str, Any], candidate_hosts: list[dict[str, Any]] | None = None) -> str:
    report = dict(fleet)
    if candidate_hosts is not None:
        report['candidates'] = candidate_hosts
    return json.dumps(report, indent=2, sort_keys=True, default=str) + '\n'
