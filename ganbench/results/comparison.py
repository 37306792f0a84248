"""Comparisons between leaderboard rows: which model groups differ, how sure we are, and where the spread comes from.

Built on `leaderboard.build_tables`, so a comparison uses exactly the per-seed values a leaderboard row aggregates
(same checkpoint rule, same table protocol); the statistics are `ganbench.compare`'s. Owns:

- `compare_tables`: every pair of groups in one table and metric, Holm-corrected over the table's tested pairs,
  and ranks that follow the corrected tests (1 + the number of groups significantly better).
- `variance_splits`: for each group, training-seed versus sampling variance, from the *sibling* tables of a table:
  the same protocol apart from its sampling seed (`ganbench eval --seed S` changes the protocol id on purpose, so
  these rows are gathered here deliberately, keyed by the checkpoint they score).
- The formats: `pairs_frame` (comparison.csv and `ganbench compare --format csv`), Markdown, plain text, JSON
  records and the index.html section, and `write_comparison`, the hook `ganbench report` calls.

A pair that cannot be tested (a group with one seed, checkpoints chosen on different references) keeps its row
with a note saying why; refusing a whole request is the caller's choice (`ganbench compare GROUP_A GROUP_B`).
"""

from __future__ import annotations

import hashlib
import html
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ganbench import compare
from ganbench.errors import ConfigError
from ganbench.metrics.registry import METRICS
from ganbench.results.leaderboard import PROTOCOL_FIELDS, RULES, Row, Table, build_tables, direction, markdown_cell

if TYPE_CHECKING:
    import pandas as pd

TESTS = ("welch", "permutation")
ALPHA = 0.05
POWER = 0.8
PAIR_COLUMNS = ("protocol_id", "rule", "metric", "direction", "group_a", "group_b", "n_a", "n_b", "mean_a", "mean_b",
                "std_a", "std_b", "diff", "diff_ci_low", "diff_ci_high", "welch_t", "welch_df", "welch_p", "welch_p_holm",
                "permutation_p", "permutation_p_holm", "permutation_exact", "permutation_min_p", "prob_improvement",
                "prob_improvement_ci_low", "prob_improvement_ci_high", "seeds_needed", "test", "alpha", "verdict",
                "rank_a", "rank_b", "note")
ONE_SEED = "one seed: no spread over training seeds to test against; train more (ganbench train --seeds 0,1,2)"


@dataclass
class Pair:
    """Group A against group B on one metric of one table; `diff` is mean A - mean B."""

    protocol_id: str
    rule: str
    metric: str
    direction: str
    group_a: str
    group_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    diff: float
    diff_ci_low: float = math.nan
    diff_ci_high: float = math.nan
    welch_t: float = math.nan
    welch_df: float = math.nan
    welch_p: float = math.nan
    welch_p_holm: float = math.nan
    permutation_p: float = math.nan
    permutation_p_holm: float = math.nan
    permutation_exact: bool | None = None
    permutation_min_p: float = math.nan
    prob_improvement: float = math.nan  # P(a run of A is better than a run of B)
    prob_improvement_ci_low: float = math.nan
    prob_improvement_ci_high: float = math.nan
    seeds_needed: int | None = None  # per model, at alpha and power 0.8; None: not reachable (or not tested)
    test: str = "welch"
    alpha: float = ALPHA
    verdict: str = "not tested"
    rank_a: int | None = None
    rank_b: int | None = None
    note: str = ""

    @property
    def tested(self) -> bool:
        return not math.isnan(self.adjusted_p)

    @property
    def adjusted_p(self) -> float:
        return self.welch_p_holm if self.test == "welch" else self.permutation_p_holm


