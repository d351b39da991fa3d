# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A bytecode cache for code imported from zip files, installed in the lab's hypervisor VMs only (lab.py).

Every Ansible module run ships its module, the collection's module_utils and ansible-core's in a
fresh zip (AnsiballZ), and Python's zipimport never keeps what it compiles: each run compiles all
of it again. Under TCG that is most of a module run (measured in lab2: a pci_attachment run took
about 12 s, 6-8 s with this cache; on a real host the same compile takes a fraction of a second).
This importer keeps each source file's code object in /var/cache/lab-zipcache, keyed by the
interpreter's magic number and the SHA-256 of the source text, so a file is compiled once per
text; the code objects are given the current zip's file names, as a compile would. The code that
runs is the same; only where its bytecode comes from differs.
"""

import hashlib
import importlib.util
import marshal
import os
import sys
import zipimport

CACHE = '/var/cache/lab-zipcache'


def _renamed(code, filename):
    consts = tuple(_renamed(const, filename) if isinstance(const, type(code)) else const for const in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


class CachingZipImporter(zipimport.zipimporter):
    """zipimport's importer; get_code answers from the cache for a source compiled before."""

    def _source(self, fullname):
        """(path inside the zip as zipimport names it, source text), or None where zipimport would not compile."""
        try:
            inner = self.prefix + fullname.rpartition('.')[2] + ('/__init__.py' if self.is_package(fullname) else '.py')
            inner = inner.replace('/', os.sep)
            if inner + 'c' in self._files:   # zipimport prefers bytecode shipped in the zip
                return None
            return self._files[inner][0], self.get_source(fullname)
        except Exception:  # pylint: disable=broad-except
            return None

    def get_code(self, fullname):
        found = self._source(fullname)
        if found is None or found[1] is None:
            return super().get_code(fullname)
        filename, source = found
        key = hashlib.sha256(importlib.util.MAGIC_NUMBER + source.encode('utf-8', 'surrogatepass')).hexdigest()
        path = os.path.join(CACHE, key)
        try:
            with open(path, 'rb') as handle:
                return _renamed(marshal.load(handle), filename)
        except (OSError, EOFError, ValueError, TypeError):
            pass
        code = compile(source, filename, 'exec', dont_inherit=True)
        try:
            os.makedirs(CACHE, mode=0o700, exist_ok=True)
            temporary = f'{path}.{os.getpid()}'
            with open(temporary, 'wb') as handle:
                marshal.dump(code, handle)
            os.replace(temporary, path)
        except OSError:
            pass
        return code


def install():
    """Put the caching importer where zipimport's path hook is (a .pth line calls this at interpreter start)."""
    for index, hook in enumerate(sys.path_hooks):
        if hook is zipimport.zipimporter:
            sys.path_hooks[index] = CachingZipImporter
    for entry, finder in list(sys.path_importer_cache.items()):
        if isinstance(finder, zipimport.zipimporter) and not isinstance(finder, CachingZipImporter):
            del sys.path_importer_cache[entry]
