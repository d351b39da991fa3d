# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The four playbooks, the workflow, a sliced inventory and fact storage, run the way AWX runs them.

Every job is ``ansible_runner.run`` (what AWX's RunJob hands to ansible-runner, see tests/integration/awx/jobs.py),
with the extra variables the surveys of docs/awx.md produce, over local hosts (``ansible_connection=local``),
each with its own fixture sysfs tree and state file, sharing the real libvirtd and its ``pcitest-`` domains.

h1: a dual-socket server whose whitelist holds one A100 (0000:86:00.0); h2: the same server, only its X710 VFs
whitelisted; h3: a host without IOMMU or whitelisted devices. ``gpu:1`` fits h1 only. AWX slices hosts in name
order: of two slices, slice 1 is h1 and h3, slice 2 is h2.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from ansible.release import __version__ as ANSIBLE_CORE_VERSION

from ansible_collections.passthrough.libvirt.plugins.action.pci_fleet import NOT_IN_INVENTORY, record_key
from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.integration.awx import jobs

CORE_2_19 = tuple(int(part) for part in ANSIBLE_CORE_VERSION.split('.')[:2]) >= (2, 19)
ALIASES = [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
           {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'}]
GPU = [{'vendor_id': '10de', 'product_id': '20b5', 'address': '0000:86:00.0'}]
VFS = [{'vendor_id': '8086', 'product_id': '154c'}]


def project_playbook(name: str) -> str:
    """A project playbook as docs/awx.md shows them: one import of the collection's playbook."""
    return f'---\n- name: {name} (passthrough.libvirt)\n  import_playbook: passthrough.libvirt.{name}\n'


PROJECT = {f'{name}.yml': project_playbook(name) for name in ('prepare_hosts', 'inventory', 'attach', 'detach')}
PROJECT['attach_candidates.yml'] = jobs.doc_yaml_block('name: Attach on the candidates')
# A node that only rebuilds the fleet from the artifacts, to compare a sliced run with a plain one.
PROJECT['fleet_from_records.yml'] = '''---
- name: The fleet from the records of the earlier node
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Rebuild it
      passthrough.libvirt.pci_fleet:
        records: true
        request: gpu:1
        aliases: "{{ pci_aliases }}"
      register: fleet

    - name: Publish it
      ansible.builtin.set_stats:
        data:
          rebuilt: "{{ fleet }}"
        per_host: false
'''
PROJECT['probe.yml'] = '''---
- name: What ansible-core reads from the fact cache
  hosts: all
  gather_facts: false
  tasks:
    - name: Publish whether pci_stats came from the cache
      ansible.builtin.set_stats:
        data:
          seen: "{{ {inventory_hostname: pci_stats is defined} }}"
'''


@pytest.fixture
def fleet(libvirtd, tmp_path):   # pylint: disable=unused-argument
    """The AWX inventory: group_vars all (pci_aliases), group compute with h1..h3."""
    for name, build in (('h1', sysfs_tree.dual_socket_server), ('h2', sysfs_tree.dual_socket_server), ('h3', sysfs_tree.no_iommu_host)):
        build(tmp_path / name / 'sys')
    hosts = {name: {'pci_sysfs_root': str(tmp_path / name / 'sys'), 'pci_config_path': str(tmp_path / name / 'state.json'),
                    'pci_device_spec': spec} for name, spec in (('h1', GPU), ('h2', VFS), ('h3', GPU))}
    for host in hosts.values():
        # prepare_hosts on fixture trees: record the whitelist without binding, install and load nothing.
        host.update(pci_driver=None, pci_packages=[], pci_load_vfio=False)
    return {'all': {'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'pci_aliases': ALIASES}},
            'compute': {'hosts': hosts}}


def surveyed(survey_name: str, answers: dict, template_vars: dict | None = None) -> dict:
    return jobs.survey_extra_vars(jobs.doc_surveys()[survey_name], answers, template_vars)


def detach_survey() -> dict:
    """docs/awx.md: the detach survey is the attach survey without Host choice."""
    attach = jobs.doc_surveys()['PCI: attach']
    return dict(attach, name='PCI: detach', spec=[e for e in attach['spec'] if e['variable'] != 'pci_host_choice'])


def ok(job: jobs.Job) -> jobs.Job:
    assert job.status == 'successful', job.stdout()[-4000:]
    return job


def summary_hosts(artifacts: dict) -> dict[str, dict]:
    return {value['name']: value for key, value in artifacts.items() if key.startswith('pci_fleet_host_')}


# --- the docs ---------------------------------------------------------------------------------------------

SURVEYS = {'PCI: prepare hosts': ('prepare_hosts.yml', 'pci_host'), 'PCI: inventory': ('inventory.yml', 'pci_inventory'),
           'PCI: attach': ('attach.yml', 'pci_attach'), 'PCI: attach where it fits': ('attach.yml', 'pci_attach')}


def test_every_survey_of_the_docs_asks_what_its_role_or_playbook_takes():
    surveys = jobs.doc_surveys()
    assert set(surveys) == set(SURVEYS)
    for name, (playbook, role) in SURVEYS.items():
        accepted = jobs.role_options(role)
        hosts_line = [line for line in (jobs.ROOT / 'playbooks' / playbook).read_text().splitlines() if line.startswith('  hosts:')]
        for element in surveys[name]['spec']:
            variable = element['variable']
            assert variable in accepted or (variable == 'pci_hosts' and 'pci_hosts' in hosts_line[0]), (name, variable)
            assert element['type'] in ('text', 'integer', 'multiplechoice'), (name, variable)
            default = element.get('default')
            # A required question may have an empty default (the user must answer); any other default is valid.
            if not (element.get('required') and default == ''):
                assert not jobs.check_survey_element(element, default), (name, variable, default)
            if element['type'] == 'multiplechoice':   # AWX sends choices as strings; the role must take "true"/"false"
                spec = yaml.safe_load((jobs.ROOT / 'roles' / role / 'meta' / 'argument_specs.yml').read_text())
                option = spec['argument_specs']['main']['options'][variable]
                assert set(element['choices']) <= set(option.get('choices', element['choices'])), (name, variable)
    detach = jobs.role_options('pci_attach')
    assert all(e['variable'] in detach or e['variable'] == 'pci_hosts' for e in detach_survey()['spec'])


def test_awx_lists_the_project_playbooks_of_the_docs():
    for text in PROJECT.values():
        assert jobs.awx_lists_as_playbook(text)
    assert jobs.awx_lists_as_playbook('---\n- ansible.builtin.import_playbook: passthrough.libvirt.attach\n')
    assert not jobs.awx_lists_as_playbook('---\n- name: vars only\n  vars: {a: 1}\n')


# --- the four job templates ------------------------------------------------------------------------------

def test_prepare_hosts_job(fleet, tmp_path):
    # pci_persist: "false" - a survey choice - keeps the udev rules out of this machine's /etc.
    extra = surveyed('PCI: prepare hosts', {'pci_hosts': 'h1,h2', 'pci_persist': 'false'})
    assert extra == {'pci_hosts': 'h1,h2', 'pci_force': 'false', 'pci_persist': 'false'}
    job = ok(jobs.run_job(tmp_path, PROJECT, 'prepare_hosts.yml', fleet, extra))
    assert job.artifacts == {}                               # pci_host publishes no stats
    assert job.stats['changed'] == {'h1': 1, 'h2': 1}
    assert json.loads((tmp_path / 'h2' / 'state.json').read_text())['device_spec'] == VFS
    again = ok(jobs.run_job(tmp_path, PROJECT, 'prepare_hosts.yml', fleet, extra))
    assert again.stats['changed'] == {}


def test_inventory_job_publishes_the_summary_and_a_record_per_host(fleet, tmp_path):
    extra = surveyed('PCI: inventory', {'pci_request': 'gpu:1'}, {'pci_report_dir': str(tmp_path / 'report')})
    assert extra == {'pci_report_dir': str(tmp_path / 'report'), 'pci_hosts': 'compute', 'pci_request': 'gpu:1', 'pci_require_libvirt': 'true'}
    job = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet, extra))
    summary = {key: value for key, value in job.artifacts['pci_fleet_summary'].items()
               if key in ('totals', 'hosts', 'missing', 'candidates', 'report_dir')}
    assert summary == {'totals': {'count': 5, 'total': 5, 'allocated': 0, 'unavailable': 0},
                       'hosts': {'h1': {'count': 1, 'total': 1, 'allocated': 0, 'unavailable': 0},
                                 'h2': {'count': 4, 'total': 4, 'allocated': 0, 'unavailable': 0},
                                 'h3': {'count': 0, 'total': 0, 'allocated': 0, 'unavailable': 0}},
                       'missing': [], 'candidates': ['h1'], 'report_dir': str(tmp_path / 'report')}
    records = {key: value for key, value in job.artifacts.items() if key != 'pci_fleet_summary'}
    assert sorted(records) == sorted(record_key(name) for name in ('h1', 'h2', 'h3'))
    assert records[record_key('h1')]['name'] == 'h1' and records[record_key('h1')]['pci_stats'][0]['product_id'] == '20b5'
    assert records[record_key('h3')]['pci_stats'] == []


def test_the_default_report_dir_follows_the_launchers_pwd_not_the_project(fleet, tmp_path):
    launcher = tmp_path / 'launcher'
    launcher.mkdir()
    extra = surveyed('PCI: inventory', {})
    job = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet, extra, envvars={'PWD': str(launcher)}))
    assert job.artifacts['pci_fleet_summary']['report_dir'] == f'{launcher}/pci-report'
    assert sorted(p.name for p in (launcher / 'pci-report').iterdir()) == ['fleet.html', 'fleet.json', 'h1.json', 'h2.json', 'h3.json']
    assert not (job.private_data_dir / 'project' / 'pci-report').exists()   # ansible-playbook ran in the project