@dataclass
class TableComparison:
    """All pairs of one (table, metric), Holm-corrected together, with the ranks they support."""

    table: Table
    metric: str
    pairs: list[Pair]
    ranks: dict[str, int | None]  # group -> rank; None when the group could not be tested (one seed)
    splits: dict[str, compare.Components] = field(default_factory=dict)  # group -> variance split, when measured
    sampling_seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class CompareConfig:
    """One `ganbench compare` call: two groups for a detailed comparison, or none for every pair of each table."""

    groups: tuple[str, ...] = ()
    metric: str = "fid"
    rule: str = "final"
    alpha: float = ALPHA
    test: str = "welch"
    select_metric: str = "fid"
    select_on: str | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in (self.metric, self.select_metric) if m not in METRICS]
        if unknown:
            raise ConfigError(f"unknown metric {', '.join(unknown)}; expected one of {', '.join(METRICS)} "
                              "(--metric, --select-metric)")
        if len(self.groups) not in (0, 2):
            raise ConfigError(f"got {len(self.groups)} groups ({' '.join(self.groups)}); give two (GROUP_A GROUP_B) "
                              "for a detailed comparison, or none to compare every pair")
        if self.rule not in RULES:
            raise ConfigError(f"--rule {self.rule}: expected one of {', '.join(RULES)}")
        if self.test not in TESTS:
            raise ConfigError(f"--test {self.test}: expected one of {', '.join(TESTS)}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"--alpha {self.alpha}: expected a level between 0 and 1, e.g. 0.05")


def build_comparisons(frame: pd.DataFrame, cfg: CompareConfig) -> list[TableComparison]:
    """The comparisons `cfg` asks for on a `tidy()` frame; refuses (ConfigError) two groups that share no protocol,
    or whose 'best' checkpoints were chosen on different references."""
    tables = [t for t in build_tables(frame, select_metric=cfg.select_metric, select_on=cfg.select_on)
              if t.rule == cfg.rule and any(cfg.metric in r.metrics for r in t.rows)]
    if not tables:
        raise ConfigError(f"no {cfg.metric} results on a reporting reference under these filters; "
                          "choose another --metric or --protocol, or run `ganbench eval` first")
    if not cfg.groups:
        found = [compare_tables(tables, t, cfg.metric, alpha=cfg.alpha, test=cfg.test) for t in tables
                 if sum(1 for r in t.rows if cfg.metric in r.metrics) >= 2]
        if not found:
            raise ConfigError(f"every {cfg.metric} table holds one model group; nothing to compare "
                              "(evaluate another model under the same protocol)")
        return found
    names = sorted({r.group for t in tables for r in t.rows if cfg.metric in r.metrics})
    a, b = (resolve_group(g, names) for g in cfg.groups)
    if a == b:
        raise ConfigError(f"GROUP_A and GROUP_B are both {a}; give two different model groups")
    common = [t for t in tables if {a, b} <= {r.group for r in t.rows if cfg.metric in r.metrics}]
    if not common:
        def protocols(g):
            return ", ".join(f"{t.protocol_id} ({t.protocol['extractor']}, N {t.protocol['n_generated']}, "
                             f"seed {t.protocol['seed']})" for t in tables if any(r.group == g for r in t.rows))
        raise ConfigError(f"{cfg.groups[0]} and {cfg.groups[1]} share no protocol ({cfg.groups[0]}: {protocols(a)}; "
                          f"{cfg.groups[1]}: {protocols(b)}); evaluate both with the same `ganbench eval` options")
    for t in common:
        ra, rb = (next(r for r in t.rows if r.group == g) for g in (a, b))
        if (ra.selected_on, ra.selection_note) != (rb.selected_on, rb.selection_note):
            raise ConfigError(f"--rule best chose {cfg.groups[0]}'s checkpoints on {_chosen_on(ra)} but "
                              f"{cfg.groups[1]}'s on {_chosen_on(rb)}; evaluate both on the selection reference "
                              "(`ganbench eval`'s default references) or use --rule final")
    return [compare_tables(tables, t, cfg.metric, alpha=cfg.alpha, test=cfg.test, groups=(a, b)) for t in common]


def _chosen_on(row: Row) -> str:
    return row.selected_on + (f" ({row.selection_note})" if row.selection_note else "")


def resolve_group(name: str, groups: list[str]) -> str:
    """The group `name` means: itself, its absolute path, or the one group whose path ends with its parts (with or
    without the dataset folder)."""
    if name in groups:
        return name
    absolute = str(Path(name).expanduser().resolve())
    if absolute in groups:
        return absolute
    wanted = Path(name).parts
    matches = [g for g in groups if wanted and Path(g).parts[-len(wanted):] == wanted]
    if not matches:  # the model's folder without the dataset below it: `lsgan` for OUT/lsgan/fashion-mnist
        matches = [g for g in groups if wanted and Path(g).parts[-len(wanted) - 1:-1] == wanted]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"group {name} is ambiguous: it ends {len(matches)} groups ({', '.join(matches)}); "
                          "give more of its path")
    raise ConfigError(f"no model group {name} with these results; groups: {', '.join(groups)}")


