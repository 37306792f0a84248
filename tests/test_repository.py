"""The repository keeps its promises: CI runs exactly the README's test command; the quick start's flags exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    commands = _quick_start_commands()
    assert len(commands) == 2, "the quick start has exactly two commands: the main job and the tests"
    setup = ("#", "set ", "cd ", "export ")
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(setup)]
    assert ci_lines == [commands[1]]


def test_quick_start_main_job_uses_options_the_cli_accepts():
    from ganbench.cli import build_parser

    main_job = _quick_start_commands()[0]
    ganbench_steps = [step.strip() for step in main_job.split("&&") if "bin/ganbench " in step]
    assert ganbench_steps, "the main job runs ganbench"
    parser = build_parser()
    for step in ganbench_steps:
        argv = shlex.split(step)[1:]
        args = parser.parse_args(argv)  # exits (fails the test) on an unknown flag or bad value
        assert callable(args.run)
