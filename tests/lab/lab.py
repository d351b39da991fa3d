# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nested VFIO lab: two hypervisor VMs with a virtual IOMMU, driven over SSH (`make lab`).

Each hypervisor (lab1, lab2) is a Debian VM with libvirt and QEMU, an emulated Intel IOMMU, two
e1000e NICs, an SR-IOV NVMe and an SR-IOV NIC (igb), each device on its own PCIe root port, so that
real VFIO hot-plug into a nested guest can be exercised on machines that have no IOMMU themselves.
The hypervisors run on QEMU 10 from bookworm-backports (igb needs QEMU >= 8), downloaded and
extracted under .build/lab/qemu, never installed. The lab builds its image once (cached by recipe),
boots both VMs on fresh overlays, runs the scenario, prints a summary of each step with its time,
and always shuts the VMs down.

    python tests/lab/lab.py [--accel tcg|kvm] [--memory MiB] [--linux-guest] [--keep-running]
    python tests/lab/lab.py --down
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / '.build' / 'lab'
HOSTS = ('lab1', 'lab2')
SSH_TIMEOUT = 240
VF_COUNT = 2
# The hypervisors' QEMU: igb (an emulated SR-IOV NIC) needs QEMU >= 8.0, bookworm has 7.2.
QEMU_PACKAGE, QEMU_SUITE = 'qemu-system-x86', 'bookworm-backports'
# Its firmware from the same suite: with bookworm's SeaBIOS 1.16.2 and option ROMs, QEMU 10 spends about 33 s before
# the kernel starts (measured here: 36 s to the kernel's first line against 3.9 s with these).
FIRMWARE_PACKAGES = ('seabios', 'qemu-system-data')
QEMU_MIN = (8, 0)


class LabError(Exception):
    """A step failed; the message says which and why."""


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ''


@dataclass
class Lab:
    accel: str
    memory: int
    l2_type: str = 'qemu'
    zipcache: bool = True
    linux_guest: bool = False
    qemu: str = 'qemu-system-x86_64'
    firmware: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    vms: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    l2_kinds: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str):
        started = time.monotonic()
        print(f'lab: {name} ...', flush=True)
        record = Step(name, 0.0, False)
        try:
            yield record
            record.ok = True
        finally:
            record.seconds = time.monotonic() - started
            self.steps.append(record)
            mark = 'ok ' if record.ok else 'FAIL'
            print(f'lab: [{mark}] {name} ({record.seconds:.1f} s){" - " + record.detail if record.detail else ""}', flush=True)


class MemorySampler:
    """Peak memory in use on this machine (MemTotal - MemAvailable) while the lab runs."""

    def __init__(self) -> None:
        self.baseline = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _used() -> int:
        values = {}
        with open('/proc/meminfo', encoding='ascii') as handle:
            for line in handle:
                key, value = line.split(':', 1)
                values[key] = int(value.split()[0]) * 1024
        return values['MemTotal'] - values['MemAvailable']

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def gib(value: int) -> str:
    return f'{value / 2**30:.2f} GiB'


def run(command: list[str], log: Path | None = None, timeout: float = 900, env: dict | None = None, cwd: Path | None = None) -> str:
    """Run a command; its output goes to ``log`` (and is returned). A failure raises LabError with the tail."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    output = proc.stdout + proc.stderr
    if log is not None:
        with open(log, 'a', encoding='utf-8') as handle:
            handle.write(f'$ {" ".join(command)}\n{output}\n')
    if proc.returncode != 0:
        tail = '\n'.join(output.strip().splitlines()[-15:])
        raise LabError(f'{command[0]} exited with {proc.returncode}:\n{tail}')
    return proc.stdout


# -- the image ---------------------------------------------------------------------------------

def ssh_key() -> Path:
    key = WORK / 'ssh' / 'id_ed25519'
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'passthrough-lab', '-f', str(key)])
    return key


@contextlib.contextmanager
def prepare_lock():
    """One run at a time builds the image and fetches QEMU: `make test` starts `lab.py --prepare` in the background
    while the other suites run, and the lab step then waits here for it instead of building a second image."""
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / 'prepare.lock', 'w', encoding='ascii') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print('lab: waiting for the image and QEMU another run is preparing (lab.py --prepare) ...', flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def image(lab: Lab) -> Path:
    """The hypervisor image for the current recipe, built when missing."""
    key = ssh_key()
    recipe = hashlib.sha256((HERE / 'build-image.sh').read_bytes() + key.with_suffix('.pub').read_bytes()).hexdigest()[:12]
    out = WORK / 'image' / recipe
    with lab.step('hypervisor image') as step:
        if (out / 'base.qcow2').exists():
            step.detail = f'cached ({recipe})'
            return out
        for old in (WORK / 'image').glob('*') if (WORK / 'image').exists() else []:
            shutil.rmtree(old, ignore_errors=True)   # a stale recipe
        run(['bash', str(HERE / 'build-image.sh'), str(out), str(key.with_suffix('.pub'))], log=WORK / 'logs' / 'image.log')
        step.detail = f'built ({recipe}), base {(out / "base.qcow2").stat().st_size / 2**20:.0f} MiB'
    return out


# -- the hypervisors' QEMU ---------------------------------------------------------------------------

def apt_options(base: Path) -> list[str]:
    """A private apt configuration under ``base``: its own sources (bookworm-backports only), package lists,
    cache and an empty dpkg status. The system's sources, lists and installed packages are neither read nor changed."""
    mirror = os.environ.get('LAB_MIRROR', 'http://deb.debian.org/debian')
    for sub in ('lists/partial', 'cache/archives/partial', 'debs'):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / 'sources.list').write_text(
        f'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {QEMU_SUITE} main\n', encoding='utf-8')
    (base / 'status').touch()
    options = {'Dir::Etc::sourcelist': base / 'sources.list', 'Dir::Etc::sourceparts': '-', 'Dir::State::Lists': base / 'lists',
               'Dir::State::status': base / 'status', 'Dir::Cache': base / 'cache', 'APT::Sandbox::User': 'root'}
    return [arg for key, value in options.items() for arg in ('-o', f'{key}={value}')]


def qemu_version(binary: Path) -> tuple[int, ...]:
    first = run([str(binary), '--version']).splitlines()[0]       # QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-...)
    return tuple(int(part) for part in first.split('version ', 1)[1].split()[0].split('.')[:2])


