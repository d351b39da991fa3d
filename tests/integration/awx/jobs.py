# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AWX around a job, as the AWX source read for this (awx 24.6.1 and the devel of 2025) does it.

- A job is one ``ansible_runner.run`` in a private data directory of its own, ``ident`` the job id, so
  its artifacts are ``artifacts/<id>/`` (awx/main/tasks/jobs.py).
- Surveys: the defaults that pass the survey's own validation, then the answers, over the template's
  variables (awx/main/models/mixins.py, SurveyJobTemplateMixin).
- Artifacts: the ``artifact_data`` of the ``playbook_on_stats`` event, i.e. the set_stats data
  (awx/main/tasks/callback.py; ansible-runner's awx_display callback).
- Workflows: a node's extra variables are its own, then its parents' artifacts, then the workflow job's
  extra variables, each over the last (WorkflowJobNode.get_job_kwargs in awx/main/models/workflow.py).
- Slicing: slice n of N gets the inventory's hosts in name order, ``[n-1::N]``, and nothing else
  (Inventory.get_sliced_hosts); the sliced job is a workflow whose artifacts are the slices' artifacts
  merged with ``dict.update`` in the order (finished, id) (WorkflowJob.get_effective_artifacts).
- Fact storage (use_fact_cache): before the run, each host's stored facts as plain JSON in
  ``artifacts/<id>/fact_cache/<host>``; ansible-runner is given ``fact_cache_type='jsonfile'`` and sets
  ANSIBLE_CACHE_PLUGIN=jsonfile, ANSIBLE_CACHE_PLUGIN_CONNECTION=<that directory>; after the run, a
  ``<host>`` file newer than the ones written before is stored, a missing one clears the host's facts
  (awx/main/tasks/facts.py, start_fact_cache and finish_fact_cache).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

ROOT = Path(__file__).resolve().parents[3]
SRC_TREE = Path(os.path.abspath(__file__)).parents[6]   # .build/src, above ansible_collections/passthrough/libvirt
DOC = ROOT / 'docs' / 'awx.md'
_IDS = itertools.count(100)

# AWX lists a project file as a playbook when a line starts with one of these keys (AWX 21.2.0 and later
# also accept the ansible.builtin. forms); a file that lists none is not offered to job templates.
_PLAYBOOK_LINE = re.compile(r'^\s*-?\s*(hosts|(ansible\.builtin\.)?include|(ansible\.builtin\.)?import_playbook)\s*:')


def awx_lists_as_playbook(text: str) -> bool:
    return any(_PLAYBOOK_LINE.match(line) for line in text.splitlines())


# --- docs/awx.md ---------------------------------------------------------------------------------------

def doc_surveys() -> dict[str, dict]:
    """The survey specs of docs/awx.md (every ```json block), by name."""
    blocks = re.findall(r'```json\n(.*?)```', DOC.read_text(encoding='utf-8'), re.S)
    surveys = [json.loads(block) for block in blocks]
    return {survey['name']: survey for survey in surveys}


def doc_yaml_block(containing: str) -> str:
    """The one ```yaml block of docs/awx.md that contains ``containing``."""
    blocks = [b for b in re.findall(r'```yaml\n(.*?)```', DOC.read_text(encoding='utf-8'), re.S) if containing in b]
    assert len(blocks) == 1, f'{len(blocks)} yaml blocks of docs/awx.md contain {containing!r}'
    return blocks[0]


def check_survey_element(element: dict, value: Any) -> list[str]:
    """AWX's checks of one answer: type, length or range, choices."""
    name, kind = element['variable'], element['type']
    if kind in ('text', 'textarea', 'password'):
        if not isinstance(value, str):
            return [f'{name}: {value!r} is not text']
        if 'min' in element and len(value) < int(element['min']):
            return [f'{name}: {value!r} is shorter than {element["min"]}']
        if 'max' in element and len(value) > int(element['max']):
            return [f'{name}: {value!r} is longer than {element["max"]}']
    elif kind == 'integer':
        if not isinstance(value, int) or isinstance(value, bool):
            return [f'{name}: {value!r} is not an integer']
        if 'min' in element and value < int(element['min']) or 'max' in element and value > int(element['max']):
            return [f'{name}: {value!r} is out of [{element.get("min")}, {element.get("max")}]']
    elif kind == 'multiplechoice':
        choices = element['choices'] if isinstance(element['choices'], list) else element['choices'].split('\n')
        if value not in choices:
            return [f'{name}: {value!r} is not one of {choices}']
    else:
        return [f'{name}: survey type {kind!r} is not handled here']
    return []


def survey_extra_vars(survey: dict, answers: dict, template_vars: dict | None = None) -> dict:
    """A launch's extra variables: the template's variables, the valid survey defaults, the answers."""
    spec = survey['spec']
    unknown = set(answers) - {element['variable'] for element in spec}
    assert not unknown, f'answers to questions the survey does not ask: {unknown}'
    extra = dict(template_vars or {})
    for element in spec:
        if element.get('default') is not None and not check_survey_element(element, element['default']):
            extra[element['variable']] = element['default']
    extra.update(answers)
    for element in spec:
        if element['variable'] in extra:
            errors = check_survey_element(element, extra[element['variable']])
            assert not errors, errors
        else:
            assert not element.get('required'), f'{element["variable"]} is required and has no valid default'
    return extra


def role_options(role: str) -> set[str]:
    spec = yaml.safe_load((ROOT / 'roles' / role / 'meta' / 'argument_specs.yml').read_text(encoding='utf-8'))
    return set(spec['argument_specs']['main']['options'])


# --- jobs ------------------------------------------------------------------------------------------------

@dataclass
class FactStore:
    """AWX's stored facts per host (Host.ansible_facts, ansible_facts_modified)."""

    facts: dict[str, dict] = field(default_factory=dict)
    modified: dict[str, float] = field(default_factory=dict)
    timeout: int = 0   # settings.ANSIBLE_FACT_CACHE_TIMEOUT; 0 - never expire

    def start(self, hosts: list[str], cache_dir: Path) -> float | None:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        last = None
        for name in hosts:
            if name not in self.modified or self.timeout and self.modified[name] < time.time() - self.timeout:
                continue
            path = cache_dir / name
            path.write_text(json.dumps(self.facts[name]), encoding='utf-8')
            path.chmod(0o600)
            last = path.stat().st_mtime
        return last

    def finish(self, hosts: list[str], cache_dir: Path, write_time: float | None) -> None:
        for name in hosts:
            path = cache_dir / name
            if path.exists():
                if write_time is None or path.stat().st_mtime > write_time:
                    try:
                        self.facts[name] = json.loads(path.read_text(encoding='utf-8'))
                    except ValueError:
                        continue
                    self.modified[name] = time.time()
            else:   # "ansible removed it (likely via clear_facts)"
                self.facts[name] = {}
                self.modified[name] = time.time()


@dataclass
class Job:
    id: int
    status: str
    rc: int
    artifacts: dict
    stats: dict
    events: list
    finished: float
    private_data_dir: Path
    hosts: list[str]

    def stdout(self) -> str:
        return '\n'.join(event.get('stdout', '') for event in self.events if event.get('stdout'))

    def task_results(self, task: str) -> dict[str, dict]:
        """The results of the task named ``task``, by host."""
        return {event['event_data']['host']: event['event_data']['res'] for event in self.events
                if event.get('event') in ('runner_on_ok', 'runner_on_failed', 'runner_on_skipped')
                and event['event_data'].get('task') == task}


def slice_inventory(inventory: dict, number: int, count: int) -> dict:
    """Slice ``number`` of ``count`` of a {group: {hosts, vars}} inventory, as AWX's inventory script gives it."""
    names = sorted({host for group in inventory.values() for host in (group.get('hosts') or {})})
    kept = set(names[number - 1::count])
    return {group: dict(body, hosts={h: v for h, v in (body.get('hosts') or {}).items() if h in kept})
            for group, body in inventory.items()}


def inventory_hosts(inventory: dict) -> list[str]:
    return sorted({host for group in inventory.values() for host in (group.get('hosts') or {})})


def run_job(tmp_path: Path, project: dict[str, str], playbook: str, inventory: dict, extra_vars: dict,
            facts: FactStore | None = None, envvars: dict | None = None) -> Job:
    """One AWX job: a private data directory with the project, the inventory and the extra variables."""
    job_id = next(_IDS)
    pdd = tmp_path / f'job-{job_id}'
    (pdd / 'project').mkdir(parents=True)
    for name, text in project.items():
        (pdd / 'project' / name).write_text(text, encoding='utf-8')
    (pdd / 'inventory').mkdir()
    (pdd / 'inventory' / 'hosts.yml').write_text(yaml.safe_dump(inventory), encoding='utf-8')
    hosts = inventory_hosts(inventory)
    cache_dir = pdd / 'artifacts' / str(job_id) / 'fact_cache'
    write_time = facts.start(hosts, cache_dir) if facts is not None else None
    env = {'ANSIBLE_COLLECTIONS_PATH': str(SRC_TREE), 'ANSIBLE_NOCOLOR': '1',
           'PATH': f'{os.path.dirname(sys.executable)}:{os.environ.get("PATH", "/usr/bin:/bin")}'}
    env.update(envvars or {})
    runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, inventory=str(pdd / 'inventory' / 'hosts.yml'),
                                extravars=extra_vars, ident=str(job_id), envvars=env, quiet=True,
                                fact_cache_type='jsonfile' if facts is not None else '')
    events = list(runner.events)
    stats = [e for e in events if e.get('event') == 'playbook_on_stats']
    if facts is not None:
        facts.finish(hosts, cache_dir, write_time)
    return Job(id=job_id, status=runner.status, rc=runner.rc, artifacts=stats[-1]['event_data'].get('artifact_data', {}) if stats else {},
               stats=stats[-1]['event_data'] if stats else {}, events=events, finished=time.time(), private_data_dir=pdd, hosts=hosts)


def sliced_job_artifacts(slices: list[Job]) -> dict:
    """A sliced job's artifacts (a workflow job's): its jobs' artifacts, dict.update in the order (finished, id)."""
    artifacts: dict = {}
    for job in sorted(slices, key=lambda job: (job.finished, job.id)):
        if job.status in ('successful', 'failed'):
            artifacts.update(job.artifacts)
    return artifacts


def node_extra_vars(parent_artifacts: list[dict], workflow_extra_vars: dict, node_extra_vars: dict | None = None) -> dict:
    """A workflow node's job's extra variables: its own, its parents' artifacts over them, the workflow's over all."""
    extra = dict(node_extra_vars or {})
    artifacts: dict = {}
    for parent in parent_artifacts:
        artifacts.update(parent)
    artifacts.pop('_ansible_no_log', None)
    extra.update(artifacts)
    extra.update(workflow_extra_vars)
    return extra