def _rng(*parts: str) -> np.random.Generator:
    """A bootstrap generator fixed by what is compared, so a pair's interval does not depend on the other groups."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little"))


def _std(values: tuple[float, ...]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def compare_rows(table: Table, a: Row, b: Row, metric: str, *, alpha: float = ALPHA, test: str = "welch") -> Pair:
    """The raw (uncorrected) tests of `a` against `b`; `compare_tables` fills in the Holm columns and ranks."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    xa, xb = a.metrics[metric].values, b.metrics[metric].values
    way = direction(metric)
    pair = Pair(table.protocol_id, table.rule, metric, way, a.group, b.group, len(xa), len(xb), float(np.mean(xa)),
                float(np.mean(xb)), _std(xa), _std(xb), float(np.mean(xa) - np.mean(xb)), test=test, alpha=alpha)
    if min(len(xa), len(xb)) < 2:
        pair.note = ONE_SEED.replace("one seed", f"{'A' if len(xa) < 2 else 'B'} has one seed", 1)
        return pair
    if a.selected_on != b.selected_on:
        pair.note = (f"checkpoints chosen on different references ({a.selected_on} vs {b.selected_on}): "
                     "evaluate both on the selection reference, or use --rule final")
        return pair
    w = compare.welch(xa, xb, confidence=1 - alpha)
    rng = _rng(table.protocol_id, table.rule, metric, a.group, b.group)
    perm = compare.permutation_test(xa, xb, rng=rng)
    better = compare.probability_of_improvement(xa, xb, way, rng=rng)
    pair.diff_ci_low, pair.diff_ci_high, pair.welch_t, pair.welch_df, pair.welch_p = w.ci_low, w.ci_high, w.t, w.df, w.p
    pair.permutation_p, pair.permutation_exact, pair.permutation_min_p = perm.p, perm.exact, perm.smallest_p
    pair.prob_improvement, pair.prob_improvement_ci_low, pair.prob_improvement_ci_high = better.p, better.ci_low, better.ci_high
    pair.seeds_needed = compare.seeds_needed(pair.diff, pair.std_a, pair.std_b, alpha=alpha, power=POWER)
    if math.isnan(w.p):  # both groups constant over seeds: the exchangeability test still holds
        pair.test = "permutation"
        pair.note = ("no spread in either group, each giving one value on every seed: Welch's t is undefined, so the "
                     "exact permutation test decides")
    elif test == "permutation" and perm.smallest_p > alpha:
        pair.note = (f"with {len(xa)} and {len(xb)} seeds the permutation test cannot go below p = {perm.smallest_p:.3g}; "
                     "train more seeds")
    return pair