def test_attach_and_detach_jobs(fleet, tmp_path, define_domain):
    dom = define_domain()
    extra = surveyed('PCI: attach', {'pci_domain': dom.name(), 'pci_request': 'gpu:1', 'pci_hosts': 'h1'})
    assert extra == {'pci_domain': dom.name(), 'pci_request': 'gpu:1', 'pci_hosts': 'h1', 'pci_host_choice': 'inventory', 'pci_timeout': 30}
    attached = ok(jobs.run_job(tmp_path, PROJECT, 'attach.yml', fleet, extra))
    assert attached.artifacts == {} and attached.stats['changed'] == {'h1': 1}
    assert [r['attached'][0]['address'] for r in attached.task_results('Attach or detach').values()] == ['0000:86:00.0']
    assert "<address domain='0x0000' bus='0x86'" in dom.XMLDesc(2)
    detach = jobs.survey_extra_vars(detach_survey(), {'pci_domain': dom.name(), 'pci_request': 'gpu:1', 'pci_hosts': 'h1'})
    detached = ok(jobs.run_job(tmp_path, PROJECT, 'detach.yml', fleet, detach))
    assert detached.stats['changed'] == {'h1': 1} and '<hostdev' not in dom.XMLDesc(2)


# --- workflows -------------------------------------------------------------------------------------------

