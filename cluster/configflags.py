"""Command-line flags derived from a config tree: `--section.key VALUE` for every key, the
tree's short aliases, `--config FILE` and `--print-config`; one error line for a value
that does not fit, and for a key the command sets itself."""

from __future__ import annotations

import argparse
import typing
from typing import Literal

from cluster.configtree import Key, Tree, build, read_file, to_toml
from cluster.configtypes import Bad, checked, element, example, from_text, inner, is_optional, toml_value, type_name


def flag_dest(tree: Tree, path: str) -> str:
    """argparse dest of a key: its short flag's name if it has one (args.num_workers)."""
    short = [a for a, p in tree.aliases.items() if p == path]
    return short[0].lstrip("-").replace("-", "_") if short else path


def add_arguments(parser: argparse.ArgumentParser, tree: Tree) -> None:
    """--config, --print-config and one flag per key (plus its short aliases); a flag
    left out keeps the file's (or the default) value."""
    unknown = sorted((set(tree.aliases.values()) | set(tree.positionals)) - set(tree.keys))
    if unknown:
        raise TypeError(f"aliases or positionals of hsp {tree.command} name no key: {unknown}")
    parser.usage = f"hsp {tree.command} [--config FILE] [--print-config] [--section.key VALUE ...] (see --help)"
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML file of sections and keys (flags override it)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as TOML (feed it back with --config) and exit")
    for path, reason in tree.derived.items():
        parser.add_argument(f"--{path}", nargs="?", action=_Derived, help=argparse.SUPPRESS,
                            reason=f"{path} is set by hsp {tree.command} ({reason}); remove the flag")
    for path, metavar in tree.positionals.items():
        key = tree.keys[path]
        many = typing.get_origin(key.kind) in (tuple, list)
        parse = str if many else _flag_parser(path, key.kind, key.choices)  # items are checked when the tree is built
        parser.add_argument(_positional_dest(path), metavar=metavar, nargs="*" if many else "?", default=None, type=parse,
                            help=f"{key.doc} Or --{path}.".replace("%", "%%"))
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, key in tree.keys.items():
        section = path.rpartition(".")[0] or "run"
        if section not in groups:
            groups[section] = parser.add_argument_group(f"[{section}]")
        _add_key_flag(groups[section], tree, key)


def _add_key_flag(group: argparse._ArgumentGroup, tree: Tree, key: Key) -> None:
    names = list(dict.fromkeys([f"--{key.path}", *(a for a, p in tree.aliases.items() if p == key.path)]))
    declared = tree.own_defaults.get(key.path, key.declared)
    shown = "unset" if declared is None else toml_value(declared)
    common = {"dest": flag_dest(tree, key.path), "default": None,
              "help": f"{key.doc} Default: {shown}.".strip().replace("%", "%%")}  # argparse %-formats help
    if key.kind is bool:
        group.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
    else:
        group.add_argument(*names, type=_flag_parser(key.path, key.kind, key.choices), metavar=_metavar(key), **common)


class _Derived(argparse.Action):
    """A flag for a key the command sets itself: an error that says who sets it."""

    def __init__(self, *args, reason: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(self.reason)


def _metavar(key: Key) -> str | None:
    if key.choices is not None:
        return "{" + ",".join(map(str, key.choices)) + "}"
    kind = inner(key.kind) if is_optional(key.kind) else key.kind
    if typing.get_origin(kind) is Literal:
        return "{" + ",".join(map(str, typing.get_args(kind))) + "}"
    if typing.get_origin(kind) in (tuple, list):
        return f"{type_name(element(kind)).upper()},..."
    return type_name(kind).upper()


def _flag_parser(path: str, kind, choices: tuple | None):
    """argparse `type=`: the flag's text as the field's type (lists are comma-separated)."""

    def parse(text: str):
        try:
            return checked(from_text(text, kind), kind, choices)
        except Bad as bad:
            raise argparse.ArgumentTypeError(f"{text!r} {bad.phrase}; write e.g. --{path} {_flag_example(bad.kind)}") from None

    parse.__name__ = type_name(kind)
    return parse


def _flag_example(kind) -> str:
    text = example(kind)
    if text.startswith("["):
        return text.strip("[]").replace(" ", "")
    return text.strip('"')


def _positional_dest(path: str) -> str:
    return f"positional:{path}"


def overrides(tree: Tree, args: argparse.Namespace) -> dict[str, object]:
    """Dotted key -> value of every flag and positional argument given on the command line."""
    values = {path: getattr(args, flag_dest(tree, path)) for path in tree.keys}
    out = {path: value for path, value in values.items() if value is not None}
    for path, metavar in tree.positionals.items():
        given = getattr(args, _positional_dest(path), None)
        if given in (None, []):
            continue
        if path in out:
            raise ValueError(f"{metavar} is given twice, as an argument and as --{path}; give it once")
        out[path] = tuple(given) if isinstance(given, list) else given
    return out


def load(tree: Tree, args: argparse.Namespace):
    """The command's config: --config's file (or the defaults), then the flags."""
    data = read_file(args.config) if args.config else {}
    return build(tree, data, overrides(tree, args))


def add_command(subparsers, tree: Tree, *, help: str, description: str, run=None,
                progress: bool = False) -> argparse.ArgumentParser:
    """The sub-command's parser with the tree's flags (no abbreviations: with dotted keys
    a prefix would silently pick one). `run(config, args) -> int` runs the command on its
    loaded config (--print-config prints it instead); `progress` adds --no-progress."""
    parser = subparsers.add_parser(tree.command, help=help, description=description, allow_abbrev=False)
    add_arguments(parser, tree)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if run is not None:
        parser.set_defaults(func=lambda args: _run_loaded(tree, run, args))
    return parser


def _run_loaded(tree: Tree, run, args: argparse.Namespace) -> int:
    config = load_or_print(tree, args)
    return 0 if config is None else run(config, args)


def load_or_print(tree: Tree, args: argparse.Namespace):
    """The command's config, or None after printing it for --print-config."""
    config = load(tree, args)
    if args.print_config:
        print(to_toml(tree, config), end="")
        return None
    return config
