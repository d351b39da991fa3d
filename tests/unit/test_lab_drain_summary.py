# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's line for its drain steps (tests/lab/lab.py drain_summary): each drain of four is set against the
unplugs of its own scenario, from what drain.yml and drain-linux.yml write."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / 'lab' / 'lab.py'


def lab_module():
    spec = importlib.util.spec_from_file_location('lab_under_test', LAB)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def drained(seconds: float, devices: int, confirmed_by: str = 'device-removed event') -> dict:
    return {'seconds': seconds, 'drained': [{'domain': 'd', 'devices': [{'confirmed_by': confirmed_by}] * devices}]}


def test_drain_yml_sets_both_drains_against_its_domains_drained_alone():
    found = {'singles': [{'seconds': 0.6}, {'seconds': 0.8}, {'seconds': 0.6}, {'seconds': 0.4}],
             'parallel': drained(1.2, 4), 'domains': drained(0.84, 4),
             'after_restore': {'pci_devices': [{'inner_address': '0000:01:00.0'}, {'inner_address': '0000:02:00.0'}]}}

    line = lab_module().drain_summary(found)

    assert line == ('4 devices of 1 domain: 1.20 s (device-removed event), 2.00x one (goal <= 1.5: NOT met); '
                    '4 domains, 1 device each: 0.84 s (device-removed event), 1.40x one (goal <= 1.5: met); '
                    'one at a time: 0.60, 0.80, 0.60, 0.40 s, 2.40 s in all, one 0.60 s on average; '
                    'restored live at guest 0000:01:00.0, 0000:02:00.0')


def test_drain_linux_yml_sets_the_drain_of_four_domains_against_those_domains_alone():
    found = {'singles': [{'seconds': 8.0}] * 4, 'domain_singles': [{'seconds': 6.0}] * 4,
             'parallel': drained(12.0, 4), 'domains': drained(9.6, 4), 'powered_off': '4'}

    line = lab_module().drain_summary(found)

    assert '4 devices of 1 domain: 12.00 s (device-removed event), 1.50x one (goal <= 1.5: met)' in line
    # Against the one-domain unplugs (8 s) it would read 1.20x, met.
    assert '4 domains, 1 device each: 9.60 s (device-removed event), 1.60x one (goal <= 1.5: NOT met)' in line
    assert 'one at a time: 8.00, 8.00, 8.00, 8.00 s, 32.00 s in all, one 8.00 s on average' in line
    assert 'each domain alone: 6.00, 6.00, 6.00, 6.00 s, 24.00 s in all, one 6.00 s on average' in line
    assert line.endswith('in the guest, pciehp powered off 4 slot(s) for the drain of 4 devices')


def test_a_drain_the_run_never_reached_is_left_out():
    found = {'singles': [{'seconds': 0.5}, {'seconds': None}], 'parallel': {}, 'domains': drained(0.5, 1, 'persistent configuration')}

    line = lab_module().drain_summary(found)

    assert line == ('4 domains, 1 device each: 0.50 s (persistent configuration), 1.00x one (goal <= 1.5: met); '
                    'one at a time: 0.50 s, 0.50 s in all, one 0.50 s on average')


def test_the_forced_drain_of_another_tools_device_and_its_restore_are_named():
    found = {'domains': drained(0.5, 1),
             'forced': {'drained': [{'domain': 'pcitest-native', 'devices': [
                 {'address': '0000:03:00.1', 'foreign': True, 'confirmed_by': 'device-removed event'}]}]},
             'forced_back': {'restored': [{'domain': 'pcitest-native', 'attached': [{'address': '0000:01:00.0'}, {'address': '0000:03:00.1'}]}]}}

    assert lab_module().drain_summary(found).endswith(
        "with force: 0000:03:00.1 (another tool's) out live (device-removed event), given back by address")

    found['forced_back'] = {}
    assert lab_module().drain_summary(found).endswith("0000:03:00.1 (another tool's) out live (device-removed event), not given back")


def test_the_drain_step_reports_what_the_playbook_wrote_also_when_it_failed(tmp_path, monkeypatch):
    lab = lab_module()
    monkeypatch.setattr(lab, 'WORK', tmp_path)
    ran = []

    def playbook(_lab, _inventory, name, *options, **extra):
        # What the drain playbooks do in their `always:` part: the results, then the failure.
        ran.append((name, options, extra))
        (tmp_path / 'out').mkdir(exist_ok=True)
        (tmp_path / 'out' / 'drain-linux.json').write_text(json.dumps({'singles': [{'seconds': 8.0}], 'parallel': drained(12.0, 4)}))
        raise lab.LabError('ansible-playbook exited with 2')

    monkeypatch.setattr(lab, 'playbook', playbook)
    run = lab.Lab(accel='tcg', memory=2048)
    with pytest.raises(lab.LabError):
        lab.drain_step(run, tmp_path / 'inventory.yml', 'lab2', 'drain-linux', '1 and from 4 Linux guests')

    assert ran == [('drain-linux.yml', ('--limit', 'lab2'), {'lab_out': str(tmp_path / 'out')})]
    [step] = run.steps
    assert (step.name, step.ok) == ('lab2: drain 4 live devices from 1 and from 4 Linux guests (parallel) against one at a time; restore', False)
    assert step.detail == ('4 devices of 1 domain: 12.00 s (device-removed event), 1.50x one (goal <= 1.5: met); '
                           'one at a time: 8.00 s, 8.00 s in all, one 8.00 s on average')
