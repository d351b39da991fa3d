# Copyright: Contributors to the passthrough.libvirt project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write docs/modules/<module>.md and docs/modules/index.md from the modules' documentation.

The DOCUMENTATION, EXAMPLES and RETURN strings are read from each file in plugins/modules/ with `ast`,
never by importing the module, and the doc fragments they extend are merged in the way ansible-doc
merges them (plugins/doc_fragments/ for ours, ansible-core's own for ansible.builtin ones).

Run `python tests/utils/module_docs.py` after changing a module's documentation;
tests/unit/test_module_docs.py fails while a page is not current.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import sys
from collections.abc import MutableMapping, MutableSequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = 'passthrough.libvirt'
MODULES_DIR = ROOT / 'plugins' / 'modules'
FRAGMENTS_DIR = ROOT / 'plugins' / 'doc_fragments'
DOCS_DIR = ROOT / 'docs' / 'modules'
INDEX = 'index'
GENERATED = ('Generated from the module\'s documentation (`plugins/modules/{name}.py`) by '
             '`python tests/utils/module_docs.py`; do not edit it by hand.')
SHORT_SAMPLE = 80  # longer samples go below the return values table


def modules() -> list[str]:
    """The collection's modules, sorted: every plugins/modules/*.py but __init__.py."""
    return sorted(path.stem for path in MODULES_DIR.glob('*.py') if not path.stem.startswith('_'))


# Reading the documentation.

def _string_constants(path: Path, class_name: str | None = None) -> dict[str, str]:
    """The NAME = 'string' assignments at the top of a file, or at the top of one of its classes."""
    body = ast.parse(path.read_text(encoding='utf-8'), filename=str(path)).body
    if class_name is not None:
        body = next((node.body for node in body if isinstance(node, ast.ClassDef) and node.name == class_name), [])
    found = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, str):
                found[node.targets[0].id] = value
    return found


def _builtin_fragments_dir() -> Path:
    spec = importlib.util.find_spec('ansible')
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('ansible-core is not installed; ansible.builtin doc fragments cannot be read')
    return Path(list(spec.submodule_search_locations)[0]) / 'plugins' / 'doc_fragments'


def _fragment(slug: str) -> dict:
    """A doc fragment by the name a module gives it: ns.coll.name, ns.coll.name.var, name or name.var."""
    if slug.startswith(COLLECTION + '.'):
        directory, rest = FRAGMENTS_DIR, slug[len(COLLECTION) + 1:]
    elif slug.startswith('ansible.builtin.'):
        directory, rest = _builtin_fragments_dir(), slug[len('ansible.builtin.'):]
    elif slug.count('.') <= 1:
        directory, rest = _builtin_fragments_dir(), slug
    else:
        raise ValueError(f'doc fragment {slug!r} is neither ansible.builtin nor {COLLECTION}')
    # As ansible-doc: the whole name is a fragment first; else its last part names the variable.
    name, var = rest, 'DOCUMENTATION'
    if not (directory / f'{name}.py').is_file() and '.' in rest:
        name, var = rest.rsplit('.', 1)
        var = var.upper()
    path = directory / f'{name}.py'
    if not path.is_file():
        raise ValueError(f'unknown doc fragment {slug!r}')
    text = _string_constants(path, 'ModuleDocFragment').get(var)
    if text is None:
        raise ValueError(f'doc fragment {slug!r} has no {var}')
    return yaml.safe_load(text) or {}


def _merge(target: dict, source: dict) -> None:
    """ansible.utils.plugin_docs.merge_fragment: what the module says wins; lists become sorted sets."""
    for key, value in source.items():
        if key in target:
            if isinstance(target[key], MutableMapping):
                value.update(target[key])
            elif isinstance(target[key], MutableSequence):
                value = sorted(frozenset(value + target[key]))
            else:
                raise ValueError(f'cannot extend {key!r} from a doc fragment')
        target[key] = value


