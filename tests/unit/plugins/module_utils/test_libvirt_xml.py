# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Domain XML parsing and the allocation merge. The real daemon is exercised in tests/integration."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import DomainNotFound, find_domain, parse_hostdevs
from ansible_collections.passthrough.libvirt.plugins.module_utils._model import DomainInfo, PciAddress, allocations

DOMAIN_XML = """
<domain type='kvm'>
  <name>web01</name>
  <devices>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/></source>
      <alias name='ua-pci-3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci'>
      <source><address domain='0x10000' bus='0xe0' slot='0x00' function='0x0'/></source>
      <alias name='hostdev1'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb'>
      <source><vendor id='0x1234'/><product id='0xbeef'/></source>
    </hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source><address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source>
    </hostdev>
    <interface type='hostdev' managed='yes'>
      <source><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x2'/></source>
      <mac address='52:54:00:6d:90:02'/>
    </interface>
    <interface type='network'><source network='default'/></interface>
    <hostdev mode='subsystem' type='pci'>
      <source><address domain='0x0000' bus='0xzz' slot='0x00' function='0x0'/></source>
    </hostdev>
  </devices>
</domain>
"""


def test_parse_hostdevs_finds_pci_hostdevs_and_hostdev_interfaces():
    hostdevs = parse_hostdevs(DOMAIN_XML)
    assert [str(h.address) for h in hostdevs] == ['0000:3b:02.1', '10000:e0:00.0', '0000:3b:02.2']
    ours, foreign, interface = hostdevs
    assert ours.attachment_id == '3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10'
    assert ours.inner_address == '0000:07:00.0' and ours.managed
    assert foreign.attachment_id is None and foreign.alias == 'hostdev1' and not foreign.managed
    assert interface.kind == 'interface' and interface.managed


def _info(name, uuid, live=(), config=()):
    return DomainInfo(uuid=uuid, name=name, active=bool(live), persistent=bool(config),
                      hostdevs_live=parse_hostdevs(live[0]) if live else [],
                      hostdevs_config=parse_hostdevs(config[0]) if config else [])


def test_allocations_merge_live_and_persistent():
    only_live = DOMAIN_XML.replace("function='0x1'/></source>", "function='0x3'/></source>")
    info = _info('web01', 'u-1', live=(only_live,), config=(DOMAIN_XML,))
    result = allocations([info])
    both = result[PciAddress.parse('0000:3b:02.2')]
    assert both.live and both.persistent and both.domain_name == 'web01'
    assert result[PciAddress.parse('0000:3b:02.3')].live and not result[PciAddress.parse('0000:3b:02.3')].persistent
    persistent_only = result[PciAddress.parse('0000:3b:02.1')]
    assert persistent_only.persistent and not persistent_only.live
    assert persistent_only.attachment_id == '3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10'


def test_first_domain_by_name_keeps_a_doubly_configured_device():
    first = _info('a-dom', 'u-a', config=(DOMAIN_XML,))
    second = _info('b-dom', 'u-b', config=(DOMAIN_XML,))
    assert allocations([first, second])[PciAddress.parse('0000:3b:02.1')].domain_uuid == 'u-a'


def test_find_domain_by_name_or_uuid():
    infos = [_info('web01', '8F5B2B0C-4A55-4BD8-9D4E-7F2F4A1C0B6E')]
    assert find_domain(infos, 'web01') is infos[0]
    assert find_domain(infos, '8f5b2b0c-4a55-4bd8-9d4e-7f2f4a1c0b6e') is infos[0]
    with pytest.raises(DomainNotFound, match="'web02' does not exist"):
        find_domain(infos, 'web02')


# -- the write side's XML ---------------------------------------------------------------------------

def test_hostdev_xml_round_trips_through_the_parser():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import hostdev_xml
    xml = hostdev_xml(PciAddress.parse('10000:e0:1f.7'), '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11')
    (hostdev,) = parse_hostdevs(f'<domain><devices>{xml}</devices></domain>')
    assert (str(hostdev.address), hostdev.attachment_id, hostdev.managed) == ('10000:e0:1f.7', '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11', True)