def compare_tables(tables: list[Table], table: Table, metric: str, *, alpha: float = ALPHA, test: str = "welch",
                   groups: tuple[str, ...] = ()) -> TableComparison:
    """Every pair of `table`'s rows (or only `groups`, in that order) on `metric`, Holm-corrected within the table."""
    rows = [r for r in table.rows if metric in r.metrics]
    if groups:
        rows = [next(r for r in rows if r.group == g) for g in groups]
    pairs = [compare_rows(table, a, b, metric, alpha=alpha, test=test) for i, a in enumerate(rows) for b in rows[i + 1:]]
    for name in ("welch_p", "permutation_p"):  # untested pairs have NaN p-values, which Holm leaves out
        for pair, adjusted in zip(pairs, compare.holm([getattr(p, name) for p in pairs]), strict=True):
            setattr(pair, f"{name}_holm", adjusted)
    index = {r.group: i for i, r in enumerate(rows)}
    wins = []
    for pair in pairs:
        if pair.tested and pair.adjusted_p < alpha:
            a_better = (pair.diff < 0) == (pair.direction == "lower")
            winner, loser = (pair.group_a, pair.group_b) if a_better else (pair.group_b, pair.group_a)
            wins.append((index[winner], index[loser]))
            pair.verdict = f"{'A' if a_better else 'B'} better"
        elif pair.tested:
            pair.verdict = "no significant difference"
    untestable = {r.group for r in rows if len(r.metrics[metric].values) < 2}
    ranks = {r.group: (None if r.group in untestable else rank)
             for r, rank in zip(rows, compare.corrected_ranks(len(rows), wins), strict=True)}
    for pair in pairs:
        pair.rank_a, pair.rank_b = ranks[pair.group_a], ranks[pair.group_b]
    seeds, splits = variance_splits(tables, table, metric, [r.group for r in rows])
    return TableComparison(table, metric, pairs, ranks, splits, seeds)


def _without_seed(table: Table) -> tuple:
    return tuple(table.protocol.get(k) for k in PROTOCOL_FIELDS if k != "seed")


def variance_splits(tables: list[Table], table: Table, metric: str,
                    groups: list[str]) -> tuple[tuple[int, ...], dict[str, compare.Components]]:
    """(sampling seeds, group -> variance split) over `table` and its siblings that differ only in the sampling seed.

    A checkpoint is one (training seed, source) the rule chose; its values under the different sampling seeds are
    its within-checkpoint (sampling) spread. Groups without two checkpoints, or without one scored twice, are left
    out. Under the 'best' rule a different sampling seed may choose a different checkpoint; those count separately."""
    siblings = [t for t in tables if t.rule == table.rule and _without_seed(t) == _without_seed(table)]
    seeds = tuple(sorted(int(t.protocol["seed"]) for t in siblings))
    if len(siblings) < 2:
        return seeds, {}
    splits = {}
    for group in groups:
        by_checkpoint: dict[tuple, list[float]] = {}
        for sibling in siblings:
            row = next((r for r in sibling.rows if r.group == group and metric in r.metrics), None)
            if row is None:
                continue
            trained = list(row.sources)  # values follow the seeds that have this metric, in seed order (leaderboard._row)
            if len(trained) != len(row.metrics[metric].values):  # a seed lacks this metric: its checkpoint is unknown
                continue
            for seed, value in zip(trained, row.metrics[metric].values, strict=True):
                by_checkpoint.setdefault((seed, row.sources[seed]), []).append(value)
        values = list(by_checkpoint.values())
        if len(values) >= 2 and any(len(v) > 1 for v in values):
            splits[group] = compare.variance_components(values)
    return seeds, splits


def comparable(tables: list[Table]) -> list[tuple[Table, str]]:
    """The (table, metric) pairs worth a comparison section: 2+ groups with 2+ seeds each."""
    return [(t, m) for t in tables for m in t.metrics
            if sum(1 for r in t.rows if m in r.metrics and len(r.metrics[m].values) >= 2) >= 2]


# -- formats --------------------------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.3e}"


def pairs_frame(comparisons: list[TableComparison]) -> pd.DataFrame:
    """comparison.csv: one row per (protocol, rule, metric, pair); columns fixed (PAIR_COLUMNS)."""
    import pandas as pd

    records = [asdict(p) for c in comparisons for p in c.pairs]
    return pd.DataFrame.from_records(records, columns=list(PAIR_COLUMNS))


def records(comparisons: list[TableComparison]) -> list[dict]:
    """JSON-ready: per (table, metric) its protocol, pairs, ranks and variance splits (NaN as None)."""

    def clean(value):
        if isinstance(value, np.generic):  # protocol fields come out of pandas as numpy scalars
            value = value.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value

    out = []
    for c in comparisons:
        out.append({
            "protocol_id": c.table.protocol_id, "protocol": {k: clean(v) for k, v in c.table.protocol.items()},
            "rule": c.table.rule,
            "rule_text": c.table.rule_text, "metric": c.metric, "direction": direction(c.metric),
            "pairs": [{k: clean(v) for k, v in asdict(p).items()} for p in c.pairs],
            "ranks": c.ranks, "sampling_seeds": list(c.sampling_seeds),
            "variance_splits": {g: {**{k: clean(v) for k, v in asdict(s).items()}, "share_between": clean(s.share_between),
                                    "dominant": s.dominant} for g, s in c.splits.items()},
        })
    return out


