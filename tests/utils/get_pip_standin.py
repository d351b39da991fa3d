# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test downloads get-pip.py from a host this build cannot reach; it first looks in
~/.ansible/test/cache/get_pip_<version>.py, where `make test` copies this file. It installs the
interpreter's bundled pip with ensurepip, then the pip version ansible-test asked for from the
package registry. ansible-test runs it with a scrubbed environment, so the CA bundle is passed
explicitly.
"""

from __future__ import annotations

import ensurepip
import os
import ssl
import subprocess
import sys

CA_BUNDLES = ('/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', ssl.get_default_verify_paths().cafile or '')


def main() -> None:
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
    cert = next((path for path in CA_BUNDLES if path and os.path.isfile(path)), None)
    command = [sys.executable, '-m', 'pip', 'install'] + (['--cert', cert] if cert else []) + args
    subprocess.check_call(command)


if __name__ == '__main__':
    main()
