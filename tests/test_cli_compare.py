"""`ganbench compare` and the comparison section of `ganbench report`, on synthetic results stores whose answer is
known: the values compared are the leaderboard's per-seed values, the numbers equal scipy's and rliable's on them,
identical models are rarely called different (p-values near uniform over 200 independent tables), shifted ones are,
the variance is split over sampling seeds, and bad input is one line (exit 2) or a note in the table."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ganbench import compare
from ganbench.cli import main
from ganbench.results import Protocol, ResultRow, ResultsStore, RunInfo
from ganbench.results.comparison import compare_tables
from ganbench.results.leaderboard import PROTOCOL_FIELDS, Row, Table, aggregate, build_tables, tidy

TEST, SELECT = "fashion-mnist:test", "fashion-mnist:train:10000"


def row(root: Path, model: str, seed: int, value: float, *, epoch: int = 10, metric: str = "fid", reference: str = TEST,
        extractor: str = "lenet-fashion-mnist", n_generated: int = 100, sampling_seed: int = 0) -> ResultRow:
    path = root / model / "fashion-mnist" / f"seed{seed}" / f"epoch_{epoch:04d}.pt"
    protocol = Protocol(extractor=extractor, weights_sha256="ab" * 32, preprocessing="lenet-28-gray-unit",
                        n_generated=n_generated, n_reference=100, reference_name=reference,
                        reference_split=reference.split(":")[1], seed=sampling_seed, metric_protocol_version=1)
    return ResultRow(metric=metric, protocol=protocol, source_path=str(path),
                     source_sha256=hashlib.sha256(str(path).encode()).hexdigest(), value=value,
                     run=RunInfo(kind="baseline", dataset="fashion-mnist", seed=seed, epoch=epoch, step=epoch * 10))


def store(tmp_path: Path, rows: list[ResultRow]) -> Path:
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as s:
        s.write_results(rows)
    return path


def models(tmp_path: Path, values: dict[str, list[float]], **kwargs) -> list[ResultRow]:
    """Final checkpoints (epoch 10) with `values` per seed, plus an earlier epoch whose numbers must never be used."""
    rows = []
    for model, xs in values.items():
        for seed, x in enumerate(xs):
            rows += [row(tmp_path, model, seed, x, **kwargs), row(tmp_path, model, seed, 1000.0 + x, epoch=5, **kwargs)]
    return rows


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def frame(path: Path):
    with ResultsStore(path, create=False) as s:
        return tidy(s.to_dataframe())


A = [20.1, 21.4, 19.8, 22.0]
B = [24.3, 23.1, 25.0, 26.2, 23.9]
C = [20.5, 22.2, 21.0]


def test_two_groups_use_the_leaderboards_per_seed_values_and_equal_scipy_and_rliable(tmp_path, capsys):
    from rliable import metrics

    path = store(tmp_path, models(tmp_path, {"lsgan": A, "wgan": B}))
    code, out, _ = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist", "--format", "json")
    assert code == 0
    (block,) = json.loads(out)
    (pair,) = block["pairs"]
    (final,) = [t for t in build_tables(frame(path)) if t.rule == "final"]
    leaderboard = {Path(r.group).parent.name: r.metrics["fid"].values for r in final.rows}
    assert leaderboard == {"lsgan": tuple(A), "wgan": tuple(B)}  # the epoch-5 numbers were never used
    welch = stats.ttest_ind(A, B, equal_var=False)
    ci = welch.confidence_interval(0.95)
    perm = stats.permutation_test((A, B), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                  permutation_type="independent", vectorized=True, n_resamples=np.inf)
    assert pair["welch_p"] == pytest.approx(welch.pvalue) and pair["welch_p_holm"] == pytest.approx(welch.pvalue)
    assert (pair["diff_ci_low"], pair["diff_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert pair["permutation_p"] == pytest.approx(perm.pvalue) and pair["permutation_exact"] is True
    # lower FID is better: P(A beats B) is rliable's on negated scores
    ref = metrics.probability_of_improvement(-np.array(A)[:, None], -np.array(B)[:, None])
    assert pair["prob_improvement"] == pytest.approx(ref)
    assert pair["diff"] == pytest.approx(np.mean(A) - np.mean(B)) and pair["verdict"] == "A better"
    assert pair["seeds_needed"] == compare.seeds_needed(np.mean(A) - np.mean(B), np.std(A, ddof=1), np.std(B, ddof=1))
    assert block["rule"] == "final" and block["direction"] == "lower"


def test_two_groups_in_words_name_every_test_and_the_missing_variance_split(tmp_path, capsys):
    path = store(tmp_path, models(tmp_path, {"lsgan": A, "wgan": B}))
    code, out, err = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist")
    assert code == 0 and err == ""
    assert "difference of means A - B: -3.675 [95% Welch t interval -5.434, -1.916]" in out
    assert "exact permutation test over training seeds: p = 0.0159" in out
    assert "probability of improvement P(a run of A beats a run of B) = 1 [95% stratified bootstrap 1, 1]" in out
    assert "verdict (welch test, alpha 0.05): A better" in out
    assert "every checkpoint was scored under one sampling seed (0)" in out and "ganbench eval --seed S" in out


def test_identical_models_are_rarely_called_different_and_p_values_spread_evenly():
    # 200 independent tables, two models drawn from one distribution in each (built directly: the store and
    # build_tables are covered above and would take minutes for 200 protocols)
    rng = np.random.default_rng(16)
    p, verdicts = [], []
    for k in range(200):
        rows = [Row(f"runs/{name}/fashion-mnist", "baseline", "fashion-mnist", "final", "", "", {s: 10 for s in range(4)},
                    {s: f"runs/{name}/fashion-mnist/seed{s}/epoch_0010.pt" for s in range(4)},
                    {"fid": aggregate(rng.normal(30, 2, 4))}) for name in ("a", "b")]
        table = Table(f"p{k}", {f: 0 for f in PROTOCOL_FIELDS}, "final", "final", ("0",), ["fid"], rows)
        (pair,) = compare_tables([table], table, "fid").pairs
        p.append(pair.welch_p)
        verdicts.append(pair.verdict)
    p = np.array(p)
    assert np.count_nonzero(p < 0.05) <= stats.binom.ppf(0.999, 200, 0.05)
    assert stats.kstest(p, "uniform").pvalue > 0.001
    assert verdicts.count("no significant difference") >= 185 and "not tested" not in verdicts


def test_all_pairs_are_holm_corrected_and_ranks_follow_the_corrected_tests(tmp_path, capsys):
    close, far = [22.4, 23.1, 22.0, 23.6], [35.0, 36.5, 34.2, 35.9]  # close to both lsgan and wgan: p about 0.03
    path = store(tmp_path, models(tmp_path, {"lsgan": A, "hinge": close, "wgan": B, "minimax": far}))
    code, out, _ = run(capsys, "--results", str(path), "--format", "csv")
    assert code == 0
    pairs = list(csv.DictReader(io.StringIO(out)))
    assert len(pairs) == 6
    raw = [float(p["welch_p"]) for p in pairs]
    assert [float(p["welch_p_holm"]) for p in pairs] == pytest.approx(compare.holm(raw))
    assert any(float(p["welch_p"]) < 0.05 <= float(p["welch_p_holm"]) for p in pairs)  # the correction mattered
    ranks = {Path(p[g]).parent.name: int(p[f"rank_{g[-1]}"]) for p in pairs for g in ("group_a", "group_b")}
    beaten = {name: 0 for name in ranks}
    for p in pairs:
        if float(p["welch_p_holm"]) < 0.05:
            loser = p["group_b"] if p["verdict"] == "A better" else p["group_a"]
            beaten[Path(loser).parent.name] += 1
    assert ranks == {name: 1 + n for name, n in beaten.items()}
    assert ranks["lsgan"] == 1 and ranks["minimax"] == 4


def test_a_group_with_one_seed_gets_no_test_and_the_table_says_why(tmp_path, capsys):
    path = store(tmp_path, models(tmp_path, {"lsgan": A, "wgan": [24.0], "hinge": C}))
    code, out, err = run(capsys, "--results", str(path))
    assert code == 0 and "Traceback" not in err
    assert "not tested (B has one seed: no spread over training seeds to test against; train more" in out
    assert "not ranked (one seed)" in out
    code, out, _ = run(capsys, "--results", str(path), "wgan/fashion-mnist", "lsgan/fashion-mnist")
    assert code == 0 and "no test: A has one seed" in out


def test_groups_evaluated_under_different_protocols_are_refused_in_one_line(tmp_path, capsys):
    rows = models(tmp_path, {"lsgan": A}) + models(tmp_path, {"wgan": B}, n_generated=500)
    path = store(tmp_path, rows)
    code, out, err = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "lsgan/fashion-mnist and wgan/fashion-mnist share no protocol" in err and "N 500" in err
    code, _, err = run(capsys, "--results", str(path))
    assert code == 2 and "every fid table holds one model group; nothing to compare" in err


def test_groups_whose_best_checkpoints_were_chosen_differently_are_refused(tmp_path, capsys):
    rows = models(tmp_path, {"lsgan": A, "wgan": B})
    rows += [row(tmp_path, "lsgan", seed, 30.0, reference=SELECT) for seed in range(len(A))]  # only lsgan has them
    path = store(tmp_path, rows)
    code, _, err = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist", "--rule", "best")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--rule best chose lsgan/fashion-mnist's checkpoints on fashion-mnist:train:10000 but wgan/fashion-mnist's " \
           "on fashion-mnist:test (selected on the reported data (optimistic))" in err
    code, out, _ = run(capsys, "--results", str(path), "--rule", "best")  # all pairs: a note, not a refusal
    assert code == 0 and "not tested (checkpoints chosen on different references" in out
    assert run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist")[0] == 0  # final is fine


def test_sampling_seeds_are_gathered_across_protocols_to_split_the_variance(tmp_path, capsys):
    rng = np.random.default_rng(4)
    rows, checkpoints = [], {"lsgan": [], "wgan": []}
    for model, center in (("lsgan", 20.0), ("wgan", 25.0)):
        for seed in range(4):
            trained = center + rng.normal(0, 3.0)  # training seeds spread widely; sampling barely moves a checkpoint
            values = [trained + rng.normal(0, 0.2) for _ in range(3)]
            checkpoints[model].append(values)
            rows += [row(tmp_path, model, seed, v, sampling_seed=s) for s, v in enumerate(values)]
    path = store(tmp_path, rows)
    code, out, _ = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist", "--format", "json")
    blocks = json.loads(out)
    assert code == 0 and len(blocks) == 3  # one comparison per sampling seed, each under its own protocol id
    for block in blocks:
        assert block["sampling_seeds"] == [0, 1, 2]
        for model, split in block["variance_splits"].items():
            ref = compare.variance_components(checkpoints[Path(model).parent.name])
            assert split["between"] == pytest.approx(ref.between) and split["within"] == pytest.approx(ref.within)
            assert split["dominant"] == "training seeds" and split["n_checkpoints"] == 4 and split["n_values"] == 12
    code, out, _ = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist")
    assert "variance split over sampling seeds 0, 1, 2" in out and "(99% training seeds); dominant: training seeds" in out


def test_formats_help_and_group_names(tmp_path, capsys):
    path = store(tmp_path, models(tmp_path, {"lsgan": A, "wgan": B}) + models(tmp_path / "other", {"lsgan": C}))
    code, out, _ = run(capsys, "--results", str(path), "--format", "markdown")
    assert code == 0 and out.startswith("# ganbench comparison") and "| A | B | seeds A/B |" in out
    code, out, _ = run(capsys, "--results", str(path))
    assert code == 0 and "rank (corrected tests)" in out and "Holm-corrected over this table's 3 tested pair(s)" in out
    code, _, err = run(capsys, "--results", str(path), "lsgan/fashion-mnist", "wgan/fashion-mnist")
    assert code == 2 and "group lsgan/fashion-mnist is ambiguous: it ends 2 groups" in err
    code, _, err = run(capsys, "--results", str(path), "dcgan", "wgan")
    assert code == 2 and "no model group dcgan with these results; groups:" in err
    full = str(tmp_path / "other" / "lsgan" / "fashion-mnist")
    assert run(capsys, "--results", str(path), full, "wgan/fashion-mnist")[0] == 0
    assert run(capsys, "--results", str(path), "wgan", "wgan")[1:] == ("", "ganbench: error: GROUP_A and GROUP_B are both "
                                                                       f"{tmp_path / 'wgan' / 'fashion-mnist'}; give two "
                                                                       "different model groups\n")
    code, _, err = run(capsys, "--results", str(path), "wgan")
    assert code == 2 and "got 1 groups (wgan); give two (GROUP_A GROUP_B)" in err
    code, _, err = run(capsys, "--results", str(path), "--alpha", "1.5")
    assert code == 2 and "--alpha 1.5: expected a level between 0 and 1" in err
    code, _, err = run(capsys, "--results", str(path), "--metric", "kid")
    assert code == 2 and "--metric kid matches no results" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "ganbench compare runs/lsgan/fashion-mnist runs/baseline/fashion-mnist" in text


def test_the_clis_defaults_and_choices_are_compare_configs():
    from ganbench.cli import compare as cli
    from ganbench.results import comparison

    defaults = comparison.CompareConfig()
    assert cli.DEFAULTS == {k: getattr(defaults, k) for k in cli.DEFAULTS} and cli.TESTS == comparison.TESTS


def test_permutation_test_can_drive_verdicts_and_says_when_seeds_are_too_few(tmp_path, capsys):
    path = store(tmp_path, models(tmp_path, {"lsgan": [20.0, 20.5, 21.0], "wgan": [30.0, 30.5, 31.0]}))
    code, out, _ = run(capsys, "--results", str(path), "lsgan", "wgan", "--test", "permutation", "--format", "json")
    (pair,) = json.loads(out)[0]["pairs"]
    assert code == 0 and pair["welch_p"] < 0.001 and pair["permutation_p"] == pytest.approx(0.1)
    assert pair["verdict"] == "no significant difference" and "cannot go below p = 0.1; train more seeds" in pair["note"]


def test_report_writes_the_comparison_section_only_when_two_groups_have_two_seeds(tmp_path, capsys):
    path = store(tmp_path, models(tmp_path, {"lsgan": A, "wgan": B, "hinge": [21.0]}))
    assert main(["report", "--results", str(path), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    rep = tmp_path / "rep"
    pairs = list(csv.DictReader(io.StringIO((rep / "comparison.csv").read_text())))
    assert len(pairs) == 2 * 3  # final and best tables, 3 pairs each (hinge's pairs untested, with a note)
    tested = [p for p in pairs if p["verdict"] != "not tested"]
    assert len(tested) == 2 and all(math.isclose(float(p["welch_p_holm"]), float(p["welch_p"])) for p in tested)
    assert "# ganbench comparison" in (rep / "comparison.md").read_text()
    index = (rep / "index.html").read_text()
    assert "<h1>Comparisons</h1>" in index and "comparison.csv" in index
    assert "comparison.md" in json.loads((rep / ".ganbench-report").read_text())["files"]
    alone = store(tmp_path / "one", models(tmp_path / "one", {"lsgan": A, "wgan": [22.0]}))
    assert main(["report", "--results", str(alone), "--out", str(tmp_path / "rep1"), "--no-plots"]) == 0
    assert not (tmp_path / "rep1" / "comparison.csv").exists()
    assert "Comparisons" not in (tmp_path / "rep1" / "index.html").read_text()
    capsys.readouterr()


def test_models_sharing_a_rank_are_listed_best_mean_first(tmp_path, capsys):
    # no pair separates (spread far wider than the gaps): all rank 1, and the table must still read best first, not
    # alphabetically (the zoo benchmark listed the specified GAN's FID 419 above dcgan's 22 at rank 1)
    spread = {"aaa": [400.0, 250.0, 550.0], "mmm": [20.0, 300.0, 150.0], "zzz": [10.0, 5.0, 600.0]}
    path = store(tmp_path, models(tmp_path, spread))
    code, out, _ = run(capsys, "--results", str(path))
    assert code == 0
    ranks = out.split("ranks:\n")[1].split("\n\n")[0].splitlines()[1:]
    listed = [line.split("/")[0] for line in ranks]
    assert listed == ["mmm", "zzz", "aaa"]  # means 156.7, 205, 400; fid: lower is better


def test_a_table_whose_permutation_tests_cannot_reach_alpha_after_holm_says_so_and_how_many_seeds_would(tmp_path, capsys):
    # three models of 3 seeds: 3 pairs, each permutation p >= 2/C(6, 3) = 0.1, so Holm's first step >= 0.3;
    # 3 x 2/C(10, 5) = 0.024 <= 0.05 but 3 x 2/C(8, 4) = 0.086: 5 seeds per model
    path = store(tmp_path, models(tmp_path, {"lsgan": [1.0, 2.0, 3.0], "wgan": [10.0, 11.0, 12.0], "hinge": C}))
    code, out, _ = run(capsys, "--results", str(path))
    assert code == 0
    line = "the permutation test cannot separate any pair of this table: at these seed counts its p is at least 0.1, " \
           "0.3 after Holm over 3 pairs, above alpha 0.05; 5 seeds per model would let it"
    assert line in out
    path = store(tmp_path / "two", models(tmp_path, {"lsgan": A, "wgan": B}))  # 4 vs 5: 2/C(9, 4) = 0.016
    code, out, _ = run(capsys, "--results", str(path))
    assert code == 0 and "cannot separate any pair" not in out


def test_a_selection_reference_that_matches_nothing_is_refused_in_one_line(tmp_path, capsys):
    # it printed "best: ... on nosuch, reported on ..." over the selection reference's own numbers, exit 0
    rows = models(tmp_path, {"lsgan": A, "wgan": B})
    rows += [row(tmp_path, m, seed, 30.0, reference=SELECT) for m, xs in (("lsgan", A), ("wgan", B)) for seed in range(len(xs))]
    path = store(tmp_path, rows)
    code, out, err = run(capsys, "--results", str(path), "--rule", "best", "--select-on", "nosuch")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"--select-on nosuch matches no results; references in the store: {TEST}, {SELECT}" in err
    out_dir = tmp_path / "out"
    assert main(["report", "--results", str(path), "--out", str(out_dir), "--select-on", "nosuch:ref", "--no-plots"]) == 2
    assert "--select-on nosuch:ref matches no results" in capsys.readouterr().err and not out_dir.exists()


def test_groups_constant_over_seeds_are_decided_by_the_permutation_test(tmp_path, capsys):
    # Each group the same on every seed (realistic for classes_covered): Welch's t is undefined, so the pair was
    # "not tested (no spread ...)" although A was ahead on every seed, P(A>B) was hidden, and the header counted
    # 2 tested pairs while the permutation column was corrected over 3.
    path = store(tmp_path, models(tmp_path, {"a": [10.0] * 5, "b": [9.0] * 5, "c": [10.0, 9, 10, 10, 9]},
                                  metric="classes_covered"))
    code, out, _ = run(capsys, "--results", str(path), "--metric", "classes_covered", "--format", "json")
    assert code == 0
    (block,) = json.loads(out)
    pairs = {(Path(p["group_a"]).parent.name, Path(p["group_b"]).parent.name): p for p in block["pairs"]}
    ab = pairs[("a", "b")]
    assert ab["test"] == "permutation" and ab["permutation_p"] == pytest.approx(2 / 252)
    assert ab["permutation_p_holm"] == pytest.approx(3 * 2 / 252) and ab["verdict"] == "A better"
    assert ab["prob_improvement"] == 1.0 and "Welch's t is undefined" in ab["note"]
    ranks = {Path(g).parent.name: r for g, r in block["ranks"].items()}
    assert ranks["a"] == 1 and ranks["b"] == 2
    code, out, _ = run(capsys, "--results", str(path), "--metric", "classes_covered")
    assert "Holm-corrected within this table (Welch over 2 pairs, permutation over 3)" in out


def test_the_two_group_view_says_its_test_is_uncorrected_and_shows_each_seeds_epoch_and_notes(tmp_path, capsys):
    # Its verdict could differ from the all-pairs table's (Holm) for the same pair without saying why; a seed whose
    # final checkpoint failed was shown with an earlier epoch's value (now left out, and the note shown here).
    from dataclasses import replace

    rows = models(tmp_path, {"a": A, "b": B, "c": C})
    failed = row(tmp_path, "a", 3, 1.0)
    rows = [r for r in rows if r.source_path != failed.source_path]
    rows.append(replace(failed, value=None, status="failed", error="generator output holds NaN"))
    code, out, _ = run(capsys, "--results", str(store(tmp_path, rows)), "a", "b")
    assert code == 0
    assert "A: a/fashion-mnist: 3 seed(s), mean" in out and "(epochs 10, 10, 10)" in out
    assert "A: seed 3: its final checkpoint (epoch 10) failed (generator output holds NaN); left out" in out
    assert "this pair alone, not corrected for the table's other 2 pairs" in out
