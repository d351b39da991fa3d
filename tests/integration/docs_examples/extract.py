# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The YAML examples of the docs and of the modules' EXAMPLES, each with how it is to be run.

In Markdown, the line right before a ```yaml block is its marker, an HTML comment (invisible once
rendered):

    <!-- example: tasks -->                    a list of tasks, run on h1 (hosts=PATTERN for others)
    <!-- example: playbook -->                 a list of plays, run as written over the test inventory
    <!-- example: vars role=pci_host -->       variables, checked against the role's argument spec
    <!-- example: vars module=pci_device_info -->  module options, run through the module (check mode)
    <!-- example: not runnable: REASON -->     not run; the reason is required

tasks and playbook take ansible-playbook options after the kind: `--check`, `-e name=value`.
A module's EXAMPLES have no marker of their own: MODULE_EXAMPLES in the test module says how each
is run. A block without a marker is reported as such, so that no example goes untested.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ('tasks', 'playbook', 'vars', 'not runnable')
_MARKER = re.compile(r'^<!--\s*example:\s*(?P<body>.*?)\s*-->$')
_FENCE = re.compile(r'^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)')
YAML_INFO = ('yaml', 'yml')


class MarkerError(ValueError):
    """A marker that cannot be read."""


@dataclass
class Marker:
    kind: str
    reason: str = ''
    hosts: str = 'h1'
    role: str | None = None
    module: str | None = None
    options: list[str] = field(default_factory=list)   # ansible-playbook options


@dataclass
class Example:
    source: str           # docs/pools.md:5 or plugins/modules/pci_fleet.py:EXAMPLES
    text: str
    marker: Marker | None
    marker_error: str | None = None

    @property
    def id(self) -> str:
        return self.source


def parse_marker(body: str) -> Marker:
    """The part of `<!-- example: ... -->` after `example:`."""
    if body.startswith('not runnable'):
        reason = body[len('not runnable'):].lstrip(' :').strip()
        if not reason:
            raise MarkerError('"not runnable" needs a reason: <!-- example: not runnable: REASON -->')
        return Marker('not runnable', reason=reason)
    try:
        words = shlex.split(body)
    except ValueError as exc:
        raise MarkerError(f'cannot split {body!r}: {exc}') from exc
    if not words or words[0] not in KINDS:
        raise MarkerError(f'unknown kind in {body!r} (known: {", ".join(KINDS)})')
    marker = Marker(words[0])
    rest = words[1:]
    while rest:
        word = rest.pop(0)
        key, _sep, value = word.partition('=')
        if key in ('hosts', 'role', 'module') and value:
            setattr(marker, key, value)
        elif word == '--check' or word == '--diff':
            marker.options.append(word)
        elif word in ('-e', '--limit') and rest:
            marker.options += [word, rest.pop(0)]
        else:
            raise MarkerError(f'cannot read {word!r} in {body!r}')
    if marker.kind == 'vars' and not (marker.role or marker.module):
        raise MarkerError('a vars example names role=NAME or module=NAME')
    if marker.kind != 'vars' and (marker.role or marker.module):
        raise MarkerError('role= and module= are for vars examples')
    return marker


def markdown_examples(path: Path, root: Path) -> list[Example]:
    """Every ```yaml block of a Markdown file, with the marker on the line before it."""
    lines = path.read_text(encoding='utf-8').split('\n')
    found = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, indent = match['fence'], len(match['indent'])
        end = index + 1
        while end < len(lines) and not re.match(rf'^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$', lines[end]):
            end += 1
        if match['info'].lower() in YAML_INFO:
            body = '\n'.join(line[indent:] for line in lines[index + 1:end]) + '\n'
            before = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), '')
            marker, error = None, None
            marked = _MARKER.match(before)
            if marked:
                try:
                    marker = parse_marker(marked['body'])
                except MarkerError as exc:
                    error = str(exc)
            found.append(Example(f'{path.relative_to(root)}:{index + 1}', body, marker, error))
        index = end + 1
    return found


def module_examples(path: Path) -> str:
    """The EXAMPLES string of a module file, read with ast (the module is not imported)."""
    for node in ast.parse(path.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == 'EXAMPLES' for t in node.targets):
            return ast.literal_eval(node.value)
    return ''
