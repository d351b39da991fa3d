# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The message of a failed ``import libvirt``: missing bindings and bindings that cannot load (an execution
environment without libvirt.so.0) are different fixes, so they must read differently."""

from __future__ import annotations

import pytest

from ansible_collections.passthrough.libvirt.plugins.module_utils import _libvirt
from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import (
    Libvirt,
    LibvirtUnavailable,
    libvirt_import_message,
)

NOT_INSTALLED = 'the libvirt Python bindings are not installed (python3-libvirt or libvirt-python)'


def test_missing_bindings_say_so():
    error = ModuleNotFoundError("No module named 'libvirt'", name='libvirt')
    assert libvirt_import_message(error) == NOT_INSTALLED


def test_missing_shared_library_gives_the_real_error_and_the_package():
    # What libvirt-python raises when libvirtmod's libvirt.so.0 is absent (libvirt-python from PyPI, no libvirt0).
    error = ImportError('libvirt.so.0: cannot open shared object file: No such file or directory')
    assert libvirt_import_message(error) == (
        'the libvirt Python bindings cannot be imported: libvirt.so.0: cannot open shared object file: '
        'No such file or directory; install the libvirt client library (libvirt-libs on EL, libvirt0 on Debian)')


@pytest.mark.parametrize('error, cause', [
    (ImportError('/usr/lib64/python3.11/site-packages/libvirtmod.so: undefined symbol: virDomainFDAssociate'),
     '/usr/lib64/python3.11/site-packages/libvirtmod.so: undefined symbol: virDomainFDAssociate'),
    (ModuleNotFoundError("No module named 'libvirtmod'", name='libvirtmod'), "No module named 'libvirtmod'"),
    (ImportError('first line\n  second line'), 'first line second line'),
    (ImportError(), 'ImportError'),
])
def test_any_other_import_error_is_reported_as_it_is_on_one_line(error, cause):
    message = libvirt_import_message(error)
    assert message == f'the libvirt Python bindings cannot be imported: {cause}'
    assert '\n' not in message and 'not installed' not in message


def test_libvirt_raises_the_message_of_the_failed_import(monkeypatch):
    # The real import is left alone: only the module's record of it is replaced.
    message = libvirt_import_message(ImportError('libvirt.so.0: cannot open shared object file: No such file or directory'))
    monkeypatch.setattr(_libvirt, 'libvirt', None)
    monkeypatch.setattr(_libvirt, 'LIBVIRT_IMPORT_MESSAGE', message)
    with pytest.raises(LibvirtUnavailable) as caught:
        Libvirt('qemu:///system')
    assert str(caught.value) == message


def test_libvirt_without_a_recorded_import_error_says_not_installed(monkeypatch):
    monkeypatch.setattr(_libvirt, 'libvirt', None)
    monkeypatch.setattr(_libvirt, 'LIBVIRT_IMPORT_MESSAGE', None)
    with pytest.raises(LibvirtUnavailable, match=r'^the libvirt Python bindings are not installed'):
        Libvirt('qemu:///system')
