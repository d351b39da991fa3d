# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils is PRIVATE and should only be used by this collection. Breaking changes can occur any time.

"""pci_attachment's run: plan under the host lock, attach with rollback, detach with confirmation.

Every decision is made before the first change. A failed attach (or metadata write) detaches
what this run attached; a detach is confirmed by libvirt's device-removed event or by the
device's absence from the live XML, and reported "still attached" when neither comes in time.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.passthrough.libvirt.plugins.module_utils import _hoststate
from ansible_collections.passthrough.libvirt.plugins.module_utils._address import PciAddress, PciAddressError
from ansible_collections.passthrough.libvirt.plugins.module_utils._hoststate import HostLock
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import (
    ALIAS_PREFIX,
    DomainHandle,
    EventLoop,
    Libvirt,
    LibvirtCallFailed,
    allocations as domain_allocations,
    hostdev_xml,
    numa_nodes,
    parse_hostdevs,
)
from ansible_collections.passthrough.libvirt.plugins.module_utils._pools import STATUS_AVAILABLE, assess, candidates, fit
from ansible_collections.passthrough.libvirt.plugins.module_utils._spec import AliasRequest, SpecError, Whitelist, parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._sysfs import Sysfs


# How long a device gone from the live XML may wait for its device-removed event.
EVENT_GRACE = 2.0


class AttachmentError(Exception):
    """Refused before any change: the message names the field and the value."""


class AttachmentFailed(Exception):
    """A change failed; the message says what was undone or what was left."""


@dataclass
class Attached:
    """One device of this collection in the domain."""

    attachment_id: str
    address: PciAddress
    alias: str | None
    live: bool = False
    config: bool = False

    @property
    def libvirt_alias(self) -> str:
        return ALIAS_PREFIX + self.attachment_id

    def record(self) -> dict[str, Any]:
        return {'attachment_id': self.attachment_id, 'address': str(self.address), 'alias': self.alias}


@dataclass
class Plan:
    attach: list[tuple[PciAddress, str | None]] = field(default_factory=list)     # (address, alias)
    detach: list[Attached] = field(default_factory=list)


def _check_uuid(where: str, value: Any) -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise AttachmentError(f'{where}: {value!r} is not an attachment id (a UUID)') from None


class AttachmentRun:
    """``open_domain`` (tests only): returns a DomainHandle-like object, to inject a libvirt failure."""

    def __init__(self, params: dict[str, Any], check_mode: bool, open_domain: Callable[[Libvirt, str], Any] | None = None) -> None:
        self.params = params
        self.check_mode = check_mode
        self.open_domain = open_domain or DomainHandle
        self.confirmed: dict[str, str] = {}   # attachment id -> how its removal was confirmed

    # -- input -----------------------------------------------------------------------------------
    def _parse(self) -> tuple[dict, list | None, list[PciAddress] | None, list[str] | None]:
        params = self.params
        state = params['state']
        aliases = parse_aliases(params.get('aliases'))
        request = None
        if params.get('request') is not None:
            if params.get('aliases') is None:
                raise SpecError('request: needs aliases to say what each alias name means')
            request = parse_request(params['request'], aliases)
        addresses = None
        if params.get('addresses') is not None:
            addresses = []
            for index, text in enumerate(params['addresses']):
                try:
                    addresses.append(PciAddress.parse(text))
                except PciAddressError as exc:
                    raise AttachmentError(f'addresses[{index}]: {exc}') from None
        ids = None
        if params.get('attachment_ids') is not None:
            if state != 'absent':
                raise AttachmentError('attachment_ids: only with state=absent')
            ids = [_check_uuid(f'attachment_ids[{index}]', value) for index, value in enumerate(params['attachment_ids'])]
        timeout = params.get('timeout', 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise AttachmentError(f'timeout: {timeout!r} must be a number of seconds above 0 and at most 3600')
        chosen = [name for name, value in (('request', request), ('addresses', addresses), ('attachment_ids', ids)) if value is not None]
        if state == 'present' and len(chosen) != 1:
            raise AttachmentError('state=present needs exactly one of request (with aliases) or addresses')
        if state == 'absent' and len(chosen) != 1:
            raise AttachmentError('state=absent needs exactly one of request, addresses or attachment_ids')
        return aliases, request, addresses, ids

    def _flags(self, dom: Any) -> tuple[bool, bool]:
        active, persistent = dom.active(), dom.persistent()
        live = self.params.get('live')
        config = self.params.get('persistent')
        live = active if live is None else live
        config = persistent if config is None else config
        if live and not active:
            raise AttachmentError(f'live: true, but domain {dom.name!r} is shut off')
        if config and not persistent:
            raise AttachmentError(f'persistent: true, but domain {dom.name!r} is transient (it has no persistent configuration)')
        if not live and not config:
            raise AttachmentError(f'live and persistent are both false for domain {dom.name!r}: nothing would change')
        return live, config

    # -- the domain now --------------------------------------------------------------------------
    @staticmethod
    def _ours(dom: Any) -> list[Attached]:
        """Our attachments, in attach order (metadata order; ones without metadata last)."""
        found: dict[str, Attached] = {}
        sources = []
        if dom.active():
            sources.append((parse_hostdevs(dom.xml()), True))
        if dom.persistent():
            sources.append((parse_hostdevs(dom.xml(inactive=True)), False))
        for hostdevs, live in sources:
            for hostdev in hostdevs:
                if hostdev.attachment_id is None:
                    continue
                item = found.setdefault(hostdev.attachment_id, Attached(hostdev.attachment_id, hostdev.address, None))
                if live:
                    item.live = True
                else:
                    item.config = True
        # The persistent configuration's record first, the live one's for what only runs.
        records = dom.metadata(live=False) if dom.persistent() else []
        if dom.active():
            known = {record['id'] for record in records}
            records += [record for record in dom.metadata(live=True) if record['id'] not in known]
        order = []
        for record in records:
            item = found.get(record['id'])
            if item is not None:
                item.alias = record['alias']
                order.append(item)
        return order + [item for key, item in found.items() if item not in order]

    def run(self) -> dict[str, Any]:
        aliases, request, addresses, ids = self._parse()
        params = self.params
        whitelist = Whitelist.parse(params['device_spec'] if params.get('device_spec') is not None
                                    else _hoststate.load(params['config_path']).get('device_spec'))
        sysfs = Sysfs(params['sysfs_root'])
        sysfs.check()
        query = params['state'] == 'query'
        if not query and not self.check_mode:
            EventLoop.start()
        conn = Libvirt(params['uri'], read_only=query or self.check_mode)
        try:
            dom = self.open_domain(conn, params['domain'])
            if query:
                return self._result(dom, sysfs, [], [], changed=False)
            live, config = self._flags(dom)
            with HostLock(params['config_path'], check_mode=self.check_mode):
                plan = self._plan(conn, dom, sysfs, whitelist, aliases, request, addresses, ids)
                if self.check_mode or (not plan.attach and not plan.detach):
                    return self._result(dom, sysfs, [self._would(a) for a in plan.attach],
                                        [d.record() for d in plan.detach], changed=bool(plan.attach or plan.detach))
                attached = self._attach(dom, plan, live, config)
                detached = self._detach(dom, plan, attached, live, config)
            return self._result(dom, sysfs, [a.record() for a in attached],
                                [dict(d.record(), confirmed_by=self.confirmed.get(d.attachment_id)) for d in detached], changed=True)
        finally:
            conn.close()

    @staticmethod
    def _would(item: tuple[PciAddress, str | None]) -> dict[str, Any]:
        return {'attachment_id': None, 'address': str(item[0]), 'alias': item[1]}

    # -- deciding --------------------------------------------------------------------------------
    def _plan(self, conn: Libvirt, dom: Any, sysfs: Sysfs, whitelist: Whitelist, aliases: dict, request: list | None,
              addresses: list[PciAddress] | None, ids: list[str] | None) -> Plan:
        plan = Plan()
        ours = self._ours(dom)
        present = self.params['state'] == 'present'
        if ids is not None:
            known = {item.attachment_id: item for item in ours}
            for index, attachment_id in enumerate(ids):
                if attachment_id not in known:
                    raise AttachmentError(f'attachment_ids[{index}]: {attachment_id} is not attached to domain {dom.name!r}')
                plan.detach.append(known[attachment_id])
            return plan
        if not present and addresses is not None:
            by_address = {item.address: item for item in ours}
            for index, address in enumerate(addresses):
                if address not in by_address:
                    raise AttachmentError(f'addresses[{index}]: {address} is not attached to domain {dom.name!r} by this collection')
                plan.detach.append(by_address[address])
            return plan
        if not present:   # absent by request: up to count devices of each alias, most recent first
            for item in request:
                plan.detach.extend([a for a in ours if a.alias == item.alias][::-1][:item.count])
            return plan

        additions = []
        for item in request or ():
            have = [a for a in ours if a.alias == item.alias]
            if item.count > len(have):
                additions.append(AliasRequest(item.alias, item.count - len(have)))
            elif item.count < len(have):
                plan.detach.extend(have[::-1][:len(have) - item.count])
        if not additions and addresses is None:
            return plan        # nothing to choose: no need to read the host's devices

        devices = {device.address: device for device in sysfs.read_devices()}
        allocations = domain_allocations(conn.domains())
        states = assess(devices, whitelist, allocations, for_domain=dom.uuid)
        if addresses is not None:
            mine = {item.address for item in ours}
            for index, address in enumerate(addresses):
                if address in mine:
                    continue
                state = states.get(address)
                if state is None:
                    raise AttachmentError(f'addresses[{index}]: there is no PCI device {address} on this host')
                if state.status == STATUS_AVAILABLE:
                    plan.attach.append((address, None))
                    continue
                if state.allocation is not None:
                    why = f'it is allocated to domain {state.allocation.domain_name}'
                elif state.spec is None:
                    why = 'it is not in the whitelist'
                else:
                    why = f'it is unavailable: {state.reason}'
                raise AttachmentError(f'addresses[{index}]: {address} cannot be attached: {why}')
            return plan

        if additions:
            nodes = numa_nodes(dom.xml(inactive=not dom.active()))
            result = fit(additions, aliases, candidates(states), numa_nodes=nodes, sockets=sysfs.numa_sockets())
            if not result.ok:
                raise AttachmentError('request: not enough free devices on this host: ' + '; '.join(result.problems))
            for name, chosen in result.devices.items():
                plan.attach.extend((address, name) for address in chosen)
        return plan

    # -- changing --------------------------------------------------------------------------------
    def _attach(self, dom: Any, plan: Plan, live: bool, config: bool) -> list[Attached]:
        done: list[Attached] = []
        try:
            for address, alias in plan.attach:
                item = Attached(str(uuid.uuid4()), address, alias, live, config)
                try:
                    dom.attach(hostdev_xml(address, item.attachment_id), live, config)
                except LibvirtCallFailed as exc:
                    raise AttachmentFailed(f'{address} (alias {alias or "-"}): attach failed: {exc}') from None
                done.append(item)
            if done:
                self._write_metadata(dom, [a for a in self._ours(dom) if a.attachment_id not in {d.attachment_id for d in done}] + done,
                                     live, config)
        except (AttachmentFailed, LibvirtCallFailed) as exc:
            left = self._undo(dom, done, live, config)
            tail = (f'rolled back the {len(done)} device(s) this run attached; nothing was left behind' if not left
                    else 'rollback FAILED, still attached: ' + '; '.join(left))
            raise AttachmentFailed(f'{exc}; {tail}') from None
        return done

    def _write_metadata(self, dom: Any, items: list[Attached], live: bool, config: bool) -> None:
        records = [{'id': a.attachment_id, 'alias': a.alias, 'address': str(a.address)} for a in items]
        dom.set_metadata(records, live, config)

    def _undo(self, dom: Any, done: list[Attached], live: bool, config: bool) -> list[str]:
        """Detach what this run attached and write the metadata back; what could not be undone."""
        left = []
        for item in reversed(done):
            problem = self._remove(dom, item, item.live, item.config)
            if problem:
                left.append(f'{item.address} ({problem})')
        if done:
            try:
                self._write_metadata(dom, self._ours(dom), live, config)
            except LibvirtCallFailed as exc:
                left.append(str(exc))
        return left

    def _remove(self, dom: Any, item: Attached, live: bool, config: bool, in_config: set[str] | None = None) -> str | None:
        """Detach one device: live first (confirmed), then the persistent configuration. None when done.

        ``in_config``: the aliases in the persistent configuration, when the caller has read them.
        """
        timeout = float(self.params.get('timeout', 30))
        if live and item.libvirt_alias in dom.live_aliases():
            try:
                dom.detach(item.libvirt_alias, True, False)
            except LibvirtCallFailed as exc:
                return f'live detach failed: {exc}'
            outcome = self._wait_removed(dom, item.libvirt_alias, timeout)
            if outcome == 'failed':
                return 'the guest refused the unplug (device-removal-failed); still attached'
            if outcome == 'timeout':
                return f'still attached: the guest did not release it within {timeout:g} s'
            self.confirmed[item.attachment_id] = 'device-removed event' if outcome == 'event' else 'gone from the live XML'
        else:
            self.confirmed[item.attachment_id] = 'persistent configuration'
        if in_config is None and config:
            in_config = {h.alias for h in parse_hostdevs(dom.xml(inactive=True))}
        if config and item.libvirt_alias in in_config:
            try:
                dom.detach(item.libvirt_alias, False, True)
            except LibvirtCallFailed as exc:
                return f'persistent detach failed: {exc}'
        return None

    @staticmethod
    def _wait_removed(dom: Any, alias: str, timeout: float) -> str:
        """'event', 'failed', 'absent' (gone from the live XML, no event within EVENT_GRACE s) or 'timeout'.

        The event is the confirmation; the live XML is checked too, in case the event is lost (a
        connection without an event loop, a libvirt that does not send it).
        """
        deadline = time.monotonic() + timeout
        gone_at = None
        wait = getattr(dom, 'wait_event', time.sleep)
        while True:
            state = getattr(dom, 'removed', {}).get(alias)
            if state == 'removed':
                return 'event'
            if state == 'failed':
                return 'failed'
            now = time.monotonic()
            if gone_at is None and alias not in dom.live_aliases():
                gone_at = now
            if gone_at is not None and now - gone_at >= EVENT_GRACE:
                return 'absent'
            if now >= deadline:
                return 'absent' if gone_at is not None else 'timeout'
            wait(0.25)

    def _detach(self, dom: Any, plan: Plan, attached: list[Attached], live: bool, config: bool) -> list[Attached]:
        if not plan.detach:
            return []
        if live and dom.active() and hasattr(dom, 'watch_removals'):
            dom.watch_removals()
        done = []
        in_config = {h.alias for h in parse_hostdevs(dom.xml(inactive=True))} if config else set()
        for item in plan.detach:
            problem = self._remove(dom, item, live, config, in_config)
            if problem:
                undone = self._undo(dom, attached, live, config) if attached else []
                try:
                    self._write_metadata(dom, self._ours(dom), live, config)
                except LibvirtCallFailed:
                    pass
                message = f'{item.address} (attachment {item.attachment_id}): {problem}'
                if done:
                    message += f'; detached before it: {", ".join(str(d.address) for d in done)}'
                if attached:
                    message += ('; the devices this run attached were detached again' if not undone
                                else '; rollback FAILED for: ' + '; '.join(undone))
                raise AttachmentFailed(message)
            done.append(item)
        gone = {d.attachment_id for d in done}
        self._write_metadata(dom, [a for a in self._ours(dom) if a.attachment_id not in gone], live, config)
        return done

    # -- reporting -------------------------------------------------------------------------------
    def _result(self, dom: Any, sysfs: Sysfs, attached: list[dict], detached: list[dict], changed: bool) -> dict[str, Any]:
        aliases = {a.attachment_id: a.alias for a in self._ours(dom)}
        live = dom.active()
        hostdevs = parse_hostdevs(dom.xml(inactive=not live))
        if live and dom.persistent():
            seen = {h.address for h in hostdevs}
            hostdevs += [h for h in parse_hostdevs(dom.xml(inactive=True)) if h.address not in seen]
        devices = []
        for hostdev in hostdevs:
            try:
                device = sysfs.read_device(hostdev.address)
                ids = (device.vendor_id, device.product_id)
            except Exception:   # pylint: disable=broad-exception-caught  # a device gone from the host
                ids = (None, None)
            devices.append({'attachment_id': hostdev.attachment_id, 'serverId': dom.uuid, 'dev_id': hostdev.address.dev_id,
                            'address': str(hostdev.address), 'inner_address': hostdev.inner_address,
                            'vendor_id': ids[0], 'product_id': ids[1], 'alias': aliases.get(hostdev.attachment_id)})
        return {'changed': changed, 'domain': {'name': dom.name, 'uuid': dom.uuid}, 'pci_devices': devices,
                'attached': attached, 'detached': detached}