def extract_qemu(apt: list[str], version: str, home: Path, log: Path) -> str:
    """apt-get download the package's version and its suite's firmware, and extract them into ``home``; older
    versions' trees are removed."""
    debs = home.parent / 'apt' / 'debs'
    for old in debs.glob('*.deb'):
        old.unlink()
    started = time.monotonic()
    run(['apt-get', *apt, '-q', 'download', f'{QEMU_PACKAGE}={version}', *FIRMWARE_PACKAGES], log=log, cwd=debs, timeout=600)
    shutil.rmtree(home, ignore_errors=True)
    size = 0
    for deb in sorted(debs.glob('*.deb')):
        size += deb.stat().st_size
        run(['dpkg-deb', '-x', str(deb), str(home)], log=log)
        deb.unlink()
    for old in home.parent.iterdir():
        if old not in (home, home.parent / 'apt'):
            shutil.rmtree(old, ignore_errors=True)
    return f'downloaded ({size / 2**20:.0f} MiB) and extracted in {time.monotonic() - started:.1f} s'


def hypervisor_qemu(lab: Lab) -> None:
    """QEMU from bookworm-backports for the hypervisor VMs: downloaded with a private apt configuration and extracted
    (dpkg-deb -x) under .build/lab/qemu/<version>, cached by version. It runs with the system's libraries and QEMU data
    (bookworm's qemu-system-x86 brings both); the system's QEMU 7.2 and libvirt stay as they are."""
    base = WORK / 'qemu'
    log = WORK / 'logs' / 'qemu-download.log'
    with lab.step(f'QEMU for the hypervisors: {QEMU_PACKAGE} from {QEMU_SUITE}, not installed') as step:
        apt = apt_options(base / 'apt')
        note = ''
        try:
            run(['apt-get', *apt, '-q', 'update'], log=log, timeout=300)
            show = run(['apt-cache', *apt, 'show', '--no-all-versions', QEMU_PACKAGE], log=log)
            version = next(line.split(':', 1)[1].strip() for line in show.splitlines() if line.startswith('Version:'))
        except (LabError, StopIteration) as exc:
            cached = sorted(base.glob('*/usr/bin/qemu-system-x86_64'))
            if not cached:
                raise LabError(f'cannot find {QEMU_PACKAGE} in {QEMU_SUITE} and none is cached: {exc}') from exc
            version, note = cached[-1].parents[2].name, ' (the mirror did not answer: the cached one)'
        home = base / version.split(':')[-1]                       # the epoch's colon left out of the directory name
        binary = home / 'usr' / 'bin' / 'qemu-system-x86_64'
        bios = home / 'usr' / 'share' / 'seabios' / 'bios-256k.bin'
        how = 'cached'
        if not binary.exists() or not bios.exists():
            how = extract_qemu(apt, version, home, log)
        found = qemu_version(binary)
        if found < QEMU_MIN:
            raise LabError(f'{binary} is QEMU {".".join(map(str, found))}; igb needs {".".join(map(str, QEMU_MIN))} or later')
        lab.qemu = str(binary)
        # Its own data directory first (option ROMs such as linuxboot_dma.bin), the system's after it.
        lab.firmware = ['-L', str(home / 'usr' / 'share' / 'qemu'), '-bios', str(bios)]
        step.detail = f'{version} {how}{note}: {binary.relative_to(REPO)}'


# -- the hypervisor VMs -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def qemu_command(name: str, index: int, img: Path, overlay: Path, port: int, lab: Lab) -> list[str]:
    if lab.accel == 'tcg':
        machine, accel = 'q35', ['-accel', 'tcg,thread=multi,tb-size=512', '-cpu', 'max']
    else:
        # With KVM, the IOMMU's interrupt remapping needs the IOAPIC in QEMU (split irqchip).
        machine, accel = 'q35,kernel-irqchip=split', ['-accel', 'kvm', '-cpu', 'host']
    # Every device under test on its own PCIe root port, so each gets its own IOMMU group in the VM.
    devices = [
        '-device', 'pcie-root-port,id=rp1,chassis=1,slot=1', '-netdev', 'user,id=t1,restrict=on', '-device', 'e1000e,netdev=t1,bus=rp1',
        '-device', 'pcie-root-port,id=rp2,chassis=2,slot=2', '-netdev', 'user,id=t2,restrict=on', '-device', 'e1000e,netdev=t2,bus=rp2',
        '-device', 'pcie-root-port,id=rp3,chassis=3,slot=3',
        '-device', f'nvme-subsys,id=s0,nqn=nqn.2026-11.passthrough-lab:{name}',
        # QEMU 7.2 and 10.0: vq_flexible >= 2*max_vfs, max_ioqpairs >= vq_flexible+2, vi_flexible >= max_vfs, msix_qsize >= vi_flexible+1
        '-device', f'nvme,serial=lab{index}nvme,subsys=s0,bus=rp3,sriov_max_vfs={VF_COUNT},sriov_vq_flexible=8,'
                   'sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8',
        # An SR-IOV NIC: igb is an 82576 (PF 8086:10c9, up to 7 VFs 8086:10ca); QEMU >= 8.0.
        '-device', 'pcie-root-port,id=rp4,chassis=4,slot=4', '-netdev', 'user,id=t4,restrict=on', '-device', 'igb,netdev=t4,bus=rp4',
    ]
    return [
        lab.qemu, *lab.firmware, '-name', name, '-machine', machine, *accel, '-smp', '2', '-m', str(lab.memory),
        '-device', 'intel-iommu,intremap=on,caching-mode=on',
        '-kernel', str(img / 'vmlinuz'), '-initrd', str(img / 'initrd.img'),
        '-append', f'root=/dev/vda rw console=ttyS0 intel_iommu=on iommu=pt systemd.hostname={name}',
        '-drive', f'file={overlay},if=virtio,format=qcow2',
        '-netdev', f'user,id=mgmt,hostfwd=tcp:127.0.0.1:{port}-:22', '-device', 'virtio-net-pci,netdev=mgmt',
        *devices,
        # -nodefaults: no VGA (its framebuffer console is slow under TCG), no CD-ROM, floppy or parallel port.
        # No audio: QEMU 10 would otherwise try the system QEMU 7.2's audio and UI modules, and warn it cannot load them.
        '-nodefaults', '-display', 'none', '-audio', 'none', '-monitor', 'none', '-serial', f'file:{WORK / "logs" / (name + "-console.log")}',
        '-pidfile', str(WORK / 'run' / f'{name}.pid'),
    ]


