"""nox sessions: tests, lint, demo. Dependencies come from pyproject.toml; installs use pip (see README)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"  # pip, which finds the local torch wheels; uv would download ~3 GB
nox.options.sessions = ["lint", "tests"]


def _pytest(session: nox.Session, *args: str) -> None:
    """The one place that runs pytest (strict options live in pyproject.toml)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *args, *session.posargs)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole offline test suite (needs `apt-get install dataset-fashion-mnist` for the real-data tests)."""
    _pytest(session)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff over the package, tests, benchmarks and this file."""
    session.install("ruff")
    session.run("ruff", "check", "ganbench", "tests", "bench", "noxfile.py")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The main job, short: 5 baseline epochs on Fashion-MNIST, eval of every checkpoint, the report (about 4 minutes)."""
    session.install("-e", ".")
    out = session.posargs[0] if session.posargs else "checkpoints"
    session.run("ganbench", "train", "baseline", "--dataset", "fashion-mnist", "--epochs", "5",
                "--checkpoint-every", "1", "--out", out)
    session.run("ganbench", "eval", out, "--extractor", "lenet-fashion-mnist", "--num-samples", "2000")
    session.run("ganbench", "report", "--out", "quickstart")
