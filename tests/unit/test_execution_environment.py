# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""meta/execution-environment.yml with the real ansible-builder: `create` writes a build context from it,
and `introspect` finds the collection's dependencies once it is installed. Building the image needs
podman or docker; tests/integration/test_execution_environment_build.py does (`make ee`) where podman and
debootstrap are installed. The bindep rules are checked per platform here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bindep.depends import Depends

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*command: str, cwd: Path = ROOT, env: dict | None = None) -> str:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, f'{command} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}'
    return proc.stdout


@pytest.mark.parametrize('name', ['requirements.txt', 'bindep.txt'])
def test_the_definitions_files_are_the_collections(name):
    # ansible-builder create reads them beside the definition; introspection reads them at the root.
    assert (ROOT / 'meta' / name).read_text(encoding='utf-8') == (ROOT / name).read_text(encoding='utf-8'), \
        f'meta/{name} differs from {name}: copy {name} to meta/'


def test_ansible_builder_create_accepts_the_definition(tmp_path):
    context = tmp_path / 'context'
    _run(str(BIN / 'ansible-builder'), 'create', '-f', 'meta/execution-environment.yml', '-c', str(context),
         '--output-filename', 'Containerfile')
    containerfile = (context / 'Containerfile').read_text(encoding='utf-8')
    definition = yaml.safe_load((ROOT / 'meta' / 'execution-environment.yml').read_text(encoding='utf-8'))
    assert f'ARG EE_BASE_IMAGE="{definition["images"]["base_image"]["name"]}"' in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    assert 'ansible-core>=2.17.0 ansible-runner' in containerfile
    assert '--user-pip=requirements.txt --user-bindep=bindep.txt' in containerfile
    assert containerfile.index('config-manager --set-enabled crb') < containerfile.index('FROM base AS builder')
    pip = (context / '_build' / 'requirements.txt').read_text(encoding='utf-8')
    assert 'libvirt-python' in pip and 'jmespath' in pip
    assert 'libvirt-devel [platform:rpm compile]' in (context / '_build' / 'bindep.txt').read_text(encoding='utf-8')


def test_introspection_finds_the_dependencies_of_the_installed_collection(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / 'collections'))
    _run(str(BIN / 'ansible-galaxy'), 'collection', 'build', '--force', '--output-path', str(tmp_path), '.', env=env)
    tarball = next(tmp_path.glob('passthrough-libvirt-*.tar.gz'))
    _run(str(BIN / 'ansible-galaxy'), 'collection', 'install', '--force', '-p', str(tmp_path / 'collections'), str(tarball), env=env)
    found = yaml.safe_load(_run(str(BIN / 'ansible-builder'), 'introspect', str(tmp_path / 'collections')))
    python = [line.split('#')[0].strip() for line in found['python']]
    system = [line.split('#')[0].strip() for line in found['system']]
    assert python == [line for line in (ROOT / 'requirements.txt').read_text(encoding='utf-8').splitlines()
                      if line.strip() and not line.startswith('#')]
    assert 'libvirt-devel [platform:rpm compile]' in system
    assert all('from collection passthrough.libvirt' in line for line in found['python'] + found['system'])


@pytest.mark.parametrize('profiles, expected', [
    (['platform:centos', 'platform:centos-9', 'platform:redhat', 'platform:rpm', 'compile'],
     ['gcc', 'libvirt-devel', 'libvirt-libs', 'pciutils', 'pkgconf-pkg-config', 'python3.11-devel']),
    (['platform:fedora', 'platform:redhat', 'platform:rpm', 'compile'],
     ['gcc', 'libvirt-devel', 'libvirt-libs', 'pciutils', 'pkgconf-pkg-config', 'python3-devel']),
    (['platform:debian', 'platform:dpkg', 'compile'],
     ['gcc', 'libvirt-dev', 'libvirt0', 'pciutils', 'pkg-config', 'python3-dev']),
    (['platform:centos', 'platform:centos-9', 'platform:rpm'], ['libvirt-libs', 'pciutils']),
    (['platform:debian', 'platform:dpkg'], ['libvirt0', 'pciutils']),
])
def test_bindep_gives_each_platform_what_building_libvirt_python_needs(profiles, expected):
    # The EE's Python is 3.11 on CentOS Stream 9: its headers are python3.11-devel, not python3-devel (3.9).
    # Without the compile profile (what the final image gets) the libvirt client library must remain:
    # libvirt-python links to libvirt.so.0, and `import libvirt` fails without it.
    rules = Depends((ROOT / 'bindep.txt').read_text(encoding='utf-8')).active_rules(profiles)
    assert sorted(rule[0] for rule in rules) == expected
