# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report from a real ansible-playbook run over three local hosts, read back in headless Chromium.

Each host is `ansible_connection=local` with its own fixture sysfs tree, whitelist and state file;
the real libvirtd gives the allocations. h3 never runs hypervisor_pci_stats and must be listed as
missing. The page is opened in Debian's chromium through Playwright, which records every request
the page makes: the only one allowed is the page itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright   # make test installs it, and Debian's chromium

from ansible_collections.passthrough.libvirt.tests import sysfs_tree
from ansible_collections.passthrough.libvirt.tests.integration.domains import hostdev_xml

PLAYBOOK = Path(__file__).parent / 'playbooks' / 'fleet.yml'
SRC_TREE = Path(os.path.abspath(sysfs_tree.__file__)).parents[4]
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


def write_inventory(tmp_path: Path) -> Path:
    sysfs_tree.dual_socket_server(tmp_path / 'h1' / 'sys')
    sysfs_tree.dual_socket_server(tmp_path / 'h2' / 'sys')
    sysfs_tree.no_iommu_host(tmp_path / 'h3' / 'sys')
    hosts = {name: {'fixture_sysfs': str(tmp_path / name / 'sys'), 'state_dir': str(tmp_path / name)} for name in ('h1', 'h2', 'h3')}
    hosts['h2']['whitelist'] = [{'vendor_id': '8086', 'product_id': '154c'}]     # VFs only, no tags
    hosts['h3']['skip_stats'] = True
    inventory = {'compute': {'hosts': hosts, 'vars': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'report_dir': str(tmp_path / 'report'),
        'whitelist': [{'vendor_id': '10de', 'product_id': '20b5'},
                      {'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}],
        'pci_aliases': [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
                        {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'}],
    }}}
    path = tmp_path / 'inventory.yml'
    path.write_text(yaml.safe_dump(inventory))
    return path


def playbook(tmp_path: Path, name: str, *options: str) -> subprocess.CompletedProcess:
    # A jsonfile fact cache, as an operator running under --limit would keep one.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1', ANSIBLE_CACHE_PLUGIN='jsonfile',
               ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / 'facts'))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml'),
                           str(PLAYBOOK.with_name(name)), *options], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope='module')
def report(libvirtd, tmp_path_factory):   # pylint: disable=unused-argument
    tmp_path = tmp_path_factory.mktemp('fleet')
    write_inventory(tmp_path)
    proc = playbook(tmp_path, 'fleet.yml')
    assert 'pci_fleet: 1 of 3 hosts have no pci_stats: h3' in proc.stdout + proc.stderr
    return tmp_path / 'report'


def test_under_limit_the_other_hosts_come_from_the_fact_cache(report):
    playbook(report.parent, 'fleet_limit.yml', '--limit', 'h1')


def test_the_fleet_report_counts_every_host(report):
    result = json.loads((report / 'result.json').read_text())
    fleet = result['fleet']['fleet']
    assert [(h['name'], h['status']) for h in fleet['hosts']] == [('h1', 'ok'), ('h2', 'ok'), ('h3', 'missing')]
    assert fleet['missing'] == ['h3']
    # h1: 2 A100s (NUMA 0 and 1) + 4 X710 VFs tagged physnet1; h2: the same 4 VFs without tags
    assert fleet['totals'] == {'count': 10, 'total': 10, 'allocated': 0, 'unavailable': 0}
    assert [(p['product_id'], p['tags'], p['count'], p['hosts']) for p in fleet['pools']] == [
        ('20b5', {}, 2, ['h1']), ('154c', {}, 4, ['h2']), ('154c', {'physical_network': 'physnet1'}, 4, ['h1'])]
    # gpu:1,vf:2 fits only h1 (h2 has no GPU); the JMESPath query sums the VF pools
    assert [c['host'] for c in result['fleet']['candidates']] == ['h1']
    assert result['fleet']['candidates'][0]['devices'] == {'gpu': ['0000:3c:00.0'], 'vf': ['0000:3b:02.0', '0000:3b:02.1']}
    assert result['fleet']['rejected'] == {'h2': 'gpu: 1 requested, 0 free: no whitelisted device of this host matches it',
                                           'h3': 'its pci_stats are missing'}
    assert json.loads((report / 'fleet.json').read_text())['rejected'] == result['fleet']['rejected']
    assert result['fleet']['query_result'] == 8
    assert result['fleet']['changed'] is True and result['again_changed'] is False
    assert json.loads((report / 'fleet.json').read_text())['totals'] == fleet['totals']


