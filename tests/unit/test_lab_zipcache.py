# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's bytecode cache for zip imports (tests/lab/zipcache.py): what runs is what the zip holds.

Each case runs a fresh interpreter, as a module run in the lab is one, with the cache installed as the lab's .pth
line installs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / 'lab'

PROGRAM = '''
import json, sys, traceback
sys.path.insert(0, {lab!r})
import zipcache
zipcache.CACHE = {cache!r}
zipcache.install()
sys.path.insert(0, {archive!r})
import pkg.mod
try:
    pkg.mod.fail()
except ValueError:
    line = traceback.format_exc().splitlines()[-2].strip()
print(json.dumps({{'value': pkg.mod.VALUE, 'file': pkg.mod.__file__, 'code_file': pkg.mod.fail.__code__.co_filename,
                  'importer': type(pkg.mod.__loader__).__name__, 'traceback_line': line, 'package': pkg.NAME}}))
'''


def payload(path: Path, value: int) -> Path:
    """A zip as AnsiballZ ships code: a package and a module, sources only."""
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('pkg/__init__.py', "NAME = 'pkg'\n")
        archive.writestr('pkg/mod.py', f'VALUE = [n * {value} for n in range(3)]\n\n\ndef fail():\n    raise ValueError("from the zip")\n')
    return path


def run(cache: Path, archive: Path) -> dict:
    program = PROGRAM.format(lab=str(LAB), cache=str(cache), archive=str(archive))
    done = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_second_run_takes_the_code_from_the_cache_under_its_own_zips_name(tmp_path):
    cache = tmp_path / 'cache'
    first = run(cache, payload(tmp_path / 'first.zip', 2))
    stored = sorted(path.name for path in cache.iterdir())
    second = run(cache, payload(tmp_path / 'second.zip', 2))
    assert len(stored) == 2                                   # the package and the module, one entry per source text
    assert sorted(path.name for path in cache.iterdir()) == stored
    assert first['importer'] == second['importer'] == 'CachingZipImporter'
    assert first['value'] == second['value'] == [0, 2, 4]
    assert second['file'] == second['code_file'] == str(tmp_path / 'second.zip' / 'pkg' / 'mod.py')
    assert second['traceback_line'] == 'raise ValueError("from the zip")'
    assert second['package'] == 'pkg'


def test_a_changed_source_is_compiled_again_not_taken_from_the_cache(tmp_path):
    cache = tmp_path / 'cache'
    run(cache, payload(tmp_path / 'first.zip', 2))
    changed = run(cache, payload(tmp_path / 'second.zip', 5))
    assert changed['value'] == [0, 5, 10]
    assert len(list(cache.iterdir())) == 3


def test_an_unwritable_cache_only_costs_the_compile(tmp_path):
    blocked = tmp_path / 'file'
    blocked.write_text('not a directory', encoding='utf-8')
    found = run(blocked / 'cache', payload(tmp_path / 'first.zip', 3))
    assert found['value'] == [0, 3, 6]