def header_lines(c: TableComparison) -> list[str]:
    p, first = c.table.protocol, (c.pairs[0] if c.pairs else None)
    test = first.test if first else "welch"
    alpha = first.alpha if first else ALPHA
    return [
        f"{c.metric} ({direction(c.metric)} is better), protocol {c.table.protocol_id}: {p['extractor']} vs "
        f"{p['reference_name']}, N generated {p['n_generated']}, sampling seed {p['seed']}",
        f"checkpoint rule: {c.table.rule_text}",
        f"diff = mean A - mean B over training seeds [{1 - alpha:.0%} Welch t interval]; p: Welch t and permutation "
        f"(two-sided; exact up to {compare.MAX_EXACT:,} relabellings), {_holm_counts(c)}; "
        f"verdicts and ranks use the {test} test at alpha {alpha:g}; P(A>B): probability that a run of A beats a run "
        f"of B [95% stratified bootstrap]; seeds: per model for power {POWER:g} at this difference and spread "
        "(noncentral t)",
        *_permutation_floor(c, alpha),
    ]


def _holm_counts(c: TableComparison) -> str:
    """Over how many pairs each column was Holm-corrected: Welch leaves out pairs without spread, permutation not."""
    welch = sum(1 for x in c.pairs if not math.isnan(x.welch_p))
    permutation = sum(1 for x in c.pairs if not math.isnan(x.permutation_p))
    if welch == permutation:
        return f"Holm-corrected over this table's {welch} tested pair(s)"
    return f"Holm-corrected within this table (Welch over {welch} pairs, permutation over {permutation})"


def _permutation_floor(c: TableComparison, alpha: float) -> list[str]:
    """A line when no pair can pass the Holm-corrected permutation test whatever the values: too few seeds."""
    tested = [p for p in c.pairs if p.tested]
    if not tested:
        return []
    floor = min(p.permutation_min_p for p in tested)
    corrected = min(1.0, len(tested) * floor)  # Holm's first step
    if corrected <= alpha:
        return []
    seeds = compare.permutation_seeds_for(len(tested), alpha=alpha)
    pairs = f"{len(tested)} pair{'s' if len(tested) > 1 else ''}"
    return [f"the permutation test cannot separate any pair of this table: at these seed counts its p is at least "
            f"{floor:.3g}, {corrected:.3g} after Holm over {pairs}, above alpha {alpha:g}; "
            + (f"{seeds} seeds per model would let it" if seeds is not None else "no seed count would let it")]


def _seeds_cell(p: Pair, words: bool = False) -> str:
    if p.seeds_needed is not None:
        return str(p.seeds_needed)
    if p.diff == 0:  # equal means: there is no difference for more seeds to find
        return "none: the means are equal" if words else "-"
    return f"more than {compare.MAX_SEEDS}" if words else f">{compare.MAX_SEEDS}"


def _pair_cells(p: Pair, names: dict[str, str]) -> list[str]:
    return [names.get(p.group_a, p.group_a), names.get(p.group_b, p.group_b), f"{p.n_a}/{p.n_b}",
            f"{_num(p.diff)} [{_num(p.diff_ci_low)}, {_num(p.diff_ci_high)}]" if p.tested else _num(p.diff),
            _num(p.welch_p, 3), _num(p.welch_p_holm, 3), _num(p.permutation_p, 3), _num(p.permutation_p_holm, 3),
            f"{_num(p.prob_improvement, 3)} [{_num(p.prob_improvement_ci_low, 3)}, {_num(p.prob_improvement_ci_high, 3)}]"
            if p.tested else "-",
            _seeds_cell(p) if p.tested else "-",
            p.verdict + (f" ({p.note})" if p.note else "")]


