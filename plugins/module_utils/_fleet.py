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
from operator import itemgetter
from typing import Any, Iterable, Mapping

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import Alias, AliasRequest
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import COUNTERS, MdevType
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import MAX_GROUPS, candidates_from_pools, fit

FLEET_POOL_KEYS = ('vendor_id', 'product_id', 'dev_type')
# Above this many hosts the page lists each host on one line, without its pools (render_html).
HOST_DETAIL_LIMIT = 1000
_MDEV_MARK = 'mdev'     # the last part of the key of an mdev or vGPU pool: (_MDEV_MARK, type id, type name)
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
                                 'totals': dict.fromkeys(COUNTERS, 0), 'pools': [], 'hardware_changes': [], 'out_of_service': []})
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
                if 'mdev_type' in pool:     # slices: one fleet pool per type, never one per parent model only
                    key += ((_MDEV_MARK, pool['mdev_type'], pool.get('mdev_name')),)
                merged = merged_pools.get(key)
                if merged is None:
                    merged_pools[key] = merged = [0, 0, 0, 0, [name], tags, pool.get('vendor_name'), pool.get('product_name'), {}]
                elif merged[4][-1] != name:
                    merged[4].append(name)
                merged[0] += pool_count
                merged[1] += pool_total
                merged[2] += pool_allocated
                merged[3] += pool_unavailable
                if pool_unavailable:
                    _add_reasons(merged[8], pool.get('unavailable_reasons'))
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
                             'pools': stats, 'hardware_changes': facts.get('pci_hardware_changes') or [],
                             'out_of_service': facts.get('pci_out_of_service') or []})
    pools = []
    for key in sorted(merged_pools, key=lambda k: tuple(map(str, k))):   # str: facts may hold any type
        merged = merged_pools[key]
        pools.append({'count': merged[0], 'total': merged[1], 'allocated': merged[2], 'unavailable': merged[3],
                      'vendor_id': key[0], 'product_id': key[1], 'dev_type': key[2], 'tags': dict(merged[5] or {}),
                      'hosts': merged[4], 'vendor_name': merged[6], 'product_name': merged[7], 'unavailable_reasons': merged[8]})
        if isinstance(key[-1], tuple) and key[-1][:1] == (_MDEV_MARK,):
            pools[-1].update(mdev_type=key[-1][1], mdev_name=key[-1][2])
    return {
        'hosts': host_entries,
        'pools': pools,
        'totals': {'count': fleet_count, 'total': fleet_total, 'allocated': fleet_allocated, 'unavailable': fleet_unavailable},
        'missing': missing,
    }


def _add_reasons(into: dict[str, int], reasons: Any) -> None:
    """Add a pool's ``unavailable_reasons`` (reason -> count); anything else in the facts is left out."""
    if isinstance(reasons, Mapping):
        for reason, count in reasons.items():
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                into[str(reason)] = into.get(str(reason), 0) + count


def _why_not_free(pools: Iterable[Mapping[str, Any]]) -> str:
    """Why the devices of these pools that are not free are not: allocated, and unavailable per reason."""
    allocated = unavailable = matched = 0
    reasons: dict[str, int] = {}
    for pool in pools:
        matched += 1
        allocated += pool['allocated']
        unavailable += pool['unavailable']
        if pool['unavailable']:
            _add_reasons(reasons, pool.get('unavailable_reasons'))
    parts = [f'{allocated} allocated'] if allocated else []
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    shown = ranked if len(ranked) <= MAX_GROUPS else ranked[:MAX_GROUPS - 1]
    parts.extend(f'{count} unavailable ({reason})' for reason, count in shown)
    rest = unavailable - sum(count for _reason, count in shown)
    if rest > 0:
        parts.append(f'{rest} unavailable' + (' for other reasons' if shown else ''))
    if not matched:
        return ': no whitelisted device of this host matches it'
    return (': ' + ', '.join(parts)) if parts else ''


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
    Hosts of one hardware model with the same free devices are fitted once: fitting depends on
    nothing else, so they get the same answer.
    """
    fitting = []
    rejected = {}
    wanted = [item for item in request if item.count > 0]
    needed = sum(item.count for item in wanted)
    matches: dict[tuple, tuple[bool, ...]] = {}     # pool kind -> does each wanted alias match it
    fits: dict[tuple, tuple[dict[str, list[str]] | None, str | None]] = {}   # what was fitted -> (devices, or why not)
    for host in fleet['hosts']:
        if host['status'] != 'ok':
            rejected[host['name']] = 'its pci_stats are missing'
            continue
        whole = next((mark for mark in host.get('out_of_service') or () if isinstance(mark, Mapping) and mark.get('kind') == 'host'), None)
        if whole is not None:
            rejected[host['name']] = f'the host is out of service ({whole.get("mode")}): {whole.get("reason")}'
            continue
        try:
            entry = _fit_host(host, request, aliases, wanted, needed, matches, fits)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:   # facts this collection did not write
            entry = f'its pci_stats cannot be fitted: {type(exc).__name__}: {exc}'
        if isinstance(entry, str):
            rejected[host['name']] = entry
        else:
            fitting.append(entry)
    fitting.sort(key=lambda entry: (-sum(entry['free'].values()), entry['host']))
    return fitting, rejected


_KIND = itemgetter(*FLEET_POOL_KEYS)


def _kind(pool: Mapping[str, Any]) -> tuple:
    """Vendor, product, type and tags (in a fixed order) of a pool, and an mdev pool's type: what alias matching reads."""
    tags = pool.get('tags')
    kind = _KIND(pool) + ((tuple(tags.items()) if len(tags) == 1 else tuple(sorted(tags.items()))) if tags else (),)
    return kind + ((pool['mdev_type'], pool.get('mdev_name')),) if 'mdev_type' in pool else kind