def _add_fragments(doc: dict) -> None:
    """ansible.utils.plugin_docs.add_fragments, for the fragments this collection can reach."""
    fragments = doc.pop('extends_documentation_fragment', [])
    if isinstance(fragments, str):
        fragments = fragments.split(',')
    for slug in fragments:
        fragment = copy.deepcopy(_fragment(slug.strip()))
        for key in ('notes', 'seealso'):
            items = fragment.pop(key, None)
            if items:
                doc.setdefault(key, []).extend(items)
        if 'options' not in fragment and 'attributes' not in fragment:
            raise ValueError(f'doc fragment {slug!r} has neither options nor attributes')
        for key in ('options', 'attributes'):
            if key in fragment:
                if key in doc:
                    _merge(doc[key], fragment.pop(key))
                else:
                    doc[key] = fragment.pop(key)
        _merge(doc, fragment)


def read_docs(name: str) -> tuple[dict, str, dict]:
    """DOCUMENTATION (with its fragments merged), EXAMPLES and RETURN of a module, without importing it."""
    strings = _string_constants(MODULES_DIR / f'{name}.py')
    doc = yaml.safe_load(strings['DOCUMENTATION'])
    _add_fragments(doc)
    returns = yaml.safe_load(strings.get('RETURN', '')) or {}
    return doc, strings.get('EXAMPLES', ''), returns


# Ansible markup to Markdown.

_MARKUP = re.compile(r'\b(?:(?P<name>RV|[CIBOVEPMU])|(?P<link>L))\(|\bHORIZONTALLINE\b')
_ESCAPED_ARGS = {'O', 'V', 'RV', 'E', 'P'}  # the semantic markup lets \) and \\ through


def _plain(text: str) -> str:
    """Text outside markup, with what Markdown would take for markup escaped."""
    text = re.sub(r'([\\`*\[\]])', r'\\\1', text)
    return text.replace('<', '&lt;')


def _code(text: str) -> str:
    longest = max((len(run) for run in re.findall(r'`+', text)), default=0)
    fence = '`' * (longest + 1)
    pad = ' ' if text.startswith('`') or text.endswith('`') else ''
    return f'{fence}{pad}{text}{pad}{fence}'


def _argument(text: str, start: int, escaped: bool) -> tuple[str, int]:
    """The argument of a markup from start to its closing parenthesis, and the index after it."""
    if not escaped:
        end = text.find(')', start)
        if end < 0:
            raise ValueError(f'unclosed markup in {text!r}')
        return text[start:end], end + 1
    out, index = [], start
    while index < len(text):
        char = text[index]
        if char == '\\' and index + 1 < len(text) and text[index + 1] in '\\)':
            out.append(text[index + 1])
            index += 2
        elif char == ')':
            return ''.join(out), index + 1
        else:
            out.append(char)
            index += 1
    raise ValueError(f'unclosed markup in {text!r}')


def _module_link(fqcn: str) -> str:
    short = fqcn[len(COLLECTION) + 1:] if fqcn.startswith(COLLECTION + '.') else None
    if short in modules():
        return f'[{fqcn}]({short}.md)'
    return _code(fqcn)


def markup(text: str) -> str:
    """Ansible's documentation markup as Markdown: C() I() B() O() V() RV() E() P() L() U() M()."""
    out, index = [], 0
    for match in _MARKUP.finditer(text):
        if match.start() < index:
            continue  # inside the argument of the markup before
        out.append(_plain(text[index:match.start()]))
        if match.group(0) == 'HORIZONTALLINE':
            out.append('<hr>')
            index = match.end()
            continue
        name = match.group('name') or 'L'
        argument, index = _argument(text, match.end(), name in _ESCAPED_ARGS)
        if name == 'C':
            out.append(_code(argument))
        elif name == 'I':
            out.append(f'*{_plain(argument)}*')
        elif name == 'B':
            out.append(f'**{_plain(argument)}**')
        elif name in ('O', 'RV'):
            # O(fqcn#type:name=value) refers to another plugin's option; the page shows name=value.
            out.append(_code(re.sub(r'^[^#=]*#[^:=]*:', '', argument)))
        elif name in ('V', 'E'):
            out.append(_code(argument))
        elif name == 'P':
            out.append(_code(argument.split('#', 1)[0]))
        elif name == 'M':
            out.append(_module_link(argument))
        elif name == 'U':
            out.append(argument)
        else:
            label, url = argument.rsplit(',', 1) if ',' in argument else ('', argument)
            out.append(f'[{_plain(label.strip())}]({url.strip()})')
    out.append(_plain(text[index:]))
    return ''.join(out)