def test_the_page_shows_every_host_and_pool_and_requests_nothing(report):
    fleet = json.loads((report / 'result.json').read_text())['fleet']['fleet']
    url = (report / 'fleet.html').as_uri()
    requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        try:
            page = browser.new_page()
            page.on('request', lambda request: requests.append(request.url))
            page.goto(url, wait_until='load')
            page.wait_for_load_state('networkidle')
            text = page.inner_text('body')
            fleet_rows = page.locator('#fleet-pools tr').count() - 1
            host_rows = {name: page.locator(f'#host-{name} + table tr').count() - 1 for name in ('h1', 'h2')}
            missing = page.inner_text('#missing-h3')
        finally:
            browser.close()
    assert requests == [url]
    assert fleet_rows == len(fleet['pools']) == 3
    assert host_rows == {'h1': 3, 'h2': 1}
    assert 'h3: no pci_stats fact' in missing
    for host in fleet['hosts'][:2]:
        for pool in host['pools']:
            assert f'{pool["vendor_id"]}:{pool["product_id"]}' in text
            if pool['parent_addr']:
                assert pool['parent_addr'] in text
    assert 'physical_network=physnet1' in text
    assert '3 hosts (1 without pci_stats), 3 pools: 10 free, 0 allocated, 0 unavailable, 10 whitelisted devices.' in text