def _pool_matches(pool: Mapping[str, Any], aliases: Mapping[str, Alias], wanted: list[AliasRequest],
                  matches: dict[tuple, tuple[bool, ...]], key: tuple | None = None) -> tuple[bool, ...]:
    """Whether each wanted alias matches the pool (memoised per vendor, product, type and tags)."""
    if key is None:
        key = _kind(pool)
    hit = matches.get(key)
    if hit is None:
        device = _PoolDevice(pool['vendor_id'], pool['product_id'], pool['dev_type'])
        tags = pool.get('tags') or {}
        if 'mdev_type' in pool:      # slices of a parent: only mdev aliases ask for them
            mdev_type = MdevType(str(pool['mdev_type']), pool.get('mdev_name'), None, None, None)
            parent = device if pool['vendor_id'] is not None else None
            hit = matches[key] = tuple(aliases[item.alias].matches_mdev(mdev_type, parent, tags) for item in wanted)
        else:
            hit = matches[key] = tuple(aliases[item.alias].matches(device, tags) for item in wanted)
    return hit


def _fit_host(host: Mapping[str, Any], request: list[AliasRequest], aliases: Mapping[str, Alias], wanted: list[AliasRequest],
              needed: int, matches: dict[tuple, tuple[bool, ...]],
              fits: dict[tuple, tuple[dict[str, list[str]] | None, str | None]]) -> dict[str, Any] | str:
    """The candidate entry of one host, or why the request does not fit there."""
    free = [0] * len(wanted)
    relevant = []
    for pool in host['pools']:
        count = pool['count']
        if not count:
            continue
        tags = pool.get('tags')      # _kind(pool), inline: this loop runs for every pool of the fleet
        key = _KIND(pool) + ((tuple(tags.items()) if len(tags) == 1 else tuple(sorted(tags.items()))) if tags else (),)
        if 'mdev_type' in pool:
            key += ((pool['mdev_type'], pool.get('mdev_name')),)
        hit = matches.get(key)
        if hit is None:
            hit = _pool_matches(pool, aliases, wanted, matches, key)
        if True in hit:
            relevant.append((pool, key))
            for index, matched in enumerate(hit):
                if matched:
                    free[index] += count
    short = [f'{item.alias}: {item.count} requested, {count} free'
             + _why_not_free(pool for pool in host['pools'] if _pool_matches(pool, aliases, wanted, matches)[index])
             for index, (item, count) in enumerate(zip(wanted, free)) if count < item.count]
    if short:
        return '; '.join(short)
    # Fitting reads of each pool its kind, NUMA node, PF and free addresses (candidates_from_pools): two
    # hosts alike in these get the same devices.
    try:
        signature: tuple | None = tuple((key, pool.get('numa_node'), pool.get('parent_addr'),
                                         tuple((pool.get('free_addresses') or ())[:2 * needed]),
                                         pool['count'] if 'mdev_type' in pool else None) for pool, key in relevant)
        known = fits.get(signature)
    except TypeError:       # facts this collection did not write: fitted, not remembered
        signature = known = None
    if known is None:
        # mdev aliases are met from counts (slices have no address until they are made); the rest are fitted
        whole = [item for item in request if not aliases[item.alias].is_mdev]
        trimmed = [dict(pool, free_addresses=(pool.get('free_addresses') or [])[:2 * needed]) for pool, _key in relevant
                   if 'mdev_type' not in pool]
        result = fit(whole, aliases, candidates_from_pools(trimmed))
        known = (({name: [str(a) for a in addresses] for name, addresses in result.devices.items()}, None) if result.ok
                 else (None, '; '.join(result.problems)))
        if known[0] is not None:
            known[0].update(_slices(request, aliases, wanted, relevant, matches))
        if signature is not None:
            fits[signature] = known
    devices, problem = known
    if devices is None:
        return problem
    return {'host': host['name'], 'hypervisor_hostname': host['hypervisor_hostname'],
            'free': {item.alias: count for item, count in zip(wanted, free)},
            'devices': {name: list(addresses) for name, addresses in devices.items()}}