def test_workflow_inventory_then_attach_where_it_fits(fleet, tmp_path, define_domain):
    dom = define_domain()
    workflow = surveyed('PCI: attach where it fits', {'pci_domain': dom.name(), 'pci_request': 'gpu:1'})
    inventory = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet,
                                jobs.node_extra_vars([], workflow, {'pci_report_dir': str(tmp_path / 'report')})))
    extra = jobs.node_extra_vars([inventory.artifacts], workflow)
    assert extra['pci_fleet_summary']['candidates'] == ['h1'] and record_key('h2') in extra
    attach = ok(jobs.run_job(tmp_path, PROJECT, 'attach_candidates.yml', fleet, extra))
    assert attach.stats['changed'] == {'localhost': 1, 'h1': 1}   # localhost: add_host
    assert '<hostdev' in dom.XMLDesc(2)

    # Nothing fits: the first play stops the node with the fleet's reasons.
    extra = jobs.node_extra_vars([inventory.artifacts], dict(workflow, pci_request='gpu:2'))
    stopped = jobs.run_job(tmp_path, PROJECT, 'attach_candidates.yml', fleet, extra)
    assert stopped.status == 'failed'
    assert 'pci_request gpu:2 fits no host of the last inventory' in stopped.stdout()


@pytest.fixture
def slices(fleet, tmp_path):
    """The inventory job template with job slicing 2: two jobs, each on its slice of the inventory."""
    extra = surveyed('PCI: inventory', {'pci_request': 'gpu:1'}, {'pci_report_dir': str(tmp_path / 'report')})
    first, second = (ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', jobs.slice_inventory(fleet, number, 2), extra))
                     for number in (1, 2))
    assert (first.hosts, second.hosts) == (['h1', 'h3'], ['h2'])
    return first, second