# Markdown pieces.

def _paragraphs(value) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def _cell(text: str) -> str:
    return ' '.join(text.split('\n')).replace('|', '\\|')


def _text_cell(value) -> str:
    return '<br>'.join(_cell(markup(paragraph)) for paragraph in _paragraphs(value))


def _value(value) -> str:
    """A default, choice or sample exactly as YAML gave it: JSON, so "30" and 30 differ."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False, default=str)


def _type(spec: dict) -> str:
    kind = spec.get('type', '')
    if 'elements' in spec:
        kind += f" of {spec['elements']}"
    return kind


def _row(cells: list[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), '|' + '---|' * len(header)] + [_row(row) for row in rows]


def options_table(options: dict) -> list[str]:
    """The options table: suboptions as parent.child rows (parent[].child under a list), sorted as ansible-doc sorts."""
    return _table(['option', 'type', 'required', 'default', 'choices', 'description'], _option_rows(options))


def _option_rows(options: dict, prefix: str = '') -> list[list[str]]:
    rows = []
    for key in sorted(options):
        spec = options[key] or {}
        name = prefix + key
        label = _code(name)
        if spec.get('aliases'):
            label += '<br>aliases: ' + ', '.join(_code(alias) for alias in spec['aliases'])
        choices = spec.get('choices')
        description = _text_cell(spec.get('description'))
        if isinstance(choices, dict):
            description += ''.join(f'<br>{_code(_value(choice))}: {_text_cell(text)}' for choice, text in choices.items())
        rows.append([
            label,
            _cell(_type(spec)),
            'yes' if spec.get('required') else '',
            _cell(_code(_value(spec['default']))) if 'default' in spec else '',
            ', '.join(_cell(_code(_value(choice))) for choice in choices) if choices else '',
            description,
        ])
        if spec.get('suboptions'):
            rows += _option_rows(spec['suboptions'], name + ('[].' if spec.get('type') == 'list' else '.'))
    return rows


def _attribute_rows(attributes: dict) -> list[list[str]]:
    rows = []
    for key in sorted(attributes):
        spec = attributes[key] or {}
        text = _paragraphs(spec.get('description')) + _paragraphs(spec.get('details'))
        description = _text_cell(text)
        if spec.get('platforms'):
            platforms = spec['platforms'] if isinstance(spec['platforms'], list) else [spec['platforms']]
            description += '<br>Platforms: ' + ', '.join(_cell(_code(str(p))) for p in platforms)
        if spec.get('membership'):
            groups = spec['membership'] if isinstance(spec['membership'], list) else [spec['membership']]
            description += '<br>Action groups: ' + ', '.join(_cell(_code(str(group))) for group in groups)
        rows.append([_code(key), _cell(str(spec.get('support', ''))), description])
    return rows


def _return_rows(returns: dict, samples: list[tuple[str, object]], prefix: str = '') -> list[list[str]]:
    rows = []
    for key in sorted(returns):
        spec = returns[key] or {}
        name = prefix + key
        description = _text_cell(spec.get('description'))
        if 'sample' in spec:
            sample = _value(spec['sample'])
            if len(sample) <= SHORT_SAMPLE:
                description += f'<br>Sample: {_cell(_code(sample))}'
            else:
                samples.append((name, spec['sample']))
                description += '<br>Sample: below.'
        rows.append([_code(name), _text_cell(spec.get('returned')), _cell(_type(spec)), description])
        if spec.get('contains'):
            rows += _return_rows(spec['contains'], samples, name + ('[].' if spec.get('type') == 'list' else '.'))
    return rows


def _fenced(language: str, text: str) -> list[str]:
    longest = max((len(run) for run in re.findall(r'`{3,}', text)), default=2)
    fence = '`' * (longest + 1)
    return [fence + language, *text.split('\n'), fence]


def _seealso(entry: dict) -> str:
    if 'module' in entry:
        line = _module_link(entry['module'])
    elif 'plugin' in entry:
        line = _code(f"{entry['plugin']} ({entry.get('plugin_type', 'plugin')})")
    elif 'ref' in entry:
        line = _plain(entry.get('name', entry['ref']))
    else:
        line = f"[{_plain(entry.get('name', entry.get('link', '')))}]({entry.get('link', '')})"
    if entry.get('description'):
        line += ' - ' + ' '.join(markup(paragraph) for paragraph in _paragraphs(entry['description']))
    return line


def _finish(lines: list[str]) -> str:
    text = '\n'.join(line.rstrip() for line in lines)
    return re.sub(r'\n{3,}', '\n\n', text).strip('\n') + '\n'


def render(name: str) -> str:
    """The Markdown page of a module, or of the index when name is 'index'."""
    if name == INDEX:
        return render_index()
    doc, examples, returns = read_docs(name)
    out = [f'# {COLLECTION}.{name}', '', GENERATED.format(name=name), '',
           markup(doc.get('short_description', '')), '']
    if doc.get('version_added'):
        out += [f"Added in version {doc['version_added']} of {COLLECTION}.", '']
    if doc.get('deprecated'):
        deprecated = doc['deprecated']
        out += ['**Deprecated**: ' + ' '.join(markup(p) for p in _paragraphs(deprecated.get('why'))) + ' '
                + ' '.join(markup(p) for p in _paragraphs(deprecated.get('alternative'))), '']
    out += ['## Synopsis', '']
    for paragraph in _paragraphs(doc.get('description')):
        out += [markup(paragraph), '']
    if doc.get('requirements'):
        out += ['## Requirements', '', *(f'- {markup(item)}' for item in _paragraphs(doc['requirements'])), '']
    if doc.get('options'):
        out += ['## Options', '', *options_table(doc['options']), '']
    if doc.get('attributes'):
        out += ['## Attributes', '', *_table(['attribute', 'support', 'description'], _attribute_rows(doc['attributes'])), '']
    if doc.get('notes'):
        out += ['## Notes', '', *(f'- {markup(item)}' for item in _paragraphs(doc['notes'])), '']
    if doc.get('seealso'):
        out += ['## See also', '', *(f'- {_seealso(entry)}' for entry in doc['seealso']), '']
    if examples.strip():
        out += ['## Examples', '', *_fenced('yaml', examples.strip('\n')), '']
    if returns:
        samples: list[tuple[str, object]] = []
        out += ['## Return values', '', *_table(['key', 'returned', 'type', 'description'], _return_rows(returns, samples)), '']
        for key, sample in samples:
            dumped = json.dumps(sample, ensure_ascii=False, indent=2, default=str)
            out += [f'Sample of {_code(key)}:', '', *_fenced('json', dumped), '']
    if doc.get('author'):
        out += ['## Authors', '', *(f'- {_plain(author)}' for author in _paragraphs(doc['author'])), '']
    return _finish(out)


def render_index() -> str:
    rows = []
    for name in modules():
        doc = yaml.safe_load(_string_constants(MODULES_DIR / f'{name}.py')['DOCUMENTATION'])
        rows.append([f'[{COLLECTION}.{name}]({name}.md)', _cell(markup(doc.get('short_description', '')))])
    out = [f'# {COLLECTION} modules', '',
           'Generated from the modules\' documentation by `python tests/utils/module_docs.py`; do not edit it by hand. '
           f'`ansible-doc {COLLECTION}.<module>` shows the same.', '',
           *_table(['module', 'description'], rows), '']
    return _finish(out)


def pages() -> list[str]:
    """Every page this script writes under docs/modules/, without .md."""
    return [*modules(), INDEX]


def main() -> int:
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    for name in pages():
        (DOCS_DIR / f'{name}.md').write_text(render(name), encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
