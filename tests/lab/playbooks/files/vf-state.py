# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VFs of an SR-IOV NIC as its PF's driver reports them (`ip -json link show <pf>`), as one JSON object.

    vf-state.py PF [DOMAIN]     PF: a PCI address (0000:04:00.0) or a netdev name (enp4s0)

Runs inside a lab hypervisor (python3, iproute2, virsh). Prints {pf, netdev, driver, numvfs, vfs: [{vf, address,
driver, mac, vlan, qos, spoofchk, trust, link_state, settings}]}: `address` is the VF's PCI address (the PF's
virtfn<N> link), `vlan` 0 when none is set, `settings` what a guest's attachment may change, on one line. With
DOMAIN, also `interfaces`: the <interface type='hostdev'> of its definition (the live one when it runs) as
[{address, mac, vlan, alias}].
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

SYS_PCI = '/sys/bus/pci/devices'


def link_name(path: str) -> str | None:
    return os.path.basename(os.readlink(path)) if os.path.islink(path) else None


def domain_interfaces(domain: str) -> list[dict]:
    root = ET.fromstring(subprocess.run(['virsh', '-q', 'dumpxml', domain], check=True, capture_output=True, text=True).stdout)
    found = []
    for interface in root.iterfind("devices/interface[@type='hostdev']"):
        source = interface.find('source/address')
        address = '{}:{}:{}.{}'.format(*(source.get(key, '0x0')[2:].zfill(width) for key, width in
                                         (('domain', 4), ('bus', 2), ('slot', 2), ('function', 1)))) if source is not None else None
        mac, alias = interface.find('mac'), interface.find('alias')
        found.append({
            'address': address,
            'mac': mac.get('address') if mac is not None else None,
            'vlan': [int(tag.get('id')) for tag in interface.iterfind('vlan/tag')],
            'alias': alias.get('name') if alias is not None else None,
        })
    return found


def main() -> int:
    pf = sys.argv[1]
    if os.path.isdir(os.path.join(SYS_PCI, pf)):
        address = pf
        netdev = sorted(os.listdir(os.path.join(SYS_PCI, pf, 'net')))[0]
    else:
        netdev = pf
        address = link_name(f'/sys/class/net/{pf}/device')
    base = os.path.join(SYS_PCI, address)
    link = json.loads(subprocess.run(['ip', '-json', 'link', 'show', 'dev', netdev], check=True, capture_output=True,
                                     text=True).stdout)[0]
    vfs = []
    for info in link.get('vfinfo_list', []):
        number = info['vf']
        vlan = (info.get('vlan_list') or [{}])[0] or {'vlan': info.get('vlan', 0), 'qos': info.get('qos', 0)}
        vf_address = link_name(f'{base}/virtfn{number}')
        vfs.append({
            'vf': number,
            'address': vf_address,
            'driver': link_name(f'{SYS_PCI}/{vf_address}/driver') if vf_address else None,
            'mac': info.get('address', info.get('mac')),
            'vlan': vlan.get('vlan', 0),
            'qos': vlan.get('qos', 0),
            'spoofchk': info.get('spoofchk'),
            'trust': info.get('trust'),
            'link_state': info.get('link_state'),
        })
        vf = vfs[-1]
        vf['settings'] = (f'{vf["mac"]} vlan {vf["vlan"]} trust {"on" if vf["trust"] else "off"} '
                          f'spoofchk {"on" if vf["spoofchk"] else "off"} link-state {vf["link_state"]}')
    with open(f'{base}/sriov_numvfs', encoding='ascii') as handle:
        numvfs = int(handle.read())
    state = {'pf': address, 'netdev': netdev, 'driver': link_name(f'{base}/driver'), 'numvfs': numvfs, 'vfs': vfs}
    if len(sys.argv) > 2:
        state['interfaces'] = domain_interfaces(sys.argv[2])
    print(json.dumps(state))
    return 0


if __name__ == '__main__':
    sys.exit(main())