def _slices(request: list[AliasRequest], aliases: Mapping[str, Alias], wanted: list[AliasRequest], relevant: list[tuple],
            matches: dict[tuple, tuple[bool, ...]]) -> dict[str, list[str]]:
    """For each mdev alias, where its slices would come from: ``<type> on <parent>`` once per slice, in pool order."""
    left = {id(pool): pool['count'] for pool, _key in relevant}
    chosen: dict[str, list[str]] = {}
    for item in request:
        if not aliases[item.alias].is_mdev or item.count <= 0:
            continue
        index = wanted.index(item)
        chosen[item.alias] = []
        for pool, key in relevant:
            while matches[key][index] and left[id(pool)] > 0 and len(chosen[item.alias]) < item.count:
                chosen[item.alias].append(f'{pool.get("mdev_name") or pool["mdev_type"]} on {pool.get("parent_addr")}')
                left[id(pool)] -= 1
    return chosen


# -- the report page --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1d1d1f}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1em;margin:1.5em 0 .4em}
table{border-collapse:collapse;margin:.4em 0}th,td{padding:.25em .7em;text-align:left;border-bottom:1px solid #ddd;white-space:nowrap;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.why{white-space:normal;max-width:36em;font-size:.9em}
.ids,.meta{color:#666;font-size:.85em}
.bar{display:flex;width:14em;height:.9em;background:#eee;border-radius:2px;overflow:hidden;margin-top:.25em}
.bar span{display:block;height:100%}.free{background:#2e9e4f}.used{background:#d9822b}.blocked{background:#9a9a9a}
.missing,.rejected{color:#b00020}.legend{margin:.2em 0}.legend span{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:middle}
"""


_ESCAPED: dict[str, str] = {}


def _esc(value: Any) -> str:
    if type(value) is str:      # pylint: disable=unidiomatic-typecheck  # the page repeats ids, types and addresses
        escaped = _ESCAPED.get(value)
        if escaped is None:
            if len(_ESCAPED) > 65536:
                _ESCAPED.clear()
            escaped = _ESCAPED[value] = html.escape(value, quote=True)
        return escaped
    return html.escape('' if value is None else str(value), quote=True)


def _or_dash(value: Any) -> Any:
    return '-' if value is None or value == '' else value


def _tags_text(tags: Mapping[str, Any] | None) -> str:
    return ', '.join(f'{key}={value}' for key, value in sorted((tags or {}).items())) or '-'


_BARS: dict[tuple[int, int, int, int], str] = {}


def _bar(pool: Mapping[str, Any]) -> str:
    key = (pool['count'], pool['allocated'], pool['unavailable'], pool['total'])
    if all(type(value) is int for value in key):    # pylint: disable=unidiomatic-typecheck  # True == 1, but shows as True
        drawn = _BARS.get(key)
        if drawn is None:
            if len(_BARS) > 65536:
                _BARS.clear()
            drawn = _BARS[key] = _draw_bar(pool)
        return drawn
    return _draw_bar(pool)


def _draw_bar(pool: Mapping[str, Any]) -> str:
    total = pool['total'] or 1
    parts = (('free', pool['count'], 'free'), ('used', pool['allocated'], 'allocated'), ('blocked', pool['unavailable'], 'unavailable'))
    spans = ''.join(f'<span class="{css}" style="width:{100 * value / total:.1f}%" title="{value} {label}"></span>'
                    for css, value, label in parts if value)
    return (f'<div class="bar" role="img" aria-label="{pool["count"]} free, {pool["allocated"]} allocated, '
            f'{pool["unavailable"]} unavailable of {pool["total"]}">{spans}</div>')


def _device_cell(pool: Mapping[str, Any]) -> str:
    """The pool's vendor and product names (pci.ids, when the host had them) over its ids."""
    ids = f'{_esc(pool["vendor_id"])}:{_esc(pool["product_id"])}'
    names = ' '.join(_esc(pool.get(key)) for key in ('vendor_name', 'product_name') if pool.get(key))
    return f'<td>{names}<br><span class="ids">{ids}</span></td>' if names else f'<td>{ids}</td>'


def _why_cell(pool: Mapping[str, Any]) -> str:
    reasons: dict[str, int] = {}
    if pool['unavailable']:
        _add_reasons(reasons, pool.get('unavailable_reasons'))
    lines = [f'{count} &times; {_esc(reason)}' for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))]
    rest = pool['unavailable'] - sum(reasons.values())
    if rest > 0:
        lines.append(f'{rest} &times; reason not reported')
    return f'<td class="why">{"<br>".join(lines) or "-"}</td>'


def _alias_names(pool: Mapping[str, Any], aliases: Mapping[str, Alias] | None) -> str:
    if not aliases:
        return ''
    device = _PoolDevice(pool['vendor_id'], pool['product_id'], pool['dev_type'])
    try:
        names = [name for name, alias in aliases.items() if alias.matches(device, pool.get('tags') or {})]
    except (TypeError, AttributeError):    # facts this collection did not write
        names = []
    return f'<td>{_esc(", ".join(names) or "-")}</td>'


def _pool_row(pool: Mapping[str, Any], aliases: Mapping[str, Alias] | None, extra: str = '',
              cells: dict[tuple, tuple[str, str]] | None = None) -> str:
    """A pool's row. ``cells``: the cells that depend on the pool's kind only, by kind, shared by the rows of one page."""
    kind = _plain_kind(pool) if cells is not None else None
    known = cells.get(kind) if kind is not None else None
    if known is None:
        known = (f'{_device_cell(pool)}<td>{_esc(_type_text(pool))}</td>',
                 f'{_alias_names(pool, aliases)}<td>{_esc(_tags_text(pool.get("tags")))}</td>')
        if kind is not None:
            cells[kind] = known
    unavailable = pool['unavailable']
    why = _NO_WHY if type(unavailable) is int and not unavailable else _why_cell(pool)  # pylint: disable=unidiomatic-typecheck
    return (f'<tr>{known[0]}{extra}{known[1]}<td class="n">{pool["count"]}</td><td class="n">{pool["allocated"]}</td>'
            f'<td class="n">{unavailable}</td><td class="n">{pool["total"]}</td><td>{_bar(pool)}</td>{why}</tr>')


_NO_WHY = '<td class="why">-</td>'


def _type_text(pool: Mapping[str, Any]) -> str:
    """The type column: dev_type, and for slices their type (``type-MDEV nvidia-470 (GRID A100-4C)``)."""
    if pool.get('mdev_type') is None:
        return str(pool['dev_type'])
    name = f' ({pool["mdev_name"]})' if pool.get('mdev_name') else ''
    return f'{pool["dev_type"]} {pool["mdev_type"]}{name}'


def _plain_kind(pool: Mapping[str, Any]) -> tuple | None:
    """What the kind cells of a pool's row show, as a key; None when a value is not a plain string (an int
    and a bool that are equal would share a key but not a text)."""
    values = (pool['vendor_id'], pool['product_id'], pool.get('vendor_name'), pool.get('product_name'), pool['dev_type'],
              pool.get('mdev_type'), pool.get('mdev_name'))
    tags = pool.get('tags') or {}
    if type(tags) is not dict:      # pylint: disable=unidiomatic-typecheck
        return None
    items = tuple(sorted(tags.items())) if len(tags) > 1 else tuple(tags.items())
    for value in values + tuple(part for item in items for part in item):
        if value is not None and type(value) is not str:     # pylint: disable=unidiomatic-typecheck
            return None
    return values + items


def _head(aliases: Mapping[str, Alias] | None, extra: str = '') -> str:
    return ('<tr><th>device</th><th>type</th>' + extra + ('<th>aliases</th>' if aliases else '')
            + '<th>tags</th><th>free</th><th>allocated</th><th>unavailable</th><th>total</th><th></th><th>why unavailable</th></tr>')


_LEGEND = ('<p class="legend"><span class="free"></span><b>free</b>: whitelisted, held by no domain, can be given now</p>'
           '<p class="legend"><span class="used"></span><b>allocated</b>: held by a domain (its live or persistent configuration)</p>'
           '<p class="legend"><span class="blocked"></span><b>unavailable</b> (grey): whitelisted and held by no domain, but it cannot '
           'be given now - an IOMMU group sibling is in another domain or on a host driver, its PF or one of its VFs is allocated, '
           'the host uses it, or it is not on vfio-pci and libvirt may not rebind it; the column "why unavailable" says which</p>')


def _entry_text(entry: Any) -> str:
    what = [f'{entry.vendor_id or "*"}:{entry.product_id or "*"}', entry.device_type or 'type-PCI or type-VF',
            f'numa_policy {entry.numa_policy}']
    what.extend(f'{key}={value}' for key, value in entry.tags)
    return ', '.join(what)


def _request_section(request: list[AliasRequest], aliases: Mapping[str, Alias] | None) -> list[str]:
    out = [f'<h2>Request</h2><p id="request"><b>{_esc(",".join(f"{item.alias}:{item.count}" for item in request))}</b></p>']
    if aliases:
        out.append('<table id="aliases"><tr><th>alias</th><th>matches</th></tr>')
        for name, alias in sorted(aliases.items()):
            entries = '<br>'.join(_esc(_entry_text(entry)) for entry in alias.entries)
            out.append(f'<tr><td>{_esc(name)}</td><td>{entries}</td></tr>')
        out.append('</table>')
    return out


def render_html(fleet: Mapping[str, Any], candidate_hosts: list[dict[str, Any]] | None = None, title: str = 'PCI fleet', *,
                rejected: Mapping[str, str] | None = None, request: list[AliasRequest] | None = None,
                aliases: Mapping[str, Alias] | None = None, generated_at: str | None = None,
                host_detail_limit: int = HOST_DETAIL_LIMIT) -> str:
    """One self-contained page: no script, no style sheet, font or image from anywhere else.

    A fleet of more than ``host_detail_limit`` hosts gets one line per host (its counts) instead of
    a table of pools per host: tens of thousands of tables are neither written in a second nor read.

    ``rejected``: why each host cannot satisfy ``request``; ``aliases``: what each alias means (a
    column says which aliases match each pool); ``generated_at``: the report's time, as the caller
    words it (the page reads no clock).
    """
    totals = fleet['totals']
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
           f'<title>{_esc(title)}</title><style>{_CSS}</style></head><body>',
           f'<h1>{_esc(title)}</h1>']
    if generated_at is not None:
        out.append(f'<p class="meta" id="generated-at">Report of {_esc(generated_at)}</p>')
    out += [f'<p>{len(fleet["hosts"])} hosts ({len(fleet["missing"])} without pci_stats), {len(fleet["pools"])} pools: '
            f'<b>{totals["count"]}</b> free, {totals["allocated"]} allocated, {totals["unavailable"]} unavailable, '
            f'{totals["total"]} whitelisted devices.</p>', _LEGEND]
    if fleet['missing']:
        out.append('<h2>Hosts without pci_stats</h2><ul>')
        out.extend(f'<li class="missing" id="missing-{_esc(h["name"])}">{_esc(h["name"])}: {_esc(h["reason"])}</li>'
                   for h in fleet['hosts'] if h['status'] != 'ok')
        out.append('</ul>')
    if request is not None:
        out.extend(_request_section(request, aliases))
    if candidate_hosts is not None:
        out.append('<h2>Hosts that can satisfy the request</h2>')
        if candidate_hosts:
            out.append('<table id="candidates"><tr><th>host</th><th>free of the requested aliases</th><th>devices it would give</th></tr>')
            for entry in candidate_hosts:
                devices = '; '.join(f'{alias}: {", ".join(addresses) or "-"}' for alias, addresses in entry['devices'].items())
                free = ', '.join(f'{alias} {count}' for alias, count in entry['free'].items())
                out.append(f'<tr><td>{_esc(entry["host"])}</td><td>{_esc(free)}</td><td>{_esc(devices)}</td></tr>')
            out.append('</table>')
        else:
            out.append('<p class="rejected" id="no-candidate">No host can satisfy the request; why, per host, below.</p>')
    if rejected:
        out.append('<h2>Hosts that cannot satisfy the request</h2><table id="rejected"><tr><th>host</th><th>why</th></tr>')
        out.extend(f'<tr><td>{_esc(name)}</td><td class="why">{_esc(why)}</td></tr>' for name, why in rejected.items())
        out.append('</table>')
    out.extend(_day2_section(fleet['hosts']))
    out.append(f'<h2>Pools across the fleet</h2><table id="fleet-pools">{_head(aliases)}')
    cells: dict[tuple, tuple[str, str]] = {}
    out.extend(_pool_row(pool, aliases) for pool in fleet['pools'])
    out.append('</table><h2>Hosts</h2>')
    shown_hosts = [host for host in fleet['hosts'] if host['status'] == 'ok']
    if len(shown_hosts) > host_detail_limit:
        out.extend(_host_summary(shown_hosts, host_detail_limit))
        shown_hosts = []
    for host in shown_hosts:
        name = host['name']
        shown = f' ({_esc(host["hypervisor_hostname"])})' if host['hypervisor_hostname'] not in (None, name) else ''
        out.append(f'<h3 id="host-{_esc(name)}">{_esc(name)}{shown}: {host["totals"]["count"]} free of {host["totals"]["total"]}</h3>')
        out.append(f'<table class="host">{_head(aliases, "<th>NUMA</th><th>PF</th>")}')
        out.extend(_pool_row(pool, aliases, f'<td>{_esc(_or_dash(pool.get("numa_node")))}</td><td>{_esc(_or_dash(pool.get("parent_addr")))}</td>',
                             cells)
                   for pool in host['pools'])
        out.append('</table>')
    out.append('</body></html>\n')
    return '\n'.join(out)


def _mark_target(mark: Mapping[str, Any]) -> str:
    return 'the host' if mark.get('kind') == 'host' else f'{mark.get("kind")} {mark.get("target")}'


def _day2_section(hosts: list[Mapping[str, Any]]) -> list[str]:
    """Hosts with hardware changes or out-of-service marks, a line each (none: no section)."""
    lines = []
    for host in hosts:
        parts = [f'hardware changed: {item.get("address")} ({"; ".join(item.get("changes") or [])})'
                 for item in host.get('hardware_changes') or () if isinstance(item, Mapping)]
        parts += [f'out of service ({mark.get("mode")}): {_mark_target(mark)} - {mark.get("reason")}'
                  for mark in host.get('out_of_service') or () if isinstance(mark, Mapping)]
        if parts:
            lines.append(f'<li id="day2-{_esc(host["name"])}">{_esc(host["name"])}: {_esc("; ".join(parts))}</li>')
    if not lines:
        return []
    return ['<h2>Hardware changes and devices out of service</h2><ul id="day2">', *lines, '</ul>']


def _host_summary(hosts: list[Mapping[str, Any]], limit: int) -> list[str]:
    """The Hosts section of a large fleet: one row per host, its totals and their bar."""
    out = [f'<p class="meta" id="hosts-summary">{len(hosts)} hosts: more than {limit}, so one line each; the pools of '
           'each host are in fleet.json (or ask pci_fleet with query).</p>',
           '<table id="hosts"><tr><th>host</th><th>hypervisor</th><th>free</th><th>allocated</th><th>unavailable</th>'
           '<th>total</th><th></th></tr>']
    for host in hosts:
        name, totals = host['name'], host['totals']
        out.append(f'<tr id="host-{_esc(name)}"><td>{_esc(name)}</td><td>{_esc(_or_dash(host["hypervisor_hostname"]))}</td>'
                   f'<td class="n">{totals["count"]}</td><td class="n">{totals["allocated"]}</td><td class="n">{totals["unavailable"]}</td>'
                   f'<td class="n">{totals["total"]}</td><td>{_bar(totals)}</td></tr>')
    out.append('</table>')
    return out


def render_json(fleet: Mapping[str, Any], candidate_hosts: list[dict[str, Any]] | None = None, *,
                rejected: Mapping[str, str] | None = None, request: list[AliasRequest] | None = None,
                generated_at: str | None = None) -> str:
    """fleet.json: the fleet, and with a request its text, the candidates and why each other host is rejected."""
    report = dict(fleet)
    if request is not None:
        report['request'] = ','.join(f'{item.alias}:{item.count}' for item in request)
    if candidate_hosts is not None:
        report['candidates'] = candidate_hosts
    if rejected is not None:
        report['rejected'] = dict(rejected)
    if generated_at is not None:
        report['generated_at'] = generated_at
    return json.dumps(report, indent=2, sort_keys=True, default=str) + '\n'


def report_time(previous_json: str | None) -> str | None:
    """The ``generated_at`` of an earlier fleet.json text; None when there is none (a report rewritten only when its
    content changes keeps its time)."""
    try:
        value = json.loads(previous_json).get('generated_at') if previous_json else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