PAIR_HEAD = ["A", "B", "seeds A/B", "diff [CI]", "p Welch", "p Welch Holm", "p perm", "p perm Holm", "P(A>B) [CI]",
             "seeds needed", "verdict"]
RANK_HEAD = ["model", "seeds", "mean", "std", "rank (corrected tests)"]
SPLIT_HEAD = ["model", "checkpoints", "values", "training-seed var", "sampling var", "share training seeds",
              "dominant", "F test p"]


def _rank_cells(c: TableComparison, names: dict[str, str]) -> list[list[str]]:
    rows = {r.group: r for r in c.table.rows if c.metric in r.metrics}
    sign = 1.0 if direction(c.metric) == "lower" else -1.0

    def order(item: tuple[str, int | None]) -> tuple:  # by rank, then best mean first within a shared rank
        group, rank = item
        mean = sign * rows[group].metrics[c.metric].mean
        return rank is None, rank or 0, math.inf if math.isnan(mean) else mean, group

    body = []
    for group, rank in sorted(c.ranks.items(), key=order):
        a = rows[group].metrics[c.metric]
        body.append([names.get(group, group), str(len(a.values)), _num(a.mean), _num(a.std),
                     str(rank) if rank is not None else "not ranked (one seed)"])
    return body


def _split_cells(c: TableComparison, names: dict[str, str]) -> list[list[str]]:
    return [[names.get(g, g), str(s.n_checkpoints), str(s.n_values), _num(s.between), _num(s.within),
             f"{s.share_between:.0%}" if not math.isnan(s.share_between) else "-", s.dominant, _num(s.p, 3)]
            for g, s in sorted(c.splits.items())]


def _split_title(c: TableComparison) -> str:
    return (f"variance split over sampling seeds {', '.join(map(str, c.sampling_seeds))} "
            "(one-way random effects: training seeds between checkpoints, sampling within one checkpoint)")


def _blocks(c: TableComparison, names: dict[str, str]) -> list[tuple[str, list[str], list[list[str]]]]:
    blocks = [("pairs", PAIR_HEAD, [_pair_cells(p, names) for p in c.pairs]), ("ranks", RANK_HEAD, _rank_cells(c, names))]
    if c.splits:
        blocks.append((_split_title(c), SPLIT_HEAD, _split_cells(c, names)))
    return blocks


