"""Config trees: nested dataclasses read from TOML/YAML, overridden by dotted keys (the
command-line flags of cluster/configflags.py, `--model.num_layers 4`), checked by one
type check (cluster/configtypes.py) and written back as TOML.

A tree is a dataclass whose fields are sections (dataclasses, nested to any depth) or
plain values. Each component keeps its section dataclass next to its code; a command's
tree composes them (cluster/config.py). Adding a field to a section is all it takes to
get a TOML key, a `--section.field` flag, a type check and a line in `--print-config`:

- the annotation is the type: bool, int, float (finite), str, Path, `X | None`
  (default None: unset), Literal[...], tuple[X, ...] / list[X], or a nested section;
- the string literal under the field is its help text and TOML comment;
- `field(metadata={"choices": (...)})` limits the value to a set.

A section field whose class is also a top-level section (`rl.model: ModelConfig`) is
*linked*: it is no key of its own and receives the top-level section, so one run has one
model definition. Keys a command sets itself are `derived`: users get told who sets them.
Every error is a ValueError naming the key, the value and the fix.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import json
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.configtypes import check_value, is_optional, toml_value


@dataclass(frozen=True)
class Key:
    path: str
    """Dotted name, e.g. "model.num_layers"."""
    kind: Any
    """The resolved annotation."""
    default: Any
    """Its value in the command's default config (after __post_init__ resolved it)."""
    doc: str
    choices: tuple | None = None
    declared: Any = None
    """The field's own default (None = unset), as `--help` shows it."""


@dataclass(frozen=True)
class Tree:
    """One command's tree: the root dataclass, keys the command sets itself, short flags."""

    command: str
    root: type
    derived: dict[str, str] = field(default_factory=dict)
    """Dotted key -> what sets it (users may not set these)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Short flag -> dotted key, e.g. "--steps" -> "train.steps"."""
    positionals: dict[str, str] = field(default_factory=dict)
    """Dotted key -> metavar of the positional argument that also sets it, in order
    (`hsp export RUN_DIR`); a tuple key takes any number of them (`hsp prepare INPUT...`)."""

    @functools.cached_property
    def keys(self) -> dict[str, Key]:
        return {k.path: k for k in _walk(self.root, self.root(), "", _top_sections(self.root)) if k.path not in self.derived}

    @functools.cached_property
    def own_defaults(self) -> dict[str, object]:
        """Keys this tree defaults differently from their section class (a root field's
        default_factory, e.g. `MetricsConfig(port=0)`); build() puts them under the user's values."""
        root, top = self.root(), _top_sections(self.root)
        out = {}
        for name, kind in typing.get_type_hints(self.root).items():
            if is_section(kind):
                mine = {k.path: k.default for k in _walk(kind, getattr(root, name), name + ".", top)}
                plain = {k.path: k.default for k in _walk(kind, kind(), name + ".", top)}
                out.update({path: value for path, value in mine.items() if plain[path] != value})
        return out

    @functools.cached_property
    def sections(self) -> set[str]:
        return _prefixes([*self.keys, *self.derived])

    @functools.cached_property
    def links(self) -> dict[str, str]:
        """Dotted path of each linked section -> the top-level section it receives."""
        return dict(_linked(self.root, "", _top_sections(self.root)))


def _prefixes(paths) -> set[str]:
    return {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 1)}


def is_section(kind) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _top_sections(root: type) -> dict[type, str]:
    return {kind: name for name, kind in typing.get_type_hints(root).items() if is_section(kind)}


def _linked(cls: type, prefix: str, top: dict[type, str]):
    for name, kind in typing.get_type_hints(cls).items():
        if is_section(kind) and prefix and kind in top:
            yield prefix + name, top[kind]
        elif is_section(kind):
            yield from _linked(kind, prefix + name + ".", top)


def _walk(cls: type, instance, prefix: str, top: dict[type, str]):
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        kind, path, value = hints[f.name], prefix + f.name, getattr(instance, f.name)
        if is_section(kind):
            if prefix and kind in top:
                continue  # linked: filled from the top-level section
            yield from _walk(kind, value, path + ".", top)
            continue
        if is_optional(kind) and f.default is not None:
            raise TypeError(f"{cls.__name__}.{f.name}: an optional field must default to None (unset)")
        declared = value if f.default is dataclasses.MISSING else f.default
        yield Key(path, kind, value, docs.get(f.name, ""), f.metadata.get("choices"), declared)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field. Python keeps no runtime record of them, so they
    are read from the class source (as tyro and simple-parsing do); types never are."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError):
            continue
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


# ---- building a tree -----------------------------------------------------------------


def build(tree: Tree, data: dict, overrides: dict[str, object] | None = None):
    """The root dataclass from nested `data` ({section: {key: value}}, as read from a
    file) with dotted `overrides` ({"train.steps": 5}) on top."""
    merged = _nested(tree, data)
    for dotted, value in tree.own_defaults.items():
        _table(merged, dotted).setdefault(dotted.rsplit(".", 1)[-1], value)
    for dotted, value in (overrides or {}).items():
        _table(merged, dotted)[dotted.rsplit(".", 1)[-1]] = value
    _check_keys(tree, merged, "")
    return _construct(tree, merged)


