"""`ganbench train baseline` through main(argv): outputs, --seeds, and every bad input as one line + exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ganbench.cli import main


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(root), "--out", str(out),
            "--max-train-images", "128", "--epochs", "1", "--quiet", *extra]


def _run(args: list[str]) -> int:
    """main(args), with argparse's own exits (bad flags, --help) folded into the return code."""
    try:
        return main(args)
    except SystemExit as exited:
        return exited.code


def _one_line_error(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    assert "Traceback" not in "\n".join(err)
    last = err[-1]
    assert last.startswith("ganbench: error: ")
    assert re.search(pattern, last), last
    return last


def test_seeds_train_several_runs_in_one_call(tiny_data_root, tmp_path):
    assert main(_train(tiny_data_root, tmp_path / "out", "--seeds", "3,4")) == 0
    base = tmp_path / "out" / "baseline" / "fashion-mnist"
    assert sorted(p.name for p in base.iterdir()) == ["seed3", "seed4"]
    assert (base / "seed3" / "epoch_0001.pt").is_file() and (base / "seed4" / "epoch_0001.png").is_file()


def test_betas_option_reaches_the_optimiser(tiny_data_root, tmp_path):
    import torch

    assert main(_train(tiny_data_root, tmp_path / "out", "--betas", "0.5,0.999")) == 0
    state = torch.load(tmp_path / "out/baseline/fashion-mnist/seed0/epoch_0001.pt", weights_only=True)
    assert state["config"]["betas"] == [0.5, 0.999]
    assert state["optimizer_g"]["param_groups"][0]["betas"] == (0.5, 0.999)


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--epochs", "0"], r"--epochs must be at least 1, got 0"),
        (["--batch-size", "0"], r"--batch-size must be at least 1, got 0"),
        (["--batch-size", "200"], r"--batch-size 200 is larger than --max-train-images 128"),
        (["--max-train-images", "0"], r"--max-train-images must be at least 1"),
        (["--checkpoint-every", "0"], r"--checkpoint-every must be at least 1"),
        (["--seeds", "1,1"], r"--seeds lists a seed twice"),
        (["--betas", "0.5"], r"argument --betas: expected two numbers like 0.5,0.999"),
        (["--seed", str(2**63)], r"--seed must be below 2\*\*63 \(seeds are signed 64-bit integers\), got 9223372036854775808"),
        (["--seeds", f"0,{10**20}"], r"--seeds must be below 2\*\*63 .*got 100000000000000000000"),
        (["--seed", "0", "--seeds", "1,2"], r"argument --seeds: not allowed with argument --seed"),  # --seed 0 was ignored
        (["--seeds", "0,,1"], r"argument --seeds: expected comma-separated integers like 0,1,2, got '0,,1'"),
    ],
)
def test_bad_values_are_one_line_errors_and_write_nothing(tiny_data_root, tmp_path, capsys, extra, pattern):
    out = tmp_path / "out"
    assert _run(_train(tiny_data_root, out, *extra)) == 2
    _one_line_error(capsys, pattern)
    assert not out.exists()


@pytest.mark.parametrize("command", [["eval", "run.pt"], ["train", "classifier", "--out", "lenet.pt", "--epochs", "1",
                                                       "--batch-size", "32", "--max-train-images", "64",
                                                       "--max-test-images", "64"]])
def test_every_commands_seed_must_fit_in_64_bits(tiny_data_root, tmp_path, capsys, monkeypatch, command):
    # eval's --seed seeds torch.Generator (2**64 - 1 at most) and is stored in a signed 64-bit column
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.pt").write_bytes(b"")
    assert _run([*command, "--data-root", str(tiny_data_root), "--seed", str(10**20)]) == 2
    _one_line_error(capsys, r"--seed must be below 2\*\*63 .*got 100000000000000000000")


def test_unknown_dataset_is_refused_by_the_parser(capsys):
    assert _run(["train", "baseline", "--dataset", "cifar10"]) == 2
    _one_line_error(capsys, r"argument --dataset: invalid choice: 'cifar10'")


def test_batch_larger_than_the_whole_dataset(tiny_data_root, tmp_path, capsys):
    args = ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(tiny_data_root),
            "--out", str(tmp_path / "out"), "--batch-size", "300", "--quiet"]
    assert main(args) == 2
    _one_line_error(capsys, r"--batch-size 300 is larger than the 256 training images")
    assert not (tmp_path / "out").exists()


