# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_device_info's mediated devices, run as a real module process on fixture trees with mdev parents.

Which domain holds an mdev comes from libvirt's own `test:///<file>` driver, loaded with a domain
whose XML has a `<hostdev type='mdev'>`.
"""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.tests import mdev_tree, sysfs_tree

pytest.importorskip('libvirt')

HELD, FREE, ATTACHMENT = '6f1c4e1e-2d6a-4a39-9b3c-7f2b8a3c1d20', '0c0f6f0e-93a4-4d8e-9a53-2a4f1f0e8b11', '3e1c0a5e-2b7e-4d1a-9a43-2f9a3d5f6c10'
NODE_XML = f"""<node>
  <domain type='test'>
    <name>vm-a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <devices>
      <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
        <source><address uuid='{HELD}'/></source>
        <alias name='ua-pci-{ATTACHMENT}'/>
      </hostdev>
    </devices>
  </domain>
</node>
"""


@pytest.fixture
def host(tmp_path):
    root = tmp_path / 'sys'
    sysfs_tree.dual_socket_server(root)
    gpu = mdev_tree.device_dir(root, '0000:3c:00.0')
    mdev_tree.mdev_parent(root, gpu, {'nvidia-470': {'name': 'GRID A100-4C', 'device_api': 'vfio-pci', 'available_instances': 9,
                                                     'description': 'framebuffer=4096M'}})
    mtty = mdev_tree.virtual_parent(root)
    mdev_tree.mdev_parent(root, mtty, {'mtty-1': {'name': 'Single port serial', 'device_api': 'vfio-pci', 'available_instances': 0},
                                       'mtty-2': {'name': 'Dual port serial', 'device_api': 'vfio-pci', 'available_instances': 10}})
    mdev_tree.mdev(root, mtty, 'mtty-2', HELD)
    mdev_tree.mdev(root, gpu, 'nvidia-470', FREE)
    mdev_tree.nvidia_vgpu(root, '0000:3b:02.3', {556: 'NVIDIA A100-1-5C'}, current=556)    # any VF will do for the attributes
    node = tmp_path / 'node.xml'
    node.write_text(NODE_XML)
    return {'sysfs_root': str(root), 'uri': f'test://{node}', 'config_path': str(tmp_path / 'state.json')}


def test_parents_types_and_mdevs_with_their_domains(run_module, host):
    result = run_module('pci_device_info', **host).result
    assert result['mdev_parents'] == [
        {'name': '0000:3c:00.0', 'address': '0000:3c:00.0', 'types': [
            {'type_id': 'nvidia-470', 'name': 'GRID A100-4C', 'description': 'framebuffer=4096M', 'device_api': 'vfio-pci',
             'available_instances': 9, 'mdevs': [FREE]}]},
        {'name': 'mtty', 'address': None, 'types': [
            {'type_id': 'mtty-1', 'name': 'Single port serial', 'description': None, 'device_api': 'vfio-pci',
             'available_instances': 0, 'mdevs': []},
            {'type_id': 'mtty-2', 'name': 'Dual port serial', 'description': None, 'device_api': 'vfio-pci',
             'available_instances': 10, 'mdevs': [HELD]}]}]
    assert result['mdevs'] == [
        {'uuid': FREE, 'parent': '0000:3c:00.0', 'type_id': 'nvidia-470', 'status': 'free', 'instance_uuid': None,
         'instance_name': None, 'attachment_id': None},
        {'uuid': HELD, 'parent': 'mtty', 'type_id': 'mtty-2', 'status': 'allocated',
         'instance_uuid': '11111111-2222-3333-4444-555555555555', 'instance_name': 'vm-a', 'attachment_id': ATTACHMENT}]
    devices = {d['address']: d for d in result['pci_devices']}
    assert devices['0000:3c:00.0']['extra_info']['mdev_types'] == ['nvidia-470']
    assert 'mdev_types' not in devices['0000:86:00.0']['extra_info']


def test_nvidia_sriov_vgpu_vfs(run_module, tmp_path):
    mdev_tree.vgpu_server(tmp_path / 'vgpu')
    result = run_module('pci_device_info', sysfs_root=str(tmp_path / 'vgpu'), require_libvirt=False,
                        config_path=str(tmp_path / 'state.json')).result
    devices = {d['address']: d for d in result['pci_devices']}
    creatable = [{'id': 1155, 'name': 'NVIDIA L40S-4Q'}, {'id': 1156, 'name': 'NVIDIA L40S-8Q'}]
    assert devices['0000:01:00.4']['extra_info']['vgpu'] == {'creatable_types': creatable, 'current_type': None}
    assert devices['0000:01:00.5']['extra_info']['vgpu'] == {'creatable_types': creatable, 'current_type': 1156}
    assert 'vgpu' not in devices['0000:01:00.0']['extra_info'] and result['mdev_parents'] == [] and result['mdevs'] == []


def test_no_libvirt_leaves_the_mdevs_unknown(run_module, host):
    result = run_module('pci_device_info', **dict(host, uri='qemu+unix:///system?socket=/nonexistent', require_libvirt=False)).result
    assert [m['status'] for m in result['mdevs']] == ['unknown', 'unknown']
