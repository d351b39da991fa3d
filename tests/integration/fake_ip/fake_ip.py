# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test double of iproute2's ``ip`` for the PFs of sysfs fixture trees (tests put this directory first in PATH).

No SR-IOV NIC exists on the test machines (and no netdevsim), so a fixture PF's per-VF settings
live in the JSON file named by PTLV_FAKE_IP: {netdev: {"operstate": ..., "vfs": {"0": {mac, vlan,
trust, spoofchk, link_state}}}}. It answers the two commands the collection runs, in iproute2's
own JSON shape, and logs each call to PTLV_FAKE_IP + ".log". PTLV_FAKE_IP_FAIL="<netdev> vf <N>"
makes setting that VF fail as a driver refusing it would. The lab runs the real ip on a real igb.
"""
import json
import os
import sys

state_path = os.environ['PTLV_FAKE_IP']
args = sys.argv[1:]
with open(state_path + '.log', 'a', encoding='utf-8') as log:
    log.write(' '.join(args) + '\n')
with open(state_path, encoding='utf-8') as handle:
    state = json.load(handle)

if args == ['-json', 'link', 'show']:
    links = []
    for ifindex, (name, nic) in enumerate(sorted(state.items()), start=2):
        vfs = [{'vf': int(index), 'link_type': 'ether', 'address': vf.get('mac', '00:00:00:00:00:00'),
                'broadcast': 'ff:ff:ff:ff:ff:ff', 'vlan_list': [{'vlan': vf['vlan']}] if vf.get('vlan') else [],
                'spoofchk': vf.get('spoofchk', True), 'link_state': vf.get('link_state', 'auto'), 'trust': vf.get('trust', False)}
               for index, vf in sorted(nic.get('vfs', {}).items(), key=lambda item: int(item[0]))]
        links.append({'ifindex': ifindex, 'ifname': name, 'operstate': nic.get('operstate', 'UP'), 'vfinfo_list': vfs})
    print(json.dumps(links))
    sys.exit(0)

if args[:3] == ['link', 'set', 'dev'] and len(args) >= 6 and args[4] == 'vf':
    name, index, rest = args[3], args[5], args[6:]
    if name not in state or index not in state[name].get('vfs', {}):
        sys.stderr.write('RTNETLINK answers: No such device\n')
        sys.exit(2)
    if os.environ.get('PTLV_FAKE_IP_FAIL') == f'{name} vf {index}':
        sys.stderr.write('RTNETLINK answers: Operation not supported\n')
        sys.exit(2)
    vf = state[name]['vfs'][index]
    keys = {'trust': 'trust', 'spoofchk': 'spoofchk', 'state': 'link_state'}
    for word, value in zip(rest[::2], rest[1::2]):
        vf[keys[word]] = value if word == 'state' else value == 'on'
    with open(state_path, 'w', encoding='utf-8') as handle:
        json.dump(state, handle)
    sys.exit(0)

sys.stderr.write(f'fake ip: unsupported command {args}\n')
sys.exit(255)
