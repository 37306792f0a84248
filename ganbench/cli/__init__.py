"""The `ganbench` command line: one module per subcommand, `main(argv) -> int` callable from tests.

Each subcommand module exposes `add_parser(subparsers)`, which registers its parser and sets
`run=` to a function `run(args) -> int`. Domain errors, and the operating system's refusals (a full
disk, a read-only folder, a folder where a file was expected), become a one-line message and exit code 2
here, in one place; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

from ganbench import __version__
from ganbench.errors import GanbenchError, GanbenchWarning, one_line, single_line

# What an OSError means for the user, by errno, and how to fix it; others print the system's words alone.
_OS_ERRORS = {
    errno.ENOSPC: ("disk full", "free some space or write elsewhere (--out, --cache-dir, --results, --stats-out)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere (--out, --cache-dir, --results, --stats-out)"),
    errno.EACCES: ("permission denied", "check its permissions or write elsewhere (--out, --cache-dir, --results, --stats-out)"),
    errno.EPERM: ("not permitted", "choose a folder you can write (--out, --cache-dir, --results, --stats-out)"),
    errno.EROFS: ("read-only file system", "choose a writable folder (--out, --cache-dir, --results, --stats-out)"),
    errno.EISDIR: ("a folder where a file was expected", "pass a file path, not a folder"),
    errno.ENOTDIR: ("a file where a folder was expected", "pass a folder path, not a file"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and one line for bad flags, like our own errors."""

    def error(self, message: str):
        self.exit(2, f"ganbench: error: {message} (see `{self.prog} --help`)\n")


EPILOG = """\
the whole job, on Fashion-MNIST:
  ganbench train baseline --dataset fashion-mnist --epochs 5          # the specified GAN (train MODEL: the zoo)
  ganbench eval checkpoints --extractor lenet-fashion-mnist           # every checkpoint, into results/ganbench.sqlite
  ganbench report --out reports                                       # leaderboards, curves, grids, comparisons
  ganbench compare checkpoints/lsgan/fashion-mnist checkpoints/baseline/fashion-mnist   # needs 2+ seeds per model

every command explains itself: ganbench COMMAND --help"""


def build_parser() -> argparse.ArgumentParser:
    from ganbench.cli import compare, reference, report, train
    from ganbench.cli import eval as eval_command

    parser = _Parser(
        prog="ganbench",
        description="Train, evaluate and report GANs with metrics that match the reference implementations.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"ganbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    train.add_parser(subparsers)
    reference.add_parser(subparsers)
    eval_command.add_parser(subparsers)
    report.add_parser(subparsers)
    compare.add_parser(subparsers)
    return parser


def _chosen_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that `args` were parsed by, e.g. `ganbench train baseline`'s."""
    while True:
        commands = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if commands is None or getattr(args, commands.dest, None) not in commands.choices:
            return parser
        parser = commands.choices[getattr(args, commands.dest)]


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """ganbench's own warnings as one line, like its errors; other libraries' keep Python's format."""
    if issubclass(category, GanbenchWarning):
        return f"ganbench: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report them from the top parser, pointing at `ganbench --help`
        _chosen_command(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.run(args) or 0)
    except GanbenchError as exc:  # one line, even when it quotes a path holding a line break
        print(f"ganbench: error: {single_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout left (`| head`): finished work is kept; exit as SIGPIPE would
        silence_stdout()
        return 141
    except OSError as exc:
        print(f"ganbench: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganbench: interrupted; finished work is saved (train: rerun with --resume; eval: rerun the same command)",
              file=sys.stderr)
        return 130


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader left, so that later writes and the interpreter's last flush do
    not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: '<what>: <strerror> (<file>[ -> <file2>]); <how to fix it>'."""
    what, hint = _OS_ERRORS.get(exc.errno, ("operating system error", ""))
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    text = f"{what}: {exc.strerror or one_line(exc)}" + (f" ({files})" if files else "")
    text += f"; {hint}" if hint else ""
    return text.replace("\n", " ").replace("\r", " ")  # a file name holding a newline still makes one line
