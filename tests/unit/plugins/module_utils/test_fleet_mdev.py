# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pci_fleet's aggregation and fitting of mdev and vGPU pools, as hypervisor_pci_stats reports them."""

from __future__ import annotations

from ansible_collections.passthrough.libvirt.plugins.module_utils._alias import parse_aliases, parse_request
from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import aggregate, candidates


def mdev_pool(type_id, name, count, parent='0000:3c:00.0', allocated=0, vendor='10de', product='20b5'):
    return {'count': count, 'total': count + allocated, 'allocated': allocated, 'unavailable': 0, 'vendor_id': vendor,
            'product_id': product, 'dev_type': 'type-MDEV', 'numa_node': 0, 'parent_addr': parent, 'mdev_type': type_id,
            'mdev_name': name, 'device_api': 'vfio-pci', 'tags': {}, 'free_mdevs': [], 'free_addresses': [], 'unavailable_reasons': {}}


VF_POOL = {'count': 2, 'total': 2, 'allocated': 0, 'unavailable': 0, 'vendor_id': '8086', 'product_id': '154c', 'dev_type': 'type-VF',
           'numa_node': 0, 'parent_addr': '0000:3b:00.0', 'tags': {}, 'free_addresses': ['0000:3b:02.0', '0000:3b:02.1'],
           'unavailable_reasons': {}}
HOSTS = [
    ('h1', {'pci_stats': [mdev_pool('nvidia-470', 'GRID A100-4C', 9), mdev_pool('nvidia-471', 'GRID A100-8C', 4), VF_POOL]}),
    ('h2', {'pci_stats': [mdev_pool('nvidia-470', 'GRID A100-4C', 1, allocated=8), VF_POOL]}),
    ('h3', {'pci_stats': [mdev_pool('mtty-2', 'Dual port serial', 12, parent='mtty', vendor=None, product=None)]}),
]
ALIASES = parse_aliases([{'name': 'vgpu-4c', 'mdev_type': 'GRID A100-4C'}, {'name': 'vf', 'vendor_id': '8086', 'device_type': 'type-VF'},
                         {'name': 'serial', 'mdev_type': 'mtty-*'}])


def test_slices_of_one_parent_model_stay_apart_by_type():
    fleet = aggregate(HOSTS)
    slices = [(p['vendor_id'], p['mdev_type'], p['mdev_name'], p['count'], p['allocated'], p['hosts'])
              for p in fleet['pools'] if p['dev_type'] == 'type-MDEV']
    assert slices == [('10de', 'nvidia-470', 'GRID A100-4C', 10, 8, ['h1', 'h2']), ('10de', 'nvidia-471', 'GRID A100-8C', 4, 0, ['h1']),
                      (None, 'mtty-2', 'Dual port serial', 12, 0, ['h3'])]
    assert fleet['totals']['count'] == 9 + 4 + 2 + 1 + 2 + 12


def test_a_request_mixing_slices_and_whole_devices_fits_where_both_are_free():
    fleet = aggregate(HOSTS)
    fitting, rejected = candidates(fleet, parse_request('vgpu-4c:2,vf:1', ALIASES), ALIASES)
    assert [(c['host'], c['free'], c['devices']) for c in fitting] == [
        ('h1', {'vgpu-4c': 9, 'vf': 2}, {'vf': ['0000:3b:02.0'], 'vgpu-4c': ['GRID A100-4C on 0000:3c:00.0'] * 2})]
    assert rejected['h2'] == 'vgpu-4c: 2 requested, 1 free: 8 allocated'
    assert rejected['h3'].startswith('vgpu-4c: 2 requested, 0 free')
    serial, _rejected = candidates(fleet, parse_request('serial:3', ALIASES), ALIASES)
    assert [(c['host'], c['devices']) for c in serial] == [('h3', {'serial': ['Dual port serial on mtty'] * 3})]


def test_the_page_names_each_slice_type():
    from ansible_collections.passthrough.libvirt.plugins.module_utils._fleet import render_html
    page = render_html(aggregate(HOSTS))
    assert page.count('type-MDEV nvidia-470 (GRID A100-4C)') == 3        # the fleet's pool, then h1's and h2's
    assert 'type-MDEV nvidia-471 (GRID A100-8C)' in page and 'type-MDEV mtty-2 (Dual port serial)' in page
