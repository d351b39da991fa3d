# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback used by bench/all only: the wall time of each task, from its start to its result, written as JSON."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = '''
name: bench_task_times
type: aggregate
short_description: Task times for bench/all
description:
  - Writes the name and wall time of each task (from its start to its result on the one host) to the file named by
    the environment variable E(BENCH_TASK_TIMES), as a JSON list of [name, seconds, ok].
'''


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_task_times'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._times: list[list] = []
        self._task = ''
        self._start = 0.0

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._task = task.get_name()
        self._start = time.perf_counter()

    def _done(self, ok: bool) -> None:
        self._times.append([self._task, time.perf_counter() - self._start, ok])

    def v2_runner_on_ok(self, result) -> None:
        self._done(True)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._done(False)

    def v2_runner_on_unreachable(self, result) -> None:
        self._done(False)

    def v2_playbook_on_stats(self, stats) -> None:
        with open(os.environ['BENCH_TASK_TIMES'], 'w', encoding='utf-8') as handle:
            json.dump(self._times, handle)
