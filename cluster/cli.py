"""The `hsp` command line: one sub-command per module in `cluster.commands`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable ``(args) -> int``. Heavy imports (torch, ray) happen inside the
command, so `hsp plan` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("plan", "simulate", "profile", "train", "rl")


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsp",
        description="Heterogeneity-adaptive sequence parallelism: plan, simulate, profile, train, rl.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cluster.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"cluster.commands.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
