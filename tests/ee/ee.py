# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make ee`: build the collection's execution environment with ansible-builder and podman, then check it
from the inside: `import libvirt`, `ansible-doc` of every module, and an `ansible-runner run` of the
collection's inventory playbook against a fixture sysfs tree.

The published definition (meta/execution-environment.yml) is built on CentOS Stream 9 from quay.io.
Where no container registry is reachable, this builds the same definition on a Debian base image
made here with debootstrap from Debian's mirror (cached as a podman image, tagged by its recipe),
with these overrides, written to .build/ee/definition/execution-environment.yml:

- images.base_image: the local Debian image; python_interpreter: Debian's /usr/bin/python3 (3.11);
- options.package_manager_path: /usr/local/bin/apt-dnf (tests/ee/apt-dnf), the `install` and
  `clean all` of dnf's command line that ansible-builder's scripts use, carried out with apt-get.
  bindep chooses the Debian package names (platform:dpkg), so the packages are the ones a Debian
  user of the collection gets; options.skip_pip_install, since Debian disables ensurepip (the base
  image has python3-pip);
- additional_build_steps.prepend_base (EL's CRB repository) left out;
- the collection itself, from its built tarball, through dependencies.galaxy: so its requirements.txt
  and bindep.txt are also read the way an EE that depends on the collection reads them.

Needs root (debootstrap, rootful podman), podman, runc and debootstrap; network to PyPI and Debian's
mirror during the build (podman build --network host; the host's pip index and apt proxy are passed on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WORK = ROOT / '.build' / 'ee'
DEFINITION = WORK / 'definition'
CONTEXT = WORK / 'context'
RUNNER = WORK / 'runner'

IMAGE = 'localhost/passthrough-libvirt-ee:test'
BASE_REPOSITORY = 'localhost/passthrough-libvirt-ee-base'
SUITE = 'bookworm'
MIRROR = os.environ.get('EE_DEBIAN_MIRROR', 'http://deb.debian.org/debian')
SECURITY_MIRROR = os.environ.get('EE_DEBIAN_SECURITY_MIRROR', 'http://deb.debian.org/debian-security')
# What ansible-builder needs in a base image: Python with pip and venv (assemble makes a venv), CA certificates.
BASE_PACKAGES = ['python3', 'python3-pip', 'python3-venv', 'ca-certificates']
PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
MODULES = ['pci_device_info', 'pci_whitelist', 'pci_attachment', 'hypervisor_pci_stats', 'pci_fleet']
PIP_SETTINGS = ['index-url', 'extra-index-url', 'trusted-host']


def say(message: str) -> None:
    print(f'ee: {message}', flush=True)


def fail(message: str) -> None:
    print(f'ee: FAILED: {message}', flush=True)
    raise SystemExit(1)


def podman_env() -> dict:
    return dict(os.environ, CONTAINERS_CONF=str(WORK / 'containers.conf'))


def run(command: list[str], *, log: Path | None = None, env: dict | None = None, check: bool = True,
        stdin=None) -> subprocess.CompletedProcess:
    """Run a command; with ``log``, its output goes there (and its tail to stdout when it fails)."""
    if log is None:
        proc = subprocess.run(command, env=env, stdin=stdin, capture_output=True, text=True, check=False)
    else:
        with log.open('a', encoding='utf-8') as out:
            out.write(f'\n$ {" ".join(command)}\n')
            out.flush()
            proc = subprocess.run(command, env=env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, text=True,
                                  check=False)
    if check and proc.returncode != 0:
        detail = proc.stdout + proc.stderr if log is None else ''.join(log.read_text(encoding='utf-8').splitlines(True)[-40:])
        fail(f'{" ".join(command[:4])} ... exited with {proc.returncode}:\n{detail}')
    return proc


def preflight() -> None:
    missing = [tool for tool in ('podman', 'runc', 'debootstrap') if shutil.which(tool) is None]
    if missing:
        fail(f'{", ".join(missing)} not found: `make system-ee` installs them (Debian/Ubuntu)')
    if os.geteuid() != 0:
        fail('run as root: debootstrap and rootful podman (sudo make ee)')


def hard_limit(kind: str) -> int:
    limit = resource.getrlimit(getattr(resource, kind))[1]
    return limit if limit != resource.RLIM_INFINITY else 1 << 20


def write_containers_conf() -> None:
    # runc, not crun (crun's setrlimit fails in this kind of VM), and limits the host allows: podman's
    # defaults (nofile 1048576) are above them, and raising them needs CAP_SYS_RESOURCE.
    nofile = min(hard_limit('RLIMIT_NOFILE'), 65536)
    nproc = min(hard_limit('RLIMIT_NPROC'), 4096)
    (WORK / 'containers.conf').write_text(
        '# Written by tests/ee/ee.py (make ee); podman reads it through CONTAINERS_CONF.\n'
        '[containers]\n'
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        '[engine]\n'
        'runtime = "runc"\n', encoding='utf-8')


def apt_proxy_config() -> str:
    """The host's apt proxy settings (Acquire::http::Proxy ...), for the image's apt."""
    if shutil.which('apt-config') is None:
        return ''
    dump = subprocess.run(['apt-config', 'dump'], capture_output=True, text=True, check=False).stdout
    return ''.join(line + '\n' for line in dump.splitlines() if '::proxy' in line.lower().split(' ')[0])


def _tag(kind: str, recipe: dict) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f'{BASE_REPOSITORY}:{SUITE}-{kind}-{digest}'


def _image_exists(tag: str) -> bool:
    return run(['podman', 'image', 'exists', tag], env=podman_env(), check=False).returncode == 0


def rootfs_image() -> str:
    """Debian minbase from the mirror with debootstrap, imported as a podman image: the slow part, made once."""
    tag = _tag('rootfs', {'suite': SUITE, 'mirror': MIRROR, 'packages': BASE_PACKAGES, 'recipe': 1})
    if _image_exists(tag):
        say(f'debootstrap image {tag}: cached')
        return tag
    started = time.monotonic()
    rootfs = WORK / 'rootfs'
    shutil.rmtree(rootfs, ignore_errors=True)
    log = WORK / 'debootstrap.log'
    log.write_text('', encoding='utf-8')
    say(f'debootstrap image {tag}: debootstrap {SUITE} from {MIRROR} (log: {log.relative_to(ROOT)})')
    run(['debootstrap', '--variant=minbase', f'--include={",".join(BASE_PACKAGES)}', SUITE, str(rootfs), MIRROR],
        log=log)
    for pattern in ('var/cache/apt/archives/*.deb', 'var/cache/apt/*.bin', 'var/lib/apt/lists/*', 'usr/share/man/*',
                    'usr/share/info/*', 'usr/share/locale/*'):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    tar = subprocess.Popen(['tar', '-C', str(rootfs), '--numeric-owner', '-c', '.'], stdout=subprocess.PIPE)
    run(['podman', 'import', '--change', f'ENV PATH={PATH}', '--change', 'ENV LANG=C.UTF-8',
         '--change', 'CMD ["/bin/bash"]', '-', tag], env=podman_env(), stdin=tar.stdout, log=log)
    tar.stdout.close()
    if tar.wait() != 0:
        fail(f'tar of {rootfs} failed')
    shutil.rmtree(rootfs)
    say(f'debootstrap image {tag}: made in {time.monotonic() - started:.0f}s')
    return tag


def host_ca_certificates() -> list[Path]:
    """The host's own CA certificates (update-ca-certificates' local ones): a TLS proxy's CA, for pip in the build."""
    return sorted(Path('/usr/local/share/ca-certificates').glob('**/*.crt'))


BASE_CONTAINERFILE = """\
# Written by tests/ee/ee.py: the Debian base image of `make ee`.
FROM {rootfs}
COPY sources.list /etc/apt/sources.list
COPY 90ee.conf /etc/apt/apt.conf.d/90ee
COPY 90ee-nodoc /etc/dpkg/dpkg.cfg.d/90ee-nodoc
COPY apt-dnf /usr/local/bin/apt-dnf
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN chmod 755 /usr/local/bin/apt-dnf && update-ca-certificates
"""


def base_image() -> str:
    """The base image of the build: the debootstrap image with apt-dnf, apt's settings and the host's CA certificates."""
    rootfs = rootfs_image()
    context = WORK / 'base'
    shutil.rmtree(context, ignore_errors=True)
    (context / 'ca-certificates').mkdir(parents=True)
    files = {
        'Containerfile': BASE_CONTAINERFILE.format(rootfs=rootfs),
        'sources.list': f'deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n'
                        f'deb {SECURITY_MIRROR} {SUITE}-security main\n',
        '90ee.conf': 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' + apt_proxy_config(),
        '90ee-nodoc': 'path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n'
                      'path-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\npath-exclude=/usr/share/locale/*\n',
        'apt-dnf': (HERE / 'apt-dnf').read_text(encoding='utf-8'),
    }
    for index, cert in enumerate(host_ca_certificates()):
        files[f'ca-certificates/host-{index}-{cert.name}'] = cert.read_text(encoding='utf-8')
    for name, text in files.items():
        (context / name).write_text(text, encoding='utf-8')
    tag = _tag('base', files)
    if _image_exists(tag):
        say(f'base image {tag}: cached')
        return tag
    log = WORK / 'base.log'
    log.write_text('', encoding='utf-8')
    run(['podman', 'build', '--network', 'none', '-t', tag, str(context)], env=podman_env(), log=log)
    say(f'base image {tag}: made ({len(host_ca_certificates())} CA certificates of the host added)')
    return tag


def _collection_files(tarball: Path) -> bytes:
    # FILES.json holds every file's checksum, MANIFEST.json the metadata: equal means the same collection.
    with tarfile.open(tarball) as tar:
        return b''.join(tar.extractfile(name).read() for name in ('MANIFEST.json', 'FILES.json'))


def collection_tarball() -> Path:
    """Build the collection; keep the previous tarball when its content is the same (podman's layer cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        run([str(BIN / 'ansible-galaxy'), 'collection', 'build', '--force', '--output-path', tmp, str(ROOT)])
        built = next(Path(tmp).glob('passthrough-libvirt-*.tar.gz'))
        kept = DEFINITION / built.name
        if kept.exists() and _collection_files(kept) == _collection_files(built):
            return kept
        for old in DEFINITION.glob('passthrough-libvirt-*.tar.gz'):
            old.unlink()
        shutil.copy(built, kept)
        return kept


def host_pip_settings() -> dict[str, str]:
    """The host's pip index settings that also work in the container (URLs, not local paths)."""
    found = {}
    listing = subprocess.run([str(BIN / 'python'), '-m', 'pip', 'config', 'list'], capture_output=True, text=True,
                             check=False).stdout
    for line in listing.splitlines():
        key, _sep, value = line.partition('=')
        name = key.rsplit('.', 1)[-1]
        if name in PIP_SETTINGS:
            found[name] = value.strip().strip("'\"")
    for name in PIP_SETTINGS:
        env = os.environ.get('PIP_' + name.upper().replace('-', '_'))
        if env:
            found[name] = env
    usable = {}
    for name, value in found.items():
        words = [word for word in value.split() if name == 'trusted-host' or word.startswith(('http://', 'https://'))]
        if words:
            usable['PIP_' + name.upper().replace('-', '_')] = ' '.join(words)
    return usable


def write_definition(base: str, tarball: Path, pip_args: dict[str, str]) -> Path:
    published = yaml.safe_load((ROOT / 'meta' / 'execution-environment.yml').read_text(encoding='utf-8'))
    definition = json.loads(json.dumps(published))
    definition['images']['base_image']['name'] = base
    dependencies = definition['dependencies']
    dependencies['python_interpreter'] = {'python_path': '/usr/bin/python3'}
    for name in (dependencies['python'], dependencies['system']):
        shutil.copy(ROOT / 'meta' / name, DEFINITION / name)
    dependencies['galaxy'] = 'requirements.yml'
    (DEFINITION / 'requirements.yml').write_text(yaml.safe_dump(
        {'collections': [{'name': f'collections/{tarball.name}', 'type': 'file'}]}), encoding='utf-8')
    definition['additional_build_files'] = [{'src': tarball.name, 'dest': 'collections'}]
    options = definition.setdefault('options', {})
    options['package_manager_path'] = '/usr/local/bin/apt-dnf'
    # ansible-builder's pip_install runs ensurepip, which Debian disables; the base image has python3-pip.
    options['skip_pip_install'] = True
    # The CRB step is EL's; Debian has libvirt-dev in main. The host's pip index reaches every stage
    # that runs pip as build arguments, not ENV, so it stays out of the image.
    steps = {}
    if pip_args:
        arg_lines = [f'ARG {name}' for name in sorted(pip_args)]
        steps = {stage: list(arg_lines) for stage in ('prepend_base', 'prepend_galaxy', 'prepend_builder',
                                                      'prepend_final')}
    definition['additional_build_steps'] = steps
    if not steps:
        del definition['additional_build_steps']
    path = DEFINITION / 'execution-environment.yml'
    path.write_text('# Written by tests/ee/ee.py: meta/execution-environment.yml on a local Debian base image.\n'
                    + yaml.safe_dump(definition, sort_keys=False), encoding='utf-8')
    return path


def build(definition: Path, pip_args: dict[str, str]) -> float:
    log = WORK / 'build.log'
    log.write_text('', encoding='utf-8')
    command = [str(BIN / 'ansible-builder'), 'build', '-f', str(definition), '-c', str(CONTEXT), '-t', IMAGE,
               '--container-runtime', 'podman', '-v', '3', '--extra-build-cli-args', '--network host']
    for name, value in sorted(pip_args.items()):
        command += ['--build-arg', f'{name}={value}']
    say(f'ansible-builder build -t {IMAGE} (log: {log.relative_to(ROOT)})')
    started = time.monotonic()
    run(command, log=log, env=dict(podman_env(), PATH=f'{BIN}:{os.environ.get("PATH", "")}'))
    return time.monotonic() - started


def in_image(*command: str, volume: str | None = None, env: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    # No network: what the image needs must be in it.
    options = ['--network', 'none'] + (['-v', volume] if volume else []) + (['-e', env] if env else [])
    return run(['podman', 'run', '--rm', *options, IMAGE, *command], env=podman_env(), check=check)


def check_import() -> None:
    proc = in_image('python3', '-c', 'import libvirt; v = libvirt.getVersion(); '
                    'print(f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}")', check=False)
    if proc.returncode != 0:
        fail(f'import libvirt in the image: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}')
    say(f'check: import libvirt: ok (libvirt client library {proc.stdout.strip()})')
    proc = in_image('python3', '-c', 'from ansible_collections.passthrough.libvirt.plugins.module_utils._libvirt import '
                    'LIBVIRT_IMPORT_MESSAGE as m; print(m or "none")', env='PYTHONPATH=/usr/share/ansible/collections')
    if proc.stdout.strip() != 'none':
        fail(f'the collection\'s module_utils cannot import libvirt in the image: {proc.stdout.strip()}')
    say('check: the installed collection imports libvirt: ok')
    # The bug this guards against: the image without the client library (libvirt0 was compile-time only).
    proc = run(['podman', 'run', '--rm', '--network', 'none', '--user', '0', '-e', 'PYTHONPATH=/usr/share/ansible/collections',
                IMAGE, 'sh', '-c', 'find /usr/lib /lib -name "libvirt.so.0*" -delete; python3 -c "from ansible_collections.'
                'passthrough.libvirt.plugins.module_utils._libvirt import LIBVIRT_IMPORT_MESSAGE as m; print(m)"'],
               env=podman_env())
    if 'libvirt.so.0: cannot open shared object file' not in proc.stdout or 'libvirt0 on Debian' not in proc.stdout:
        fail(f'without libvirt.so.0 the collection should say so: {proc.stdout.strip()}')
    say(f'check: without libvirt.so.0 the modules say: {proc.stdout.strip()}')


def check_docs() -> None:
    for module in MODULES:
        proc = in_image('ansible-doc', f'passthrough.libvirt.{module}', check=False)
        if proc.returncode != 0 or f'passthrough.libvirt.{module}' not in proc.stdout:
            fail(f'ansible-doc passthrough.libvirt.{module}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}')
        say(f'check: ansible-doc passthrough.libvirt.{module}: ok')


def check_runner() -> None:
    """ansible-runner run of the collection's inventory playbook, this 'host' being the container."""
    shutil.rmtree(RUNNER, ignore_errors=True)
    (RUNNER / 'inventory').mkdir(parents=True)
    (RUNNER / 'env').mkdir()
    (RUNNER / 'project').mkdir()
    run([sys.executable, str(ROOT / 'tests' / 'sysfs_tree.py'), 'dual-socket', str(RUNNER / 'sysfs')])
    (RUNNER / 'inventory' / 'hosts.yml').write_text(yaml.safe_dump({'compute': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'ansible_python_interpreter': '/usr/bin/python3'}}}}), encoding='utf-8')
    (RUNNER / 'env' / 'extravars').write_text(yaml.safe_dump({
        'pci_require_libvirt': False, 'pci_sysfs_root': '/runner/sysfs', 'pci_report_dir': '/runner/pci-report',
        'pci_config_path': '/runner/state.json'}), encoding='utf-8')
    # The image runs as its own user (options.user, 1000 by default), as AWX runs it: it owns the directory.
    user = run(['podman', 'image', 'inspect', '--format', '{{.Config.User}}', IMAGE], env=podman_env()).stdout.strip()
    if user.isdigit():
        for path in [RUNNER, *RUNNER.rglob('*')]:
            os.chown(path, int(user), int(user), follow_symlinks=False)
    # The playbook by its name in the collection installed in the image, not a copy from this checkout.
    proc = in_image('ansible-runner', 'run', '/runner', '-p', 'passthrough.libvirt.inventory', '--ident', 'ee',
                    volume=f'{RUNNER}:/runner', check=False)
    (WORK / 'runner.log').write_text(proc.stdout + proc.stderr, encoding='utf-8')
    status = RUNNER / 'artifacts' / 'ee' / 'status'
    status = status.read_text(encoding='utf-8').strip() if status.exists() else 'no status'
    if proc.returncode != 0 or status != 'successful':
        fail(f'ansible-runner run passthrough.libvirt.inventory: exit {proc.returncode}, {status}; '
             f'output in {(WORK / "runner.log").relative_to(ROOT)}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}')
    report = json.loads((RUNNER / 'pci-report' / 'localhost.json').read_text(encoding='utf-8'))
    devices = len(report.get('pci_devices') or [])
    if not devices or report.get('allocations_known') is not False:
        fail(f'pci-report/localhost.json: {devices} devices, allocations_known {report.get("allocations_known")}')
    if not (RUNNER / 'pci-report' / 'fleet.json').exists():
        fail('pci-report/fleet.json was not written')
    # libvirt imported in the module: what is missing is the daemon, not the bindings or their library.
    warning = next((line.strip() for line in proc.stdout.splitlines() if 'allocations unknown' in line), '')
    if 'Python bindings' in warning or 'cannot connect to libvirt' not in warning:
        fail(f'pci_device_info should fail to connect, not to import libvirt: {warning or "no warning"}')
    say(f'check: ansible-runner run passthrough.libvirt.inventory: ok ({devices} devices, '
        f'allocations unknown: no libvirtd in the container)')


def image_size() -> int:
    return int(run(['podman', 'image', 'inspect', '--format', '{{.Size}}', IMAGE], env=podman_env()).stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check-only', action='store_true', help='check the image built before, without building')
    args = parser.parse_args()
    preflight()
    WORK.mkdir(parents=True, exist_ok=True)
    DEFINITION.mkdir(exist_ok=True)
    write_containers_conf()
    started = time.monotonic()
    if not args.check_only:
        base = base_image()
        tarball = collection_tarball()
        pip_args = host_pip_settings()
        if pip_args:
            say(f'pip settings passed to the build: {", ".join(sorted(pip_args))}')
        definition = write_definition(base, tarball, pip_args)
        seconds = build(definition, pip_args)
        say(f'build: {seconds:.0f}s (ansible-builder build)')
    say(f'image {IMAGE}: {image_size() / 1e6:.0f} MB')
    check_import()
    check_docs()
    check_runner()
    say(f'all checks passed ({time.monotonic() - started:.0f}s in all)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
