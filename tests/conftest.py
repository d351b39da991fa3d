# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest


@dataclass
class ModuleRun:
    rc: int
    result: dict
    stderr: str

    @property
    def msg(self) -> str:
        return self.result.get('msg', '')


def run_module_process(name: str, args: dict, tmp_path) -> ModuleRun:
    """Run a module the way Ansible's python interpreter does: a real process with an args file."""
    args_file = tmp_path / f'{name}-args.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    proc = subprocess.run(
        [sys.executable, '-m', f'ansible_collections.passthrough.libvirt.plugins.modules.{name}', str(args_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f'module {name} printed no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return ModuleRun(proc.returncode, result, proc.stderr)


@pytest.fixture
def run_module(tmp_path):
    def runner(name: str, **args) -> ModuleRun:
        return run_module_process(name, args, tmp_path)
    return runner
