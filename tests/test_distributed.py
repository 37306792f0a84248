"""`ganbench eval` on two gloo ranks (CPU) equals one process: every stored value, every printed row, once.

Launches through torchrun (`python -m torch.distributed.run`): samples split across two ranks (the
default), the same on two "nodes" of one rank each (multi-node torchrun, both on this machine), and whole
sources dealt to two ranks. A third launch starts the two ranks by hand with the variables
torchrun sets, so that each rank's own exit code can be checked. The sources: three checkpoints of a tiny
trained run, one corrupt checkpoint (recorded as failed by every layout) and an .npz of images; `--batch-size 16`
with 100 samples gives 7 batches, so the ranks get unequal shares (48 and 52 samples).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_split

from ganbench.cli import main
from ganbench.distributed import batch_range, launched_by_torchrun
from ganbench.results import ResultsStore

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES, BATCH = 100, 16
# Columns that say where and when a row was computed, not what it is.
CIRCUMSTANCES = {"device", "wall_time_s", "created_at"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    """Tiny data, a 3-epoch run with a corrupt fourth checkpoint, an .npz source, and the single-process results."""
    base = tmp_path_factory.mktemp("dist")
    data = base / "data"
    data.mkdir()
    make_idx_split(data, "train", 256, seed=1)
    make_idx_split(data, "test", 64, seed=2)
    out = base / "out"
    assert main(["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(data), "--out", str(out),
                 "--max-train-images", "128", "--epochs", "3", "--checkpoint-every", "1", "--quiet"]) == 0
    run_dir = out / "baseline" / "fashion-mnist" / "seed0"
    (run_dir / "epoch_0004.pt").write_bytes(b"not a checkpoint")
    npz = base / "images.npz"
    np.savez(npz, images=np.random.default_rng(3).integers(0, 256, (50, 1, 28, 28), dtype=np.uint8))
    ws = {"data": data, "out": out, "npz": npz, "cache": base / "cache"}
    single = base / "single.sqlite"
    # Exit code 1: the corrupt checkpoint is recorded as failed; the sweep goes on.
    assert main(eval_args(ws, single)) == 1
    assert not torch.distributed.is_initialized(), "a single process must not start a process group"
    ws["single"] = single
    return ws


def eval_args(ws: dict, results: Path, *extra: str) -> list[str]:
    return ["eval", str(ws["out"]), str(ws["npz"]), "--extractor", "lenet-fashion-mnist",
            "--num-samples", str(NUM_SAMPLES), "--batch-size", str(BATCH), "--reference", "fashion-mnist:test",
            "--data-root", str(ws["data"]), "--cache-dir", str(ws["cache"]), "--results", str(results),
            "--device", "cpu", "--quiet", "--format", "json", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "ganbench", *args]
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=180)


def stored(results: Path) -> dict[tuple, dict]:
    with ResultsStore(results, create=False) as store:
        rows = store.rows()
    keys = Counter((r["source_sha256"], r["protocol_key"], r["metric"]) for r in rows)
    assert max(keys.values()) == 1, "duplicate rows"
    return {(r["source_sha256"], r["protocol_key"], r["metric"]): r for r in rows}


def assert_same_results(results: Path, single: Path) -> None:
    ours, theirs = stored(results), stored(single)
    assert ours.keys() == theirs.keys()
    assert Counter(r["status"] for r in theirs.values()) == {"ok": 4 * 9, "failed": 9}  # 3 checkpoints + npz; corrupt
    for key, expected in theirs.items():
        got = ours[key]
        for column, value in expected.items():
            if column in CIRCUMSTANCES or column == "id":
                continue
            if isinstance(value, float):
                assert math.isclose(got[column], value, rel_tol=1e-5, abs_tol=1e-12), (key, column, got[column], value)
            else:
                assert got[column] == value, (key, column)


def printed(stdout: str) -> Counter:
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return Counter((r["source"], r["metric"], r["reference"], r["status"]) for r in rows)


def test_batch_ranges_cover_every_row_once_in_whole_batches():
    for n, batch, world in [(100, 16, 2), (7, 16, 2), (10_000, 250, 3), (5, 1, 8)]:
        ranges = [batch_range(n, batch, rank, world) for rank in range(world)]
        assert [r for start, stop in ranges for r in range(start, stop)] == list(range(n))
        assert all(start % batch == 0 for start, _ in ranges)
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h"})
    assert not launched_by_torchrun({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "h"})
    assert not launched_by_torchrun({})


def test_a_rank_share_of_the_samples_is_bit_identical_to_the_same_rows_of_one_process():
    from ganbench.samples import generate
    from ganbench.train.models import make_generator

    module = make_generator().eval()
    full = generate(module, 100, NUM_SAMPLES, seed=5, batch_size=BATCH)
    parts = [generate(module, 100, NUM_SAMPLES, seed=5, batch_size=BATCH, rows=batch_range(NUM_SAMPLES, BATCH, r, 2))
             for r in range(2)]
    assert torch.equal(torch.cat(parts), full)


def test_samples_split_across_two_ranks_equal_one_process(ws, tmp_path):
    results = tmp_path / "r.sqlite"
    done = torchrun(eval_args(ws, results))
    assert done.returncode != 0, "the corrupt checkpoint must fail the launch"
    assert_same_results(results, ws["single"])
    # The main rank prints every row once; the other rank prints nothing.
    with ResultsStore(ws["single"], create=False) as store:
        expected = Counter((r["source_path"], r["metric"], r["reference_name"], r["status"]) for r in store.rows())
    assert printed(done.stdout) == expected
    assert "[rank 1/2]" not in done.stderr


def test_two_nodes_of_one_rank_each_equal_one_process(ws, tmp_path):
    """Multi-node torchrun, both "nodes" on this machine: every worker has LOCAL_RANK 0, and only RANK tells them
    apart, so a rank taken from the wrong variable would write twice or gather out of order."""
    results = tmp_path / "r.sqlite"
    port = str(free_port())
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                          "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", port,
                          "-m", "ganbench", *eval_args(ws, results)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=180) for node in nodes]
    assert all(node.returncode != 0 for node in nodes), "the corrupt checkpoint must fail both nodes"
    assert_same_results(results, ws["single"])
    with ResultsStore(ws["single"], create=False) as store:
        expected = Counter((r["source_path"], r["metric"], r["reference_name"], r["status"]) for r in store.rows())
    assert printed(outputs[0][0]) == expected  # the main rank, on node 0, prints every row once
    assert printed(outputs[1][0]) == Counter()


def test_sources_dealt_to_two_ranks_equal_one_process(ws, tmp_path):
    results = tmp_path / "r.sqlite"
    done = torchrun(eval_args(ws, results, "--distribute", "sources"))
    assert done.returncode != 0
    assert_same_results(results, ws["single"])
    with ResultsStore(ws["single"], create=False) as store:
        expected = Counter((r["source_path"], r["metric"], r["reference_name"], r["status"]) for r in store.rows())
    assert printed(done.stdout) == expected  # rank 1's rows printed by rank 0, once


def test_every_rank_exits_1_when_a_source_failed_on_any_rank(ws, tmp_path):
    """Sources dealt round-robin: rank 1 gets epochs 2 and 4 (corrupt), rank 0 the rest; both must say 1.
    The ranks are started as torchrun starts them (env:// variables), so each rank's exit code is visible."""
    out = tmp_path / "out"
    shutil.copytree(ws["out"], out)
    results = tmp_path / "r.sqlite"
    args = eval_args({**ws, "out": out}, results, "--distribute", "sources")
    codes, outputs = by_hand(args)
    assert codes == [1, 1], [err[-2000:] for _, err in outputs]
    assert "[rank 1/2] FAILED" in outputs[1][1] and "FAILED" not in outputs[0][1]
    assert outputs[1][0] == ""  # rank 1's results are printed by rank 0
    # A second launch skips everything stored and retries only the failure, which fails again on rank 1.
    codes, outputs = by_hand(args)
    assert codes == [1, 1]
    assert outputs[0][1].count("skip ") == 3 and outputs[1][1].count("skip ") == 1  # rank 0: epochs 1, 3, npz
    assert len(stored(results)) == 5 * 9


def by_hand(args: list[str]) -> tuple[list[int], list[tuple[str, str]]]:
    """Two ranks started with the variables torchrun sets; each rank's exit code and (stdout, stderr)."""
    port = str(free_port())
    ranks = [
        subprocess.Popen([sys.executable, "-m", "ganbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**env(), "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
                              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        for r in range(2)
    ]
    outputs = [rank.communicate(timeout=180) for rank in ranks]
    return [rank.returncode for rank in ranks], outputs
