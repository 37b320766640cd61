"""The `hsp` command line: one sub-command per module in `cluster.commands`.

Each command module has ``HELP`` (one line) and ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable ``(args) -> int``. Only the command being run gets
its full parser (train/rl/profile derive theirs from config trees that import torch), so
`hsp plan` and `hsp --help` stay fast; heavy imports happen inside the command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterable

COMMANDS = ("plan", "simulate", "profile", "train", "rl", "prepare", "export")


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, no traceback."""


@contextlib.contextmanager
def warnings_as_lines(command: str):
    """Print each warning raised inside as one line, `hsp COMMAND: warning: ...`, when it ends."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"hsp {command}: warning: {w.message}", file=sys.stderr)


def build_parser(full: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The `hsp` parser; commands not in `full` get only their name and help line."""
    full = set(full)
    parser = argparse.ArgumentParser(
        prog="hsp",
        description="Heterogeneity-adaptive sequence parallelism: plan, simulate, profile, train, rl, prepare, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"cluster.commands.{name}")
        if name in full:
            module.register(sub)
        else:
            sub.add_parser(name, help=module.HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(full=[command] if command in COMMANDS else []).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as err:
        # ValueError is how config/plan validation reports bad input (with the fix);
        # internal bugs raise other types and keep their traceback.
        print(f"hsp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hsp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