@pytest.mark.parametrize('last', [1, 2])
def test_a_sliced_inventory_gives_the_next_node_the_whole_fleet(fleet, tmp_path, slices, define_domain, last):
    first, second = slices
    ordered = [second, first] if last == 1 else [first, second]
    ordered[0].finished, ordered[1].finished = 1.0, 2.0          # the slice that finishes last is merged last
    artifacts = jobs.sliced_job_artifacts(ordered)
    # pci_fleet_summary is the last slice's alone: slice 2 (h2) alone would fit gpu:1 nowhere.
    assert sorted(artifacts['pci_fleet_summary']['hosts']) == ordered[1].hosts
    assert sorted(summary_hosts(artifacts)) == ['h1', 'h2', 'h3']

    plain = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet,
                            surveyed('PCI: inventory', {'pci_request': 'gpu:1'}, {'pci_report_dir': str(tmp_path / 'r')})))
    rebuilt = [ok(jobs.run_job(tmp_path, PROJECT, 'fleet_from_records.yml', fleet, jobs.node_extra_vars([a], {}))).artifacts['rebuilt']
               for a in (artifacts, plain.artifacts)]
    # The same hosts and candidates as a job without slicing (its counters may differ: it ran later, other tests
    # share this libvirtd), and each host's totals as its own slice counted them.
    assert [h['name'] for h in rebuilt[0]['fleet']['hosts']] == [h['name'] for h in rebuilt[1]['fleet']['hosts']]
    assert rebuilt[0]['candidates'] == rebuilt[1]['candidates'] or rebuilt[0]['fleet'] != rebuilt[1]['fleet']
    by_slice = dict(first.artifacts['pci_fleet_summary']['hosts'], **second.artifacts['pci_fleet_summary']['hosts'])
    assert {h['name']: h['totals'] for h in rebuilt[0]['fleet']['hosts']} == by_slice
    assert [h['name'] for h in rebuilt[0]['fleet']['hosts']] == ['h1', 'h2', 'h3'] and rebuilt[0]['fleet']['missing'] == []
    assert [c['host'] for c in rebuilt[0]['candidates']] == ['h1']

    dom = define_domain()
    workflow = {'pci_domain': dom.name(), 'pci_request': 'gpu:1'}
    attach = ok(jobs.run_job(tmp_path, PROJECT, 'attach_candidates.yml', fleet, jobs.node_extra_vars([artifacts], workflow)))
    assert attach.stats['changed'] == {'localhost': 1, 'h1': 1} and '<hostdev' in dom.XMLDesc(2)