def boot(lab: Lab, img: Path) -> None:
    with lab.step(f'boot {" and ".join(HOSTS)} ({lab.accel}, {lab.memory} MiB each)') as step:
        (WORK / 'run').mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(HOSTS, start=1):
            overlay = WORK / 'run' / f'{name}.qcow2'
            overlay.unlink(missing_ok=True)
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', str(img / 'base.qcow2'), str(overlay)])
            lab.ports[name] = free_port()
            log = open(WORK / 'logs' / f'{name}-qemu.log', 'w', encoding='utf-8')  # pylint: disable=consider-using-with
            lab.vms[name] = subprocess.Popen(qemu_command(name, index, img, overlay, lab.ports[name], lab),  # pylint: disable=consider-using-with
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        step.detail = ', '.join(f'{name} ssh 127.0.0.1:{port}' for name, port in lab.ports.items())


def ssh_base(lab: Lab, name: str) -> list[str]:
    return ['ssh', '-i', str(ssh_key()), '-p', str(lab.ports[name]), '-o', 'StrictHostKeyChecking=no',
            '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5',
            '-o', 'BatchMode=yes', 'root@127.0.0.1']


def ssh(lab: Lab, name: str, command: str, timeout: float = 300, stdin: str | None = None) -> str:
    proc = subprocess.run(ssh_base(lab, name) + [command], input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    with open(WORK / 'logs' / f'{name}-ssh.log', 'a', encoding='utf-8') as handle:
        handle.write(f'$ {command}\n{proc.stdout}{proc.stderr}\n')
    if proc.returncode != 0:
        raise LabError(f'{name}: `{command[:80]}` exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}')
    return proc.stdout


def wait_for_ssh(lab: Lab) -> None:
    with lab.step('wait for SSH') as step:
        deadline = time.monotonic() + SSH_TIMEOUT
        ready: dict[str, float] = {}
        started = time.monotonic()
        while len(ready) < len(HOSTS):
            for name in HOSTS:
                if name in ready:
                    continue
                if lab.vms[name].poll() is not None:
                    log = WORK / 'logs' / f'{name}-qemu.log'
                    said = ' '.join(log.read_text(encoding='utf-8', errors='replace').split()[-40:])
                    raise LabError(f'{name}: QEMU exited with {lab.vms[name].returncode}: {said} (log: {log})')
                probe = subprocess.run(ssh_base(lab, name) + ['true'], capture_output=True, timeout=30, check=False)
                if probe.returncode == 0:
                    ready[name] = time.monotonic() - started
            if len(ready) < len(HOSTS):
                if time.monotonic() > deadline:
                    missing = [name for name in HOSTS if name not in ready]
                    raise LabError(f'no SSH from {", ".join(missing)} after {SSH_TIMEOUT} s; console logs in {WORK / "logs"}')
                time.sleep(2)
        step.detail = ', '.join(f'{name} after {seconds:.0f} s' for name, seconds in ready.items())


# Installs tests/lab/zipcache.py (read from stdin) in a hypervisor, with a .pth line in site-packages that installs it
# at every interpreter start. One python3 process: each costs about a second under TCG.
ZIPCACHE_INSTALL = (
    "python3 -c \"import os, site, sys; d = site.getsitepackages()[0]; os.makedirs(d, exist_ok=True); "
    "open(os.path.join(d, 'lab_zipcache.py'), 'w').write(sys.stdin.read()); "
    "open(os.path.join(d, 'lab-zipcache.pth'), 'w').write('import lab_zipcache; lab_zipcache.install()\\\\n')\"")


def prepare_hosts(lab: Lab) -> None:
    """Wait for libvirtd in each host, install the bytecode cache for AnsiballZ (unless --no-zipcache) and define the
    two test domains."""
    title = 'define the test domains' + (', AnsiballZ bytecode cache installed (tests/lab/zipcache.py)' if lab.zipcache else '')
    with lab.step(title) as step:
        kinds = {}
        for name in HOSTS:
            if lab.zipcache:
                ssh(lab, name, ZIPCACHE_INSTALL, stdin=(HERE / 'zipcache.py').read_text(encoding='utf-8'))
            ssh(lab, name, 'for i in $(seq 1 60); do virsh -q uri >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1', timeout=90)
            kind = lab.l2_type
            if kind == 'kvm' and ssh(lab, name, 'test -c /dev/kvm && echo kvm || echo qemu').strip() != 'kvm':
                kind = 'qemu'
            kinds[name] = lab.l2_kinds[name] = kind
            for domain in ('pcitest-native', 'pcitest-acpi'):
                xml = (HERE / 'domains' / f'{domain}.xml').read_text(encoding='utf-8').replace('@TYPE@', kind)
                ssh(lab, name, f'cat >/tmp/{domain}.xml && virsh -q define /tmp/{domain}.xml >/dev/null', stdin=xml)
        step.detail = ', '.join(f'{name}: pcitest-native + pcitest-acpi ({kind})' for name, kind in kinds.items())


def write_inventory(lab: Lab, inventory: Path | None = None) -> Path:
    hosts = '\n'.join(f'    {name}:\n      ansible_port: {port}' for name, port in lab.ports.items())
    inventory = inventory or WORK / 'inventory.yml'
    inventory.write_text(f"""---
# Written by tests/lab/lab.py for the running lab; the ports change with every run.
compute:
  hosts:
{hosts}
  vars:
    ansible_host: 127.0.0.1
    ansible_user: root
    ansible_ssh_private_key_file: {ssh_key()}
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
    ansible_python_interpreter: /usr/bin/python3
""", encoding='utf-8')
    return inventory


# -- the scenario ---------------------------------------------------------------------------------

def playbook(lab: Lab, inventory: Path, name: str, *options: str, **extra: str) -> str:
    """Run a lab playbook (tests/lab/playbooks/<name>) or, given ``passthrough.libvirt.<name>``, one of
    the collection's own playbooks as an operator does; the output is returned and logged."""
    # Pipelining: one SSH round trip per task instead of four (temp dir, copy, chmod, run); under TCG each costs
    # a process start in the VM. Measured here: 6 tasks on both hosts 38 s against 48 s without.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / '.build' / 'collections'),
               ANSIBLE_HOST_KEY_CHECKING='False', ANSIBLE_NOCOWS='1', ANSIBLE_FORKS='2', ANSIBLE_PIPELINING='True')
    target = name if name.startswith('passthrough.libvirt.') else str(HERE / 'playbooks' / name)
    command = [str(Path(sys.executable).with_name('ansible-playbook')), '-i', str(inventory), *options, target]
    for key, value in extra.items():
        command += ['-e', f'{key}={value}']
    del lab
    return run(command, log=WORK / 'logs' / 'ansible.log', env=env)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of an ansible-playbook run: {host: {'ok': 7, 'changed': 2, ...}}."""
    found: dict[str, dict[str, int]] = {}
    for line in output.split('PLAY RECAP', 1)[-1].splitlines():
        host, sep, counters = line.partition(' : ')
        if sep:
            found[host.strip()] = {key: int(value) for key, value in (pair.split('=') for pair in counters.split())}
    return found


def describe(out: Path, phase: str) -> str:
    parts = []
    for name in HOSTS:
        found = json.loads((out / f'{name}-{phase}.json').read_text(encoding='utf-8'))
        devices = ', '.join(f'{d["address"][5:]} {d["dev_type"][5:]} g{d["iommu_group"]}'
                            + (f' {d["driver"]} {d["extra_info"]["netdevs"][0]} ({d["extra_info"]["sriov_totalvfs"]} VFs possible)'
                               if d['product_id'] == '10c9' else '') for d in found['devices'])
        parts.append(f'{name}: {devices}')
    return '; '.join(parts)


def discover(lab: Lab, inventory: Path, phase: str, title: str) -> None:
    out = WORK / 'out'
    out.mkdir(parents=True, exist_ok=True)
    with lab.step(title) as step:
        playbook(lab, inventory, 'discover.yml', lab_phase=phase, lab_out=str(out))
        step.detail = describe(out, phase)


PREPARE_VFS = """set -e
# (true: the loop's status is its last test's, a failure under set -e when the NVMe is not the last device)
pf=$(for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1b36 ] && [ -e $d/sriov_totalvfs ] && echo ${d##*/}; done; true)
[ -n "$pf" ] || { echo 'no SR-IOV NVMe PF' >&2; exit 1; }
# VFs meant for guests: no host driver probes them when they appear.
echo 0 > /sys/bus/pci/devices/$pf/sriov_drivers_autoprobe
echo 0 > /sys/bus/pci/devices/$pf/sriov_numvfs
echo $pf
"""

ONLINE_VFS = """set -e
pf=$1
ctrl=$(ls /sys/bus/pci/devices/$pf/nvme | head -n1)
online=0
# QEMU's VFs start Offline: give each VF controller its queues and interrupts, then bring it online.
for c in $(seq 1 $(cat /sys/bus/pci/devices/$pf/sriov_numvfs)); do
  nvme virt-mgmt /dev/$ctrl -c $c -r 1 -a 8 -n 1 >/dev/null &&
  nvme virt-mgmt /dev/$ctrl -c $c -r 0 -a 8 -n 2 >/dev/null &&
  nvme virt-mgmt /dev/$ctrl -c $c -r 0 -a 9 -n 0 >/dev/null && online=$((online+1))
done
echo "$(cat /sys/bus/pci/devices/$pf/sriov_numvfs) $online"
"""


def whitelist(lab: Lab, inventory: Path) -> dict[str, str]:
    """pci_whitelist on the real kernels: check, run, again, the management NIC refused; it creates the VFs."""
    out = WORK / 'out'
    pfs = {}
    with lab.step('pci_whitelist: check, run, again; management NIC refused, taken with force (check mode)') as step:
        for name in HOSTS:
            pfs[name] = ssh(lab, name, PREPARE_VFS).strip()
        playbook(lab, inventory, 'whitelist.yml', lab_phase='present', lab_out=str(out))
        details = []
        for name in HOSTS:
            found = json.loads((out / f'{name}-whitelist-present.json').read_text(encoding='utf-8'))
            details.append(f'{name}: check changed={found["checked"]["changed"]}, run bound {found["applied"]["bound"]} '
                           f'+ {found["applied"]["sriov"][0]["numvfs"]} VFs, again changed={found["again"]["changed"]}, '
                           f'{found["mgmt"][5:]} refused ({"default route" if "default route" in found["refused"] else found["refused"]}), '
                           f'taken with force in check mode: {found["forced"].get("bound")}')
        step.detail = '; '.join(details)
    with lab.step('bring the VFs online (nvme virt-mgmt)') as step:
        step.detail = '; '.join(
            '{}: {} VFs, {} online'.format(name, *ssh(lab, name, f'bash -s {pfs[name]}', stdin=ONLINE_VFS).split()) for name in HOSTS)
    return pfs


def whitelist_absent(lab: Lab, inventory: Path) -> None:
    out = WORK / 'out'
    with lab.step('pci_whitelist absent: the NIC back to e1000e') as step:
        playbook(lab, inventory, 'whitelist.yml', lab_phase='absent', lab_out=str(out))
        step.detail = '; '.join(
            f'{name}: restored {json.loads((out / f"{name}-whitelist-absent.json").read_text(encoding="utf-8"))["removed"]["restored"]}'
            for name in HOSTS)


def fleet(lab: Lab, inventory: Path) -> None:
    """hypervisor_pci_stats on both hypervisors and pci_fleet on the controller, before and after a config-mode attach."""
    out = WORK / 'out'
    with lab.step('fleet report over lab1 and lab2, before and after a config-mode attach on lab1') as step:
        playbook(lab, inventory, 'fleet.yml', lab_out=str(out))
        parts = []
        for phase in ('before', 'after'):
            found = json.loads((out / f'fleet-{phase}.json').read_text(encoding='utf-8'))
            hosts = ', '.join(f'{host["name"]} {host["totals"]["count"]} free/{host["totals"]["total"]}' for host in found['fleet']['hosts'])
            parts.append(f'{phase}: {hosts}, nic:2 fits {[c["host"] for c in found["candidates"]]}')
        step.detail = '; '.join(parts) + f'; pages in {out}/fleet-before, fleet-after'


def attachments(lab: Lab, inventory: Path) -> None:
    """pci_attachment in lab1: live hot-plug by alias, confirmed unplug, a stuck unplug, persistence over a restart."""
    out = WORK / 'out'
    with lab.step('lab1: pci_attachment live attach/detach, stuck ACPI unplug, persistent over a restart') as step:
        try:
            playbook(lab, inventory, 'attach.yml', lab_out=str(out))
        finally:
            path = out / 'attach.json'
            if path.exists():
                found = json.loads(path.read_text(encoding='utf-8'))
                native = found['native_attach'].get('pci_devices', [])
                step.detail = (
                    'native: ' + ', '.join(f'{d["alias"]} {d["address"][5:]} at guest {d["inner_address"]}' for d in native)
                    + f'; detach confirmed by {sorted({d.get("confirmed_by") for d in found["native_detach"].get("detached", [])})}'
                    + f'; acpi: {found["acpi_detach"].get("msg", "?")[:90]}'
                    + f', still reported: {bool(found["acpi_query"].get("pci_devices"))}'
                    + f'; after restart: {[d["alias"] for d in found["after_restart"].get("pci_devices", [])]}')


def vf_settings(state: dict, only: set[str] | None = None) -> str:
    """The VFs as vf-state.py read them from the PF: '10.0 02:00:00:5e:00:01 vlan 200 trust off spoofchk off, ...'."""
    return ', '.join(f'{vf["address"][8:]} {vf["mac"]} vlan {vf["vlan"]} trust {"on" if vf["trust"] else "off"} '
                     f'spoofchk {"on" if vf["spoofchk"] else "off"}'
                     for vf in state.get('vfs', []) if only is None or vf['address'] in only)


def sriov_nic(lab: Lab, inventory: Path) -> None:
    """The igb PF in lab1: pci_whitelist makes and binds 2 VFs; pci_attachment gives them to pcitest-native as network
    interfaces (MAC, VLAN, trust), over a restart, and takes them back; the VFs read from the PF at each point."""
    out = WORK / 'out'
    name = HOSTS[0]

    def phase(lab_phase: str) -> dict:
        playbook(lab, inventory, 'sriov-nic.yml', lab_phase=lab_phase, lab_out=str(out))
        return json.loads((out / f'sriov-nic-{lab_phase}.json').read_text(encoding='utf-8'))

    def confirmed(result: dict) -> str:
        return ', '.join(sorted({entry.get('confirmed_by') or '?' for entry in result.get('detached', [])}))

    with lab.step(f'{name}: igb PF: pci_whitelist makes 2 VFs (physical_network: physnet1), the PF stays on igb') as step:
        found = phase('whitelist')
        before = found['before']
        step.detail = (f'PF {found["pf"][5:]} {found["netdev"]} on {found["pf_driver"]} ({found["totalvfs"]} VFs possible); '
                       f'VFs {", ".join(vf["address"][5:] for vf in found["vfs"])} on '
                       f'{"/".join(sorted({vf["driver"] for vf in found["vfs"]}))}, '
                       f'{"/".join(sorted({vf["status"] for vf in found["vfs"]}))}, '
                       f'physical_network {"/".join(sorted({vf["tags"].get("physical_network", "-") for vf in found["vfs"]}))}; '
                       f'before: {vf_settings(before)}')

    with lab.step(f'{name}: pci_attachment vfnic:2 as interfaces, live + persistent, into pcitest-native; restart') as step:
        found = phase('attach')
        held = {entry['address']: entry for entry in found['attached']['pci_devices']}
        restarted_xml = {interface['address']: interface['mac'] for interface in found['restarted_state']['interfaces']}
        step.detail = (', '.join(f'{address[5:]} at guest {entry["inner_address"]}' for address, entry in held.items())
                       + f'; {found["netdev"]}: {vf_settings(found["attached_state"], set(held))}'
                       + f'; after the restart, live XML: {", ".join(f"{a[8:]} {mac}" for a, mac in restarted_xml.items())}'
                       + f', {found["netdev"]}: {vf_settings(found["restarted_state"], set(held))}')

    with lab.step(f'{name}: shut off + vfnic:0; a live round with the interface option, vfnic:0 live') as step:
        found = phase('detach')
        live = {entry['address'] for entry in found['live_attached']['attached']}

        def as_before(state: dict) -> str:
            return 'as before' if [vf['settings'] for vf in state['vfs']] == [vf['settings'] for vf in before['vfs']] else 'NOT as before'

        step.detail = (f'out of the definition ({confirmed(found["config_detached"])}): '
                       f'{as_before(found["config_detached_state"])}, {vf_settings(found["config_detached_state"])}'
                       f'; live with the option: {vf_settings(found["live_attached_state"], live)}'
                       f'; detached live ({confirmed(found["live_detached"])}): '
                       f'{as_before(found["live_detached_state"])}, {vf_settings(found["live_detached_state"])}')

    with lab.step(f'{name}: pci_whitelist absent: no VFs, nothing whitelisted') as step:
        found = phase('absent')
        step.detail = (f'PF {found["netdev"]} on {found["pf_driver"]}, '
                       + ', '.join(f'{change["pf"][5:]} {change["previous"]} -> {change["numvfs"]} VFs' for change in found['removed']['sriov']))


def mdev_summary(out: Path) -> str:
    """What mdev.yml left in <out>/mdev-<host>.json, a line per host."""
    def pool(found: dict, key: str) -> str:
        pools = [p for p in found[key].get('hypervisor', {}).get('pci_stats', []) if p['dev_type'] == 'type-MDEV']
        return ', '.join(f'{p["mdev_type"]} on {p["parent_addr"]} {p["count"]} free/{p["total"]}' for p in pools) or '-'

    parts = []
    for name in HOSTS:
        path = out / f'mdev-{name}.json'
        if not path.exists():
            continue
        found = json.loads(path.read_text(encoding='utf-8'))
        types = ', '.join(f'{t["type_id"]} ({t["name"]}, {t["available_instances"]} free)'
                          for parent in found['discovered']['mdev_parents'] for t in parent['types'])
        held = ', '.join(f'{d["mdev_uuid"][:8]} at guest {d["inner_address"]}' for d in found['attached'].get('pci_devices', []))
        confirmed = sorted({d.get('confirmed_by') or '?' for d in found['detached'].get('detached', [])})
        parts.append(f'{name}: {found["loaded"][-1] if found["loaded"] else "mtty not loaded"}; types {types}; '
                     f'pool before: {pool(found, "before")}; attached {held}; during: {pool(found, "during")}; '
                     f'again changed={found["again"].get("changed")}; detached ({", ".join(confirmed)}), '
                     f'mdevs left {len(found["after_sysfs"] or [])}; after: {pool(found, "after")}')
    return '; '.join(parts)


def mdevs(lab: Lab, inventory: Path, host: str) -> None:
    """Mediated devices in one hypervisor with the kernel's mtty sample driver (built into the image): discovery,
    whitelist and alias, the type-MDEV pool, two mdevs live into pcitest-native and out again. One host is enough
    (both printed the same while it ran on both)."""
    out = WORK / 'out'
    with lab.step(f'{host}: mdevs (mtty): discover, whitelist mtty-2, pool; serial:2 live into pcitest-native, detach') as step:
        try:
            playbook(lab, inventory, 'mdev.yml', '--limit', host, lab_out=str(out))
        finally:
            step.detail = mdev_summary(out)


def drain(lab: Lab, inventory: Path, host: str) -> None:
    """Drains in one hypervisor: four devices out of one running domain, and one device out of each of four running
    domains, each against the same devices drained one at a time."""
    drain_step(lab, inventory, host, 'drain', '1 domain and from 4 domains')


def drain_step(lab: Lab, inventory: Path, host: str, name: str, what: str) -> None:
    """Runs the drain scenario tests/lab/playbooks/<name>.yml in one host; the step's line is drain_summary of the
    <name>.json it writes, also when it failed."""
    out = WORK / 'out'
    with lab.step(f'{host}: drain 4 live devices from {what} (parallel) against one at a time; restore') as step:
        try:
            playbook(lab, inventory, f'{name}.yml', '--limit', host, lab_out=str(out))
        finally:
            path = out / f'{name}.json'
            if path.exists():
                step.detail = drain_summary(json.loads(path.read_text(encoding='utf-8')))


def drain_summary(found: dict) -> str:
    """The drain step's line: each time measured, and the goal (a parallel drain within 1.5 times the mean single
    unplug)."""
    def times(key: str) -> list[float]:
        return [entry['seconds'] for entry in found.get(key, []) if entry.get('seconds') is not None]

    singles = times('singles')
    # drain.yml drains each of its four domains alone (`singles`); drain-linux.yml also one domain's devices one at a
    # time (`singles`) and each of four domains alone (`domain_singles`).
    domain_singles = times('domain_singles') or singles
    parts = []
    for key, what, alone in (('parallel', '4 devices of 1 domain', singles), ('domains', '4 domains, 1 device each', domain_singles)):
        seconds = found.get(key, {}).get('seconds')
        if seconds is None:
            continue
        confirmed = sorted({d.get('confirmed_by') or '?' for entry in found[key].get('drained', []) for d in entry['devices']})
        line = f'{what}: {seconds:.2f} s ({", ".join(confirmed)})'
        if alone:
            ratio = seconds / (sum(alone) / len(alone))
            line += f', {ratio:.2f}x one (goal <= 1.5: {"met" if ratio <= 1.5 else "NOT met"})'
        parts.append(line)
    for what, alone in (('one at a time', singles), ('each domain alone', domain_singles if domain_singles is not singles else [])):
        if alone:
            parts.append(f'{what}: {", ".join(f"{s:.2f}" for s in alone)} s, {sum(alone):.2f} s in all, '
                         f'one {sum(alone) / len(alone):.2f} s on average')
    restored = found.get('after_restore', {}).get('pci_devices', [])
    if restored:
        parts.append('restored live at guest ' + ', '.join(str(d.get('inner_address')) for d in restored))
    if found.get('powered_off'):
        parts.append(f'in the guest, pciehp powered off {found["powered_off"]} slot(s) for the drain of 4 devices')
    others = [d for record in found.get('forced', {}).get('drained', []) for d in record['devices'] if d.get('foreign')]
    if others:
        back = {d.get('address') for record in found.get('forced_back', {}).get('restored', []) for d in record.get('attached', [])}
        said = [f'{d["address"]} (another tool\'s) out live ({d.get("confirmed_by") or "not confirmed"}), '
                f'{"given back by address" if d["address"] in back else "not given back"}' for d in others]
        parts.append('with force: ' + ', '.join(said))
    return '; '.join(parts)


LINUX_GUESTS = ('pcitest-linux', 'pcitest-linux-2', 'pcitest-linux-3', 'pcitest-linux-4')
LINUX_READY_TIMEOUT = 1500
# Defines three copies of pcitest-linux (each with its own console file), starts the four afresh together and waits
# for each one's init to print its line on its console; prints how long each took.
LINUX_START = f"""set -e
consoles=/var/log/libvirt/qemu
for name in {' '.join(LINUX_GUESTS)}; do virsh -q destroy "$name" >/dev/null 2>&1 || true; rm -f "$consoles/$name.console"; done
for name in {' '.join(LINUX_GUESTS[1:])}; do
  virsh -q undefine "$name" >/dev/null 2>&1 || true
  virsh dumpxml --inactive pcitest-linux | sed -e "s|<name>pcitest-linux</name>|<name>$name</name>|" -e '/<uuid>/d' \\
    -e "s|/pcitest-linux.console|/$name.console|" > "/tmp/$name.xml"
  virsh -q define "/tmp/$name.xml" >/dev/null
done
start=$(date +%s)
for name in {' '.join(LINUX_GUESTS)}; do virsh -q start "$name" >/dev/null; done
waiting="{' '.join(LINUX_GUESTS)}"
for i in $(seq 1 {LINUX_READY_TIMEOUT}); do
  left=""
  for name in $waiting; do
    if grep -aq 'pcitest-linux: ready' "$consoles/$name.console" 2>/dev/null; then echo "$name $(( $(date +%s) - start ))"; else left="$left $name"; fi
  done
  waiting=$left
  [ -z "$waiting" ] && exit 0
  sleep 1
done
for name in $waiting; do echo "$name printed no ready line in {LINUX_READY_TIMEOUT} s; its console: $(tail -c 400 "$consoles/$name.console")" >&2; done
exit 1
"""


def linux_drain(lab: Lab, inventory: Path, host: str) -> None:
    """Drains from nested guests that run Linux (--linux-guest): their kernel and initramfs built from the
    hypervisor's own (tests/lab/linux-guest.sh), pcitest-linux and three copies booted together, then four devices
    drained one at a time against together, from one guest and from four (tests/lab/playbooks/drain-linux.yml).
    The guests are destroyed at the end: idle, they still cost the hypervisor's emulated CPUs."""
    with lab.step(f'{host}: boot pcitest-linux and 3 copies, guests that run Linux (tests/lab/linux-guest.sh)') as step:
        built = ssh(lab, host, 'sh -s', stdin=(HERE / 'linux-guest.sh').read_text(encoding='utf-8')).strip()
        xml = (HERE / 'domains' / 'pcitest-linux.xml').read_text(encoding='utf-8').replace('@TYPE@', lab.l2_kinds.get(host, lab.l2_type))
        ssh(lab, host, 'virsh -q destroy pcitest-linux >/dev/null 2>&1 || true; virsh -q undefine pcitest-linux >/dev/null 2>&1 || true; '
                       'cat >/tmp/pcitest-linux.xml && virsh -q define /tmp/pcitest-linux.xml >/dev/null', stdin=xml)
        ready = ssh(lab, host, 'bash -s', stdin=LINUX_START, timeout=LINUX_READY_TIMEOUT + 60).split()
        step.detail = (f'kernel {built}; each init ready, in s after the start: '
                       + ', '.join(f'{name} {seconds}' for name, seconds in zip(ready[::2], ready[1::2])))
    try:
        drain_step(lab, inventory, host, 'drain-linux', '1 and from 4 Linux guests')
    finally:
        with contextlib.suppress(LabError, subprocess.TimeoutExpired):
            ssh(lab, host, '; '.join(f'virsh -q destroy {name} >/dev/null 2>&1' for name in LINUX_GUESTS) + '; true')


OPERATOR_SETUP = """set -e
for d in pcitest-native pcitest-acpi; do virsh -q destroy "$d" >/dev/null 2>&1 || true; done
virsh -q start pcitest-native >/dev/null
if [ "$1" = unload ]; then modprobe -r vfio-pci; fi
test -e /sys/module/vfio_pci && echo loaded || echo unloaded
"""
OPERATOR_REQUEST = 'nic:1,nvme-vf:1'


def operator_workflow(lab: Lab) -> None:
    """The collection's four playbooks over SSH as an operator runs them: an inventory with group_vars
    (tests/lab/operator), playbooks by their FQCN; each run checked by operator-check.yml."""
    out = WORK / 'out'
    base = WORK / 'operator'
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(HERE / 'operator', base)
    inventory = write_inventory(lab, base / 'inventory.yml')

    def check(phase: str, **extra: str) -> dict[str, dict]:
        playbook(lab, WORK / 'inventory.yml', 'operator-check.yml', lab_phase=phase, lab_out=str(out), **extra)
        return {name: json.loads((out / f'operator-{phase}-{name}.json').read_text(encoding='utf-8')) for name in HOSTS}

    def changed(output: str) -> str:
        return ', '.join(f'{host} changed={counters["changed"]}' for host, counters in sorted(recap(output).items()))

    with lab.step('operator: pcitest-native running on both hosts, vfio-pci unloaded on lab2') as step:
        states = {name: ssh(lab, name, f'bash -s {"unload" if name == "lab2" else "keep"}', stdin=OPERATOR_SETUP).strip()
                  for name in HOSTS}
        if states['lab2'] != 'unloaded':
            raise LabError(f'vfio-pci still loaded on lab2: {states}')
        step.detail = ', '.join(f'{name}: vfio-pci {state}' for name, state in states.items())

    with lab.step('operator: prepare_hosts.yml --check --diff, then for real, then again') as step:
        checked = playbook(lab, inventory, 'passthrough.libvirt.prepare_hosts', '--check', '--diff')
        check('checked')
        applied = playbook(lab, inventory, 'passthrough.libvirt.prepare_hosts')
        again = playbook(lab, inventory, 'passthrough.libvirt.prepare_hosts')
        prepared = check('prepared')
        if not all(counters['changed'] for counters in recap(checked).values()):
            raise LabError(f'prepare_hosts.yml --check predicted no change on a host: {changed(checked)}')
        if any(counters['changed'] for counters in recap(again).values()):
            raise LabError(f'prepare_hosts.yml changed something on its second run: {changed(again)}')
        if not all(counters['changed'] for counters in recap(applied).values()):
            raise LabError(f'prepare_hosts.yml changed nothing on a host: {changed(applied)}')
        step.detail = (f'check: {changed(checked)}, nothing done; run: {changed(applied)}; again: {changed(again)}; '
                       + '; '.join(f'{name}: {len(found["whitelisted"])} whitelisted on vfio-pci' for name, found in prepared.items())
                       + '; vfio-pci loaded on lab2 by the role')

    with lab.step(f'operator: inventory.yml, the 2-host report with where {OPERATOR_REQUEST} fits') as step:
        report = out / 'operator-report'
        playbook(lab, inventory, 'passthrough.libvirt.inventory', pci_report_dir=str(report), pci_request=OPERATOR_REQUEST)
        fleet_report = json.loads((report / 'fleet.json').read_text(encoding='utf-8'))
        hosts = {host['name']: host['totals'] for host in fleet_report['hosts']}
        candidates = [candidate['host'] for candidate in fleet_report.get('candidates', [])]
        if sorted(hosts) != sorted(HOSTS) or sorted(candidates) != sorted(HOSTS) or fleet_report['missing']:
            raise LabError(f'the report should hold both hosts and both as candidates: hosts {hosts}, candidates {candidates}, '
                           f'missing {fleet_report["missing"]}')
        missing_files = [name for name in ('fleet.html', 'lab1.json', 'lab2.json') if not (report / name).exists()]
        if missing_files:
            raise LabError(f'the report lacks {missing_files}')
        step.detail = (', '.join(f'{name} {totals["count"]} free/{totals["total"]}' for name, totals in sorted(hosts.items()))
                       + f'; fits {candidates} (first: {candidates[0]}); report in {report}')

    with lab.step(f'operator: attach.yml pcitest-native {OPERATOR_REQUEST} with pci_host_choice=auto; again') as step:
        output = playbook(lab, inventory, 'passthrough.libvirt.attach', pci_domain='pcitest-native',
                          pci_request=OPERATOR_REQUEST, pci_host_choice='auto')
        attached = check('attached', lab_chosen=candidates[0])
        counts = recap(output)
        if [name for name in HOSTS if counts[name]['changed']] != [candidates[0]]:
            raise LabError(f'attach.yml should change {candidates[0]} only: {changed(output)}')
        again = playbook(lab, inventory, 'passthrough.libvirt.attach', pci_domain='pcitest-native',
                         pci_request=OPERATOR_REQUEST, pci_host_choice='auto')
        if any(counters['changed'] for counters in recap(again).values()):
            raise LabError(f'attach.yml changed something on its second run: {changed(again)}')
        held = attached[candidates[0]]['held']
        step.detail = (f'{changed(output)}; on {candidates[0]}: '
                       + ', '.join(f'{d["alias"]} {d["address"][5:]} at guest {d["inner_address"]}' for d in held)
                       + f'; again (the domain keeps its host): {changed(again)}')

    with lab.step(f'operator: detach.yml pcitest-native {OPERATOR_REQUEST}; again') as step:
        output = playbook(lab, inventory, 'passthrough.libvirt.detach', pci_domain='pcitest-native', pci_request=OPERATOR_REQUEST)
        again = playbook(lab, inventory, 'passthrough.libvirt.detach', pci_domain='pcitest-native', pci_request=OPERATOR_REQUEST)
        detached = check('detached')
        counts = recap(output)
        if [name for name in HOSTS if counts[name]['changed']] != [candidates[0]]:
            raise LabError(f'detach.yml should change {candidates[0]} only: {changed(output)}')
        if any(counters['changed'] for counters in recap(again).values()):
            raise LabError(f'detach.yml changed something on its second run: {changed(again)}')
        step.detail = (f'{changed(output)}; again: {changed(again)}; '
                       + '; '.join(f'{name}: {sum(1 for s in found["status"].values() if s == "available")} available, '
                                   f'{len(found["held"])} held' for name, found in detached.items()))


# -- shutting down -----------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def shutdown(lab: Lab) -> None:
    """Stop the VMs: QEMU quits on SIGTERM. Their disks are throwaway overlays of the image, so nothing is lost
    by not powering the guests off (which took about 30 s under TCG). Never raises."""
    started = time.monotonic()
    for proc in lab.vms.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in lab.vms.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    down(quiet=True)
    left = [name for name, proc in lab.vms.items() if proc.poll() is None]
    lab.steps.append(Step('stop the VMs', time.monotonic() - started, not left, 'none left running' if not left else f'left: {left}'))


def down(quiet: bool = False) -> None:
    """Stop any lab VM recorded in the run directory (`make lab-down`)."""
    for pidfile in sorted((WORK / 'run').glob('*.pid')) if (WORK / 'run').exists() else []:
        try:
            pid = int(pidfile.read_text(encoding='ascii').strip())
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            continue
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _attempt in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            if not quiet:
                print(f'lab: stopped {pidfile.stem} (pid {pid})')
        pidfile.unlink(missing_ok=True)


def summary(lab: Lab, memory: MemorySampler, total: float) -> None:
    width = max(len(step.name) for step in lab.steps)
    print('\nlab summary')
    for step in lab.steps:
        print(f'  {"ok  " if step.ok else "FAIL"} {step.name:<{width}} {step.seconds:7.1f} s  {step.detail}')
    print(f'  total {total:.0f} s; peak memory in use on this machine {gib(memory.peak)} '
          f'(before the lab {gib(memory.baseline)}, lab added {gib(memory.peak - memory.baseline)}); logs in {WORK / "logs"}')


def interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--accel', choices=('tcg', 'kvm'), default=os.environ.get('LAB_ACCEL', 'tcg'),
                        help='accelerator for the hypervisor VMs (default tcg: the stock Debian kernel hangs under kvm-pvm)')
    parser.add_argument('--memory', type=int, default=int(os.environ.get('LAB_MEMORY', '2048')), help='MiB per hypervisor VM')
    parser.add_argument('--l2-type', choices=('qemu', 'kvm'), default=os.environ.get('LAB_L2_TYPE', 'qemu'),
                        help='domain type of the test guests inside the hypervisors (default qemu: nested KVM inside a '
                             'TCG hypervisor once panicked its kernel; kvm where the hypervisors run under real KVM)')
    parser.add_argument('--no-zipcache', action='store_true', default=os.environ.get('LAB_ZIPCACHE') == '0',
                        help='do not install the bytecode cache for AnsiballZ in the hypervisors (tests/lab/zipcache.py): '
                             'every module run then compiles all it ships, as Python does without it')
    parser.add_argument('--linux-guest', action='store_true', default=os.environ.get('LAB_LINUX_GUEST') == '1',
                        help='also drain a nested guest that runs Linux (pcitest-linux, in lab2): its boot under the '
                             'emulated hypervisor adds about 4 minutes, so make lab leaves it out by default')
    parser.add_argument('--keep-running', action='store_true', help='leave the VMs running after the scenario (stop with --down)')
    parser.add_argument('--down', action='store_true', help='stop lab VMs left running and exit')
    parser.add_argument('--prepare', action='store_true',
                        help='only build the image and fetch the hypervisors\' QEMU, when missing (make test runs it in the background)')
    args = parser.parse_args(argv)
    if args.down:
        down()
        return 0
    if args.prepare:
        lab = Lab(accel=args.accel, memory=args.memory)
        (WORK / 'logs').mkdir(parents=True, exist_ok=True)
        try:
            with prepare_lock():
                image(lab)
                hypervisor_qemu(lab)
        except (LabError, subprocess.TimeoutExpired, OSError) as exc:
            print(f'lab: prepare FAILED: {exc}', file=sys.stderr)   # the lab step tries again and fails with the reason
            return 1
        return 0
    (WORK / 'logs').mkdir(parents=True, exist_ok=True)
    for log in (WORK / 'logs').glob('*.log'):
        log.unlink()
    shutil.rmtree(WORK / 'out', ignore_errors=True)
    down(quiet=True)   # a VM left by an interrupted run

    # Ctrl-C and SIGTERM end the scenario through the same path as a failure: the VMs go down.
    signal.signal(signal.SIGTERM, interrupt)
    lab = Lab(accel=args.accel, memory=args.memory, l2_type=args.l2_type, zipcache=not args.no_zipcache,
              linux_guest=args.linux_guest)
    started = time.monotonic()
    failure = None
    with MemorySampler() as memory:
        try:
            with prepare_lock():
                img = image(lab)
                hypervisor_qemu(lab)
            boot(lab, img)
            wait_for_ssh(lab)
            prepare_hosts(lab)
            inventory = write_inventory(lab)
            discover(lab, inventory, 'devices', 'discover over SSH: e1000e NICs, NVMe PF, igb PF, IOMMU groups')
            whitelist(lab, inventory)
            discover(lab, inventory, 'vfs', 'discover the VFs over SSH')
            whitelist_absent(lab, inventory)
            fleet(lab, inventory)
            attachments(lab, inventory)
            sriov_nic(lab, inventory)
            # One after the other, not side by side with lab1's steps: run so, lab1's kernel once stalled for good
            # (RCU stalls, its timers starved) while lab2 ran four nested guests.
            mdevs(lab, inventory, HOSTS[1])
            drain(lab, inventory, HOSTS[1])
            if lab.linux_guest:
                linux_drain(lab, inventory, HOSTS[1])
            operator_workflow(lab)
        except (LabError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            failure = 'interrupted'
        finally:
            if not args.keep_running:
                shutdown(lab)
    summary(lab, memory, time.monotonic() - started)
    if failure:
        print(f'\nlab: FAILED: {failure}', file=sys.stderr)
        return 1
    if any(not step.ok for step in lab.steps):
        return 1
    print('\nlab: passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
