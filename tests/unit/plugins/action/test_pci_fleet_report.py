# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_fleet's report files, written by the action plugin (controller side: Python 3.10 and later, not in units-py39)."""

from __future__ import annotations

import json
import os

from ansible_collections.passthrough.libvirt.plugins.action.pci_fleet import write_report
from ansible_collections.passthrough.libvirt.plugins.module_utils import _fleet
from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_request
from ansible_collections.passthrough.libvirt.tests.unit.plugins.module_utils.test_performance_equivalence import ALIASES, _host


def test_the_report_is_written_once_and_keeps_its_time(tmp_path):
    fleet = _fleet.aggregate([_host(1, 2, 4), _host(2, 0, 1)])
    request = parse_request('gpu:1', ALIASES)
    found, rejected = _fleet.candidates(fleet, request, ALIASES)
    files = [str(tmp_path / 'fleet.json'), str(tmp_path / 'fleet.html')]
    args = dict(rejected=rejected, request=request, aliases=ALIASES, check_mode=False)
    assert write_report(files, fleet, found, 'T', **args) is True
    stamp = json.loads((tmp_path / 'fleet.json').read_text())['generated_at']
    page = (tmp_path / 'fleet.html').read_text()
    assert page == _fleet.render_html(fleet, found, 'T', rejected=rejected, request=request, aliases=ALIASES, generated_at=stamp)
    report = _fleet.render_json(fleet, found, rejected=rejected, request=request, generated_at=stamp)
    assert (tmp_path / 'fleet.json').read_text() == report
    assert write_report(files, fleet, found, 'T', **args) is False
    os.remove(files[1])
    assert write_report(files, fleet, found, 'T', **args) is True