def test_in_a_slice_hosts_outside_it_are_missing_not_an_error(fleet, tmp_path):
    extra = surveyed('PCI: inventory', {}, {'pci_report_dir': str(tmp_path / 'report'), 'pci_fleet_hosts': ['h1', 'h2', 'h3']})
    job = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', jobs.slice_inventory(fleet, 1, 2), extra))
    assert job.artifacts['pci_fleet_summary']['missing'] == ['h2']
    assert sorted(summary_hosts(job.artifacts)) == ['h1', 'h3']      # no record for a host this job did not inventory
    fleet_json = json.loads((tmp_path / 'report' / 'fleet.json').read_text())
    hosts = fleet_json['hosts'] if 'hosts' in fleet_json else fleet_json['fleet']['hosts']
    assert [h['reason'] for h in hosts if h['name'] == 'h2'] == [NOT_IN_INVENTORY]


# --- fact storage ----------------------------------------------------------------------------------------

def test_fact_storage_round_trip_with_this_ansible_core(fleet, tmp_path):
    """Use Fact Storage on: AWX writes each host's stored facts as plain JSON <host> and stores the <host> files after."""
    store = jobs.FactStore()
    extra = surveyed('PCI: inventory', {}, {'pci_report_dir': str(tmp_path / 'report')})
    first = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet, extra, facts=store))
    cache_dir = first.private_data_dir / 'artifacts' / str(first.id) / 'fact_cache'
    if CORE_2_19:   # ansible-core writes its own s1_<host> files, which AWX never reads; pci_fleet keeps <host> current
        assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith('s1_')) == ['s1_h1', 's1_h2', 's1_h3']
        assert '__payload__' in json.loads((cache_dir / 's1_h1').read_text())
        assert first.task_results('The fleet, once, on the controller')['h1']['cache_written'] == ['h1', 'h2', 'h3']
    assert sorted(store.facts) == ['h1', 'h2', 'h3']
    assert [p['product_id'] for p in store.facts['h1']['pci_stats']] == ['20b5'] and store.facts['h3']['pci_stats'] == []

    # What ansible-core itself reads of AWX's plain files: nothing from 2.19 on.
    probe = ok(jobs.run_job(tmp_path, PROJECT, 'probe.yml', fleet, {}, facts=store))
    assert probe.artifacts['seen'] == {'h1': not CORE_2_19, 'h2': not CORE_2_19, 'h3': not CORE_2_19}

    # Limit h1, the fleet named: h2 and h3 come from AWX's stored facts all the same.
    limited = dict(extra, pci_hosts='h1', pci_fleet_hosts=['h1', 'h2', 'h3'])
    second = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', fleet, limited, facts=store))
    assert second.artifacts['pci_fleet_summary']['missing'] == []
    assert second.artifacts['pci_fleet_summary']['totals'] == first.artifacts['pci_fleet_summary']['totals']
    assert sorted(summary_hosts(second.artifacts)) == ['h1']

    # A sliced job: AWX writes the facts of the slice's hosts only, so the others are missing.
    sliced = ok(jobs.run_job(tmp_path, PROJECT, 'inventory.yml', jobs.slice_inventory(fleet, 2, 2), limited | {'pci_hosts': 'compute'},
                             facts=store))
    assert sliced.artifacts['pci_fleet_summary']['missing'] == ['h1', 'h3']


def test_plain_cache_off_leaves_awx_without_the_facts(fleet, tmp_path):
    if not CORE_2_19:
        pytest.skip('before ansible-core 2.19 ansible-core writes the plain <host> files itself')
    store = jobs.FactStore()
    project = dict(PROJECT, **{'fleet_only.yml': '''---
- name: Pools, then the fleet without writing the plain cache
  hosts: compute
  gather_facts: false
  tasks:
    - name: Pools
      passthrough.libvirt.hypervisor_pci_stats:
        sysfs_root: "{{ pci_sysfs_root }}"
        config_path: "{{ pci_config_path }}"
        device_spec: "{{ pci_device_spec }}"

    - name: Fleet
      passthrough.libvirt.pci_fleet:
        plain_cache: false
'''})
    ok(jobs.run_job(tmp_path, project, 'fleet_only.yml', fleet, {}, facts=store))
    assert store.facts == {'h1': {}, 'h2': {}, 'h3': {}}   # no <host> file: AWX clears the host's facts