def test_the_inventory_playbook_publishes_the_summary_as_stats(conn, tmp_path):
    """playbooks/inventory.yml (the pci_inventory role) over three local hosts: the report and set_stats."""
    for name, build in (('h1', sysfs_tree.dual_socket_server), ('h2', sysfs_tree.dual_socket_server), ('h3', sysfs_tree.no_iommu_host)):
        build(tmp_path / name / 'sys')
    hosts = {name: {'pci_sysfs_root': str(tmp_path / name / 'sys'), 'pci_config_path': str(tmp_path / name / 'state.json')}
             for name in ('h1', 'h2', 'h3')}
    inventory = {'compute': {'hosts': hosts, 'vars': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'pci_device_spec': [{'vendor_id': '10de', 'product_id': '20b5'}],
        'pci_aliases': [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1', ANSIBLE_SHOW_CUSTOM_STATS='1',
               ANSIBLE_CALLBACK_RESULT_FORMAT='json')
    report = tmp_path / 'report'
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml'),
                           str(Path(__file__).resolve().parents[2] / 'playbooks' / 'inventory.yml'),
                           '-e', f'pci_report_dir={report}', '-e', 'pci_request=gpu:2'],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # The default callback prints the stats last: "CUSTOM STATS: ***" then a tab, "RUN: " and the JSON.
    run_line = [line for line in proc.stdout.splitlines() if line.startswith('\tRUN: ')]
    assert run_line, proc.stdout[-3000:]
    summary = json.loads(run_line[-1][len('\tRUN: '):])['pci_fleet_summary']
    assert summary['totals'] == {'count': 4, 'total': 4, 'allocated': 0, 'unavailable': 0}
    assert summary['hosts'] == {'h1': {'count': 2, 'total': 2, 'allocated': 0, 'unavailable': 0},
                                'h2': {'count': 2, 'total': 2, 'allocated': 0, 'unavailable': 0},
                                'h3': {'count': 0, 'total': 0, 'allocated': 0, 'unavailable': 0}}
    assert summary['missing'] == [] and summary['candidates'] == ['h1', 'h2'] and summary['report_dir'] == str(report)
    assert sorted(p.name for p in report.iterdir()) == ['fleet.html', 'fleet.json', 'h1.json', 'h2.json', 'h3.json']


IOMMU = 'IOMMU group 24: 0000:af:00.1 is held by the host driver snd_hda_intel'
SCREENSHOT = Path('/tmp/fleet-screenshot.png')


def test_when_no_host_fits_the_page_says_why_and_why_devices_are_grey(define_domain, tmp_path):
    """playbooks/inventory.yml with a request no host can satisfy, the page read back in Chromium (and a screenshot).

    h1 whitelists the A100s, the RTX 3090 (its HDMI audio function stays on snd_hda_intel: unavailable) and the
    X710 VFs tagged physnet1; h2 only the VFs. A domain holds one VF (both hosts share this libvirtd). No whitelist
    is stored on the hosts, so the role warns that pci_device_spec is not the stored one.
    """
    for name in ('h1', 'h2'):
        sysfs_tree.dual_socket_server(tmp_path / name / 'sys')
    vfs = {'vendor_id': '8086', 'product_id': '154c', 'physical_network': 'physnet1'}
    hosts = {name: {'pci_sysfs_root': str(tmp_path / name / 'sys'), 'pci_config_path': str(tmp_path / name / 'state.json')}
             for name in ('h1', 'h2')}
    hosts['h1']['pci_device_spec'] = [{'vendor_id': '10de', 'product_id': '20b5'}, {'address': '0000:af:00.0'}, vfs]
    hosts['h2']['pci_device_spec'] = [vfs]
    inventory = {'compute': {'hosts': hosts, 'vars': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'pci_aliases': [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'},
                        {'name': 'rtx', 'vendor_id': '10de', 'product_id': '2204'},
                        {'name': 'vf', 'vendor_id': '8086', 'product_id': '154c', 'device_type': 'type-VF'}]}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    holder = define_domain(hostdev_xml('0000:3b:02.3'))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1')
    report = tmp_path / 'report'
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml'),
                           str(Path(__file__).resolve().parents[2] / 'playbooks' / 'inventory.yml'),
                           '-e', f'pci_report_dir={report}', '-e', 'pci_request=rtx:1,vf:1'],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # the tables are headed by the inventory name; the drift warning; the summary says why per host
    assert _said(proc.stdout, 'h1 (libvirt: ') and _said(proc.stdout, 'h2 (libvirt: '), proc.stdout[-4000:]
    assert _said(proc.stdout, 'WARNING: h1: pci_device_spec differs from the whitelist stored on the host'), proc.stdout[-4000:]
    assert _said(proc.stdout, 'request rtx:1,vf:1 fits: no host'), proc.stdout[-4000:]
    assert _said(proc.stdout, f'h1 cannot: rtx: 1 requested, 0 free: 1 unavailable ({IOMMU})'), proc.stdout[-4000:]
    rejected = json.loads((report / 'fleet.json').read_text())['rejected']
    assert rejected == {'h1': f'rtx: 1 requested, 0 free: 1 unavailable ({IOMMU})',
                        'h2': 'rtx: 1 requested, 0 free: no whitelisted device of this host matches it'}

    url = (report / 'fleet.html').as_uri()
    requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.on('request', lambda request: requests.append(request.url))
            page.goto(url, wait_until='load')
            rejected_rows = page.locator('#rejected tr').all_inner_texts()[1:]
            stamp = page.inner_text('#generated-at')
            request_text = page.inner_text('#request')
            h1_rows = page.locator('#host-h1 + table tr').all_inner_texts()
            legend = ' '.join(page.locator('.legend').all_inner_texts())
            text = page.inner_text('body')
            page.screenshot(path=str(tmp_path / 'fleet.png'), full_page=True)
        finally:
            browser.close()
    shutil.copyfile(tmp_path / 'fleet.png', SCREENSHOT)
    assert requests == [url]
    assert [row.split('\t') for row in rejected_rows] == [[name, why] for name, why in rejected.items()]
    assert re.fullmatch(r'Report of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', stamp) and request_text == 'rtx:1,vf:1'
    assert 'No host can satisfy the request' in text and 'None.' not in text
    # h1's pools by name (pci.ids), with the aliases that match each and why the grey part is grey
    rtx = [row for row in h1_rows if '10de:2204' in row]
    assert len(rtx) == 1 and '\trtx\t' in rtx[0] and f'1 × {IOMMU}' in rtx[0], h1_rows
    vf_row = [row for row in h1_rows if '8086:154c' in row]
    assert len(vf_row) == 1 and '\tvf\t' in vf_row[0] and '\t3\t1\t0\t4\t' in vf_row[0], h1_rows
    if Path('/usr/share/misc/pci.ids').exists():
        assert 'NVIDIA Corporation' in rtx[0] and 'Intel Corporation' in vf_row[0]
    assert 'unavailable (grey)' in legend and 'IOMMU group sibling' in legend
    del holder


def _recap(stdout: str) -> dict[str, int]:
    """changed= per host from the PLAY RECAP."""
    found = {}
    for line in stdout.split('PLAY RECAP', 1)[-1].splitlines():
        host, sep, counters = line.partition(' : ')
        if sep:
            found[host.strip()] = int(dict(pair.split('=') for pair in counters.split())['changed'])
    return found


def _said(stdout: str, message: str) -> bool:
    """The role's report line, wherever the callback broke it."""
    return re.search(r'\s+'.join(re.escape(word) for word in message.split()), stdout) is not None


def test_attach_with_auto_changes_only_the_host_the_fleet_puts_first(conn, define_domain, tmp_path):
    """playbooks/attach.yml with pci_host_choice=auto over three local hosts sharing this libvirtd.

    h2 whitelists both A100s, h1 one of them, h3 has none: gpu:1 fits h2 first (most free), then h1.
    Only h2 attaches; the other hosts skip the module and see the fleet's choice all the same. A domain
    no host defines stops the play with one message. (The hosts share one libvirtd, so each sees the
    domain; the lab runs the same playbook on two real hypervisors.)
    """
    for name, build in (('h1', sysfs_tree.dual_socket_server), ('h2', sysfs_tree.dual_socket_server), ('h3', sysfs_tree.no_iommu_host)):
        build(tmp_path / name / 'sys')
    hosts = {name: {'pci_sysfs_root': str(tmp_path / name / 'sys'), 'pci_config_path': str(tmp_path / name / 'state.json'),
                    'pci_device_spec': [{'vendor_id': '10de', 'product_id': '20b5'}]} for name in ('h1', 'h2', 'h3')}
    hosts['h1']['pci_device_spec'] = [{'vendor_id': '10de', 'product_id': '20b5', 'address': '0000:86:00.0'}]
    inventory = {'compute': {'hosts': hosts, 'vars': {
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
        'pci_aliases': [{'name': 'gpu', 'vendor_id': '10de', 'product_id': '20b5'}]}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    dom = define_domain()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(SRC_TREE), ANSIBLE_NOCOLOR='1')
    playbooks = Path(__file__).resolve().parents[2] / 'playbooks'

    def run(name: str, *extra: str, domain: str = dom.name()) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml'),
                               str(playbooks / name), '-e', f'pci_domain={domain}', '-e', 'pci_request=gpu:1', *extra],
                              env=env, capture_output=True, text=True, timeout=300, check=False)

    nowhere = run('attach.yml', '-e', 'pci_host_choice=auto', domain='pcitest-defined-nowhere')
    assert nowhere.returncode == 2
    assert "pci_domain pcitest-defined-nowhere is defined on none of the play's hosts (h1, h2, h3)" in nowhere.stdout, nowhere.stdout[-3000:]

    attached = run('attach.yml', '-e', 'pci_host_choice=auto')
    assert attached.returncode == 0, attached.stdout[-4000:] + attached.stderr[-2000:]
    assert _recap(attached.stdout) == {'h1': 0, 'h2': 1, 'h3': 0}
    assert _said(attached.stdout, f'{dom.name()} on h2: attached 0000:3c:00.0, detached nothing; now 0000:3c:00.0')
    assert '<hostdev' in dom.XMLDesc(2)                       # 2: VIR_DOMAIN_XML_INACTIVE, the persistent definition
    assert 'Attach or detach] ***' in attached.stdout and 'skipping: [h1]' in attached.stdout

    again = run('attach.yml', '-e', 'pci_host_choice=auto')
    assert again.returncode == 0 and _recap(again.stdout) == {'h1': 0, 'h2': 0, 'h3': 0}, again.stdout[-3000:]

    detached = run('detach.yml', '-e', 'pci_hosts=h2')
    assert detached.returncode == 0 and _recap(detached.stdout) == {'h2': 1}, detached.stdout[-3000:]
    assert _said(detached.stdout, f'{dom.name()} on h2: attached nothing, detached 0000:3c:00.0; now no PCI devices'), \
        detached.stdout[-3000:]
    assert '<hostdev' not in dom.XMLDesc(2)
