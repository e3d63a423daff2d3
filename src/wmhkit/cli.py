"""Command-line shell over the wmhkit library.

Each subcommand lives in a module that exposes ``register(subparsers)``; the parser it adds sets
``func`` to a callable taking the parsed arguments and returning an exit code. This file only wires them
up and turns errors into one-line messages: 2 for bad input, 1 for anything else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from wmhkit import __version__
from wmhkit.errors import WmhkitError

# Modules providing subcommands, in the order --help lists them.
COMMAND_MODULES = [
    "wmhkit.commands.segment",
    "wmhkit.commands.evaluate",
    "wmhkit.commands.synth",
    "wmhkit.commands.brainmask",
    "wmhkit.commands.train",
    "wmhkit.commands.pretrain",
    "wmhkit.commands.selftrain",
]

DESCRIPTION = """\
wmhkit: white matter hyperintensity (WMH) segmentation and evaluation, offline on a CPU.

Run `wmhkit COMMAND --help` for the options and an example of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wmhkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wmhkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    examples = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
        examples += getattr(module, "EXAMPLES", [])
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(os.environ.get("WMHKIT_DEBUG"))
    warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except WmhkitError as exc:
        if debug:
            raise
        print(f"wmhkit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"wmhkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: still one line, the traceback only on request
        if debug:
            raise
        print(
            f"wmhkit {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set WMHKIT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"wmhkit: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