def test_unwritable_out(tiny_data_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(_train(tiny_data_root, blocker / "out")) == 2
    _one_line_error(capsys, r"--out .*file exists and is not a directory")
    assert main(_train(tiny_data_root, Path("/proc/ganbench-out"))) == 2
    _one_line_error(capsys, r"--out /proc/ganbench-out is not writable")


def test_resume_starts_a_seed_without_checkpoints_and_skips_a_finished_one(tiny_data_root, tmp_path, capsys):
    assert main(_train(tiny_data_root, tmp_path / "out", "--resume")) == 0
    assert re.search(r"--resume: no usable checkpoint in .*seed0; training it from the start", capsys.readouterr().err)
    assert (tmp_path / "out/baseline/fashion-mnist/seed0/epoch_0001.pt").is_file()
    assert main(_train(tiny_data_root, tmp_path / "out", "--resume")) == 0
    assert re.search(r"seed0 already completed 1 epoch \(--epochs 1\); skipped it", capsys.readouterr().err)


def test_resume_with_a_different_config(tiny_data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_train(tiny_data_root, out)) == 0
    before = sorted(p.name for p in (out / "baseline/fashion-mnist/seed0").iterdir())
    args = _train(tiny_data_root, out, "--resume", "--batch-size", "32")
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 2
    _one_line_error(capsys, r"trained with a different config \(batch_size: checkpoint 64 vs now 32\)")
    assert sorted(p.name for p in (out / "baseline/fashion-mnist/seed0").iterdir()) == before


def test_existing_run_is_not_overwritten_without_resume(tiny_data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_train(tiny_data_root, out)) == 0
    assert main(_train(tiny_data_root, out)) == 2
    _one_line_error(capsys, r"already holds checkpoints; pass --resume")


def test_offline_without_data_is_one_line(tmp_path, capsys, monkeypatch):
    from ganbench import data

    monkeypatch.setattr(data, "_download_torchvision", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path / "cache"))
    assert main(["train", "baseline", "--dataset", "mnist", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    _one_line_error(capsys, r"mnist train not found .* download failed \(no network\); fix: ")
    assert not (tmp_path / "out").exists()


def test_python_dash_m_and_help_work():
    result = subprocess.run([sys.executable, "-m", "ganbench", "train", "baseline", "--help"],
                            capture_output=True, text=True, check=True)
    for flag in ("--dataset", "--epochs", "--batch-size", "--seeds", "--device", "--out", "--checkpoint-every",
                 "--resume", "--max-train-images", "--betas", "examples:"):
        assert flag in result.stdout


def test_help_imports_no_heavy_library():
    # Every subcommand's --help is built without torch, numpy, pandas, scipy or matplotlib, so it answers at once
    # (importing torch alone takes seconds on a small machine).
    code = ("import sys; from ganbench.cli import build_parser; build_parser(); "
            "print(','.join(sorted({'torch', 'numpy', 'pandas', 'scipy', 'matplotlib'} & set(sys.modules))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("argv,help_command", [
    (["eval", "x.pt", "--bogus"], "ganbench eval --help"),
    (["train", "baseline", "--bogus", "1"], "ganbench train baseline --help"),
    (["report", "--bogus"], "ganbench report --help"),
    (["compare", "a", "b", "--bogus"], "ganbench compare --help"),
])
def test_an_unknown_flag_points_at_the_help_of_the_command_it_was_given_to(capsys, argv, help_command):
    # it pointed at `ganbench --help`, which lists the commands but none of their flags
    assert _run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unrecognized arguments: --bogus" in err and f"(see `{help_command}`)" in err, err


def test_a_negative_seed_in_seeds_names_seeds(tiny_data_root, tmp_path, capsys):
    # it said "--seed must be non-negative" of a --seeds list
    assert _run(_train(tiny_data_root, tmp_path / "out", "--seeds", "0,-1")) == 2
    _one_line_error(capsys, r"--seeds must be non-negative, got -1")


def test_wgan_gp_with_too_few_steps_for_one_generator_update_is_refused(tiny_data_root, tmp_path, capsys):
    # 128 images in batches of 64 for one epoch: 2 critic steps, no generator step, "G loss nan", exit 0
    args = _train(tiny_data_root, tmp_path / "out")
    args[1] = "wgan-gp"
    assert _run(args) == 2
    _one_line_error(capsys, r"wgan-gp updates G once every 5 critic steps, and 1 epoch of 128 images in batches of 64 "
                            r"gives 2 steps")
    assert not (tmp_path / "out").exists()