def test_metadata_round_trip_and_garbage():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import metadata_xml, parse_metadata
    interface = {'mac': '02:5a:1c:3e:07:9d', 'vlan': 100, 'trust': True, 'spoofchk': None, 'link_state': 'enable',
                 'pf': 'ens1f0', 'vf': 3, 'was': {'trust': False, 'link_state': 'auto'}}
    records = [{'id': 'a', 'alias': 'vf', 'address': '0000:3b:02.2', 'interface': None},
               {'id': 'b', 'alias': None, 'address': '0000:3c:00.0', 'interface': None},
               {'id': 'c', 'alias': 'nic', 'address': '0000:3b:02.3', 'interface': interface},
               {'id': 'd', 'alias': 'serial', 'address': None, 'interface': None,
                'mdev': {'uuid': '6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20', 'parent': 'mtty', 'type': 'mtty-2', 'created': True}},
               {'id': 'e', 'alias': 'vgpu', 'address': '0000:01:00.4', 'interface': None, 'vgpu': {'type': 1155, 'was': None}}]
    assert parse_metadata(metadata_xml(records)) == records
    # an mdev record someone edited is dropped whole rather than read in part
    edited = parse_metadata("<attachments><attachment id='f'><mdev uuid='6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20' parent='../x' "
                            "type='mtty-2' created='true'/></attachment></attachments>")
    assert edited[0]['mdev'] is None
    assert parse_metadata(None) == [] and parse_metadata('<not xml') == [] and parse_metadata('<attachments><attachment/></attachments>') == []


@pytest.mark.parametrize('attrs, key, value', [
    ("mac='01:00:5e:00:00:01'", 'mac', None),       # multicast: not ours
    ("vlan='5000'", 'vlan', None),
    ("vlan='x'", 'vlan', None),
    ("trust='yes'", 'trust', None),                # only what this collection writes
    ("link-state='up'", 'link_state', None),
    ("pf='../etc'", 'pf', None),
    ("pf='-x'", 'pf', None),
    ("vf='-1'", 'vf', None),
    ("vf='2'", 'vf', 2),
])
def test_an_edited_interface_record_is_read_strictly(attrs, key, value):
    """A record someone edited by hand never puts an unchecked value into a command or XML."""
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import parse_metadata
    (record,) = parse_metadata(f"<attachments><attachment id='a' address='0000:3b:02.2'><interface {attrs}/></attachment></attachments>")
    assert record['interface'][key] == value


def test_an_interface_is_written_with_mac_vlan_driver_and_alias_and_read_back():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import hostdev_xml, interface_macs
    xml = hostdev_xml(PciAddress.parse('0000:3b:02.3'), '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11', {'mac': '02:5A:1C:3E:07:9D', 'vlan': 100})
    assert xml == ("<interface type='hostdev' managed='yes'><mac address='02:5a:1c:3e:07:9d'/><driver name='vfio'/>"
                   "<source><address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x3'/></source>"
                   "<vlan><tag id='100'/></vlan><alias name='ua-pci-0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11'/></interface>")
    domain = f"<domain><devices><interface type='network'><mac address='52:54:00:00:00:01'/></interface>{xml}</devices></domain>"
    (hostdev,) = parse_hostdevs(domain)
    assert (hostdev.kind, hostdev.mac, hostdev.vlan, hostdev.attachment_id) == \
        ('interface', '02:5a:1c:3e:07:9d', 100, '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11')
    assert interface_macs(domain) == {'52:54:00:00:00:01': 'interface type=network',
                                      '02:5a:1c:3e:07:9d': 'interface type=hostdev alias ua-pci-0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11'}


@pytest.mark.parametrize('numatune, nodes', [
    ('', None),
    ("<numatune><memory mode='strict' nodeset='1'/></numatune>", {1}),
    ("<numatune><memory mode='preferred' nodeset='0-2,^1,5'/></numatune>", {0, 2, 5}),
    ("<numatune><memory mode='strict' placement='auto'/></numatune>", None),
])
def test_numa_nodes_of_a_domain(numatune, nodes):
    from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import numa_nodes
    assert numa_nodes(f'<domain>{numatune}<devices/></domain>') == nodes