def _table(merged: dict, dotted: str) -> dict:
    """The nested table that holds `dotted`'s last part (created if missing)."""
    node = merged
    for name in dotted.split(".")[:-1]:
        node = node.setdefault(name, {})
    return node


def _nested(tree: Tree, data: dict, prefix: str = "") -> dict:
    out = {}
    for name, value in data.items():
        path = prefix + str(name)
        if path in tree.sections:
            if not isinstance(value, dict):
                raise ValueError(f"config section {path!r} must be a table of keys, got {value!r}")
            out[name] = _nested(tree, value, path + ".")
        else:
            out[name] = value
    return out


def _check_keys(tree: Tree, values: dict, prefix: str) -> None:
    for name, value in values.items():
        path = prefix + name
        if path in tree.derived:
            raise ValueError(f"config key {path} is set by hsp {tree.command} ({tree.derived[path]}); remove it")
        if path in tree.links:
            raise ValueError(f"config key {path} is the [{tree.links[path]}] section in hsp {tree.command}; set it there")
        if path in tree.sections:
            _check_keys(tree, value, path + ".")
        elif path in tree.keys:
            key = tree.keys[path]
            values[name] = check_value(path, value, key.kind, key.choices)
        else:
            raise _unknown(tree, path, value)


def _unknown(tree: Tree, path: str, value) -> ValueError:
    section, _, leaf = path.rpartition(".")
    siblings = [p.rsplit(".", 1)[-1] for p in (*tree.keys, *tree.sections) if p.rpartition(".")[0] == section]
    close = [f"{section}.{k}" if section else k for k in difflib.get_close_matches(leaf, siblings, n=2, cutoff=0.6)]
    close += [p for p in tree.keys if p.rsplit(".", 1)[-1] == leaf and p not in close]  # moved to another section
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    if not section:
        tops = sorted({p.split(".")[0] for p in tree.sections})
        return ValueError(f"unknown config section {leaf!r}{hint}; valid sections: {', '.join(tops)}")
    return ValueError(
        f"unknown config key {path} = {value!r}{hint}; valid keys in [{section}]: {', '.join(sorted(siblings, key=siblings.index))}"
    )


def _construct(tree: Tree, merged: dict):
    top = _top_sections(tree.root)
    hints = typing.get_type_hints(tree.root)
    built: dict[type, object] = {}
    kwargs = {}
    # a section that receives linked sections is built after the sections it receives
    for name in sorted(hints, key=lambda n: _links(hints[n], top)):
        if is_section(hints[name]):
            kwargs[name] = built[hints[name]] = _section(hints[name], merged.get(name, {}), name, built, top)
        elif name in merged:
            kwargs[name] = merged[name]
    return tree.root(**kwargs)


def _section(cls: type, values: dict, path: str, built: dict, top: dict[type, str]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if is_section(kind):
            linked = kind in top
            kwargs[f.name] = built[kind] if linked else _section(kind, values.get(f.name, {}), f"{path}.{f.name}", built, top)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    try:
        return cls(**kwargs)
    except ValueError as err:
        if f"{path}." in str(err):
            raise  # the message already names its section's keys
        raise ValueError(f"[{path}] {err}") from None


def _links(kind, top: dict[type, str]) -> bool:
    if not is_section(kind):
        return False
    hints = typing.get_type_hints(kind)
    return any(h in top or _links(h, top) for h in hints.values() if is_section(h))


def to_dict(instance) -> dict:
    """Plain JSON-able values (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(instance), default=str))


# ---- files -------------------------------------------------------------------------


def read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {path}: invalid TOML: {err}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path}: invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: the top level must be a mapping of sections")
        return data
    raise ValueError(f"config file {path}: unknown format {path.suffix!r}; use .toml, .yaml or .yml")


def to_toml(tree: Tree, instance, header: str = "") -> str:
    """The tree as TOML that `build(tree, tomllib.loads(text))` turns back into `instance`;
    unset optional values are comments (absent keys keep their None default)."""
    header = header or (f"`hsp {tree.command} --config FILE` reads this file; flags override it. "
                        f"Every key is also a flag (--section.key VALUE): hsp {tree.command} --help.")
    lines = [f"# {line}" for line in textwrap.wrap(header, 88)]
    tables: dict[str, list[str]] = {}
    for path, key in tree.keys.items():
        section, _, leaf = path.rpartition(".")
        value = instance
        for name in path.split("."):
            value = getattr(value, name)
        body = tables.setdefault(section, [])
        body += [f"# {line}" for line in textwrap.wrap(key.doc, 86)]
        body.append(f"# {leaf} is unset" if value is None else f"{leaf} = {toml_value(value)}")
    for section, body in sorted(tables.items(), key=lambda item: item[0] != ""):  # bare keys before tables
        lines += ["", f"[{section}]"] if section else [""]
        lines += body
    return "\n".join(lines).lstrip("\n") + "\n"