def markdown(comparisons: list[TableComparison], names: dict[str, str], title: str = "# ganbench comparison") -> str:
    lines = [title, ""]
    for c in comparisons:
        lines += [f"## {c.metric}, {c.table.rule} checkpoint, protocol `{c.table.protocol_id}`", ""]
        lines += [f"- {line}" for line in header_lines(c)] + [""]
        for label, head, body in _blocks(c, names):
            lines += [f"{label}:", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            lines += ["| " + " | ".join(markdown_cell(cell) for cell in cells) + " |" for cells in body] + [""]
    return "\n".join(lines)


def plain_text(comparisons: list[TableComparison], names: dict[str, str]) -> str:
    out = []
    for c in comparisons:
        lines = header_lines(c)
        for label, head, body in _blocks(c, names):
            widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
            lines += ["", f"{label}:", "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
            lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in body]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def detail_text(c: TableComparison, names: dict[str, str]) -> str:
    """Two groups in words: each group's spread, then every test with what it can and cannot say."""
    (p,) = c.pairs
    rows = {r.group: r for r in c.table.rows if c.metric in r.metrics}
    lines = header_lines(c)[:2]
    for label, group in (("A", p.group_a), ("B", p.group_b)):
        row, agg = rows[group], rows[group].metrics[c.metric]
        epochs = [row.epochs[seed] for seed in row.sources]  # the seeds' chosen checkpoints, in the values' order
        shown = f" (epochs {', '.join('-' if e is None else str(e) for e in epochs)})" if len(epochs) == len(agg.values) else ""
        lines.append(f"{label}: {names.get(group, group)}: {len(agg.values)} seed(s), mean {_num(agg.mean)}, "
                     f"std {_num(agg.std)}, values {', '.join(_num(v) for v in agg.values)}{shown}")
        lines += [f"{label}: {note}" for note in row.notes]
    testable = sum(1 for r in c.table.rows if c.metric in r.metrics and len(r.metrics[c.metric].values) >= 2)
    others = testable * (testable - 1) // 2 - 1
    uncorrected = (f"; this pair alone, not corrected for the table's other {others} pair{'s' if others > 1 else ''}: "
                   "`ganbench compare` without groups corrects over all of them") if others > 0 else ""
    if not p.tested:
        lines.append(f"no test: {p.note}")
    else:
        lines += [
            f"difference of means A - B: {_num(p.diff)} [{1 - p.alpha:.0%} Welch t interval {_num(p.diff_ci_low)}, "
            f"{_num(p.diff_ci_high)}], t = {_num(p.welch_t, 3)}, df = {_num(p.welch_df, 3)}, p = {_num(p.welch_p, 3)}",
            f"{'exact' if p.permutation_exact else 'random'} permutation test over training seeds: p = "
            f"{_num(p.permutation_p, 3)} (the smallest p these seed counts allow: {_num(p.permutation_min_p, 3)})",
            f"probability of improvement P(a run of A beats a run of B) = {_num(p.prob_improvement, 3)} "
            f"[95% stratified bootstrap {_num(p.prob_improvement_ci_low, 3)}, {_num(p.prob_improvement_ci_high, 3)}]",
            f"verdict ({p.test} test, alpha {p.alpha:g}{uncorrected}): {p.verdict}" + (f"; {p.note}" if p.note else ""),
            "seeds per model to separate them at this difference and spread (alpha "
            f"{p.alpha:g}, power {POWER:g}, two-sample t, noncentral t): "
            + _seeds_cell(p, words=True),
        ]
    if c.splits:
        lines.append(_split_title(c) + ":")
        lines += [f"  {cells[0]}: training-seed var {cells[3]}, sampling var {cells[4]} ({cells[5]} training seeds); "
                  f"dominant: {cells[6]}" for cells in _split_cells(c, names)]
    elif len(c.sampling_seeds) < 2:
        lines.append(f"variance split: every checkpoint was scored under one sampling seed ({c.sampling_seeds[0]}); score "
                     "them under more (ganbench eval --seed S) to split training-seed from sampling variance")
    else:
        lines.append("variance split: needs 2+ checkpoints of a group, one scored under 2+ sampling seeds "
                     f"({', '.join(map(str, c.sampling_seeds))})")
    return "\n".join(lines)


def html_section(comparisons: list[TableComparison], names: dict[str, str]) -> str:
    esc = html.escape
    parts = ["<h1>Comparisons</h1>", "<p>Is one model really better than another? Pairwise tests over training seeds, "
             "Holm-corrected per table. Files: <a href='comparison.md'>comparison.md</a>, "
             "<a href='comparison.csv'>comparison.csv</a>.</p>"]
    for c in comparisons:
        parts.append(f"<h2>{esc(c.metric)}, {esc(c.table.rule)} checkpoint &mdash; protocol "
                     f"<code>{esc(c.table.protocol_id)}</code></h2>")
        parts += [f"<p class='hdr'>{esc(line)}</p>" for line in header_lines(c)]
        for label, head, body in _blocks(c, names):
            parts.append(f"<p class='hdr'>{esc(label)}:</p><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head)
                         + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>" for cells in body]
            parts.append("</table>")
    return "\n".join(parts)


def write_comparison(folder: Path, tables: list[Table], names: dict[str, str], *, alpha: float = ALPHA) -> str:
    """`ganbench report`'s hook: comparison.md and comparison.csv in `folder` and the index.html section, when some
    table has 2+ groups with 2+ seeds; otherwise nothing is written and the section is empty."""
    comparisons = [compare_tables(tables, t, m, alpha=alpha) for t, m in comparable(tables)]
    if not comparisons:
        return ""
    pairs_frame(comparisons).to_csv(folder / "comparison.csv", index=False)
    (folder / "comparison.md").write_text(markdown(comparisons, names) + "\n")
    return html_section(comparisons, names)
