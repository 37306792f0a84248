"""The `ganbench` command line: one module per subcommand, `main(argv) -> int` callable from tests.

Each subcommand module exposes `add_parser(subparsers)`, which registers its parser and sets
`run=` to a function `run(args) -> int`. Domain errors become a one-line message and exit code 2
here, in one place; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ganbench import __version__
from ganbench.errors import GanbenchError


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line for bad flags, like our own errors."""

    def error(self, message: str):
        self.exit(2, f"ganbench: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from ganbench.cli import eval as eval_command
    from ganbench.cli import reference, report, train

    parser = _Parser(
        prog="ganbench",
        description="Train, evaluate and report GANs with metrics that match the reference implementations.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ganbench train baseline --dataset fashion-mnist --epochs 5\n  ganbench train baseline --help",
    )
    parser.add_argument("--version", action="version", version=f"ganbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    train.add_parser(subparsers)
    reference.add_parser(subparsers)
    eval_command.add_parser(subparsers)
    report.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except GanbenchError as exc:
        print(f"ganbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganbench: interrupted; finished work is saved (train: rerun with --resume; eval: rerun the same command)",
              file=sys.stderr)
        return 130
