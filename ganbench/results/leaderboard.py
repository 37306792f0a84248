"""Leaderboards from stored results: model groups, honest checkpoint selection, mean/std/CI over seeds, ranks.

Pure functions on the long DataFrame that `ResultsStore.to_dataframe()` returns; no files, no printing.

- A *model group* is one training configuration: a zoo model's run folder (`OUT/<model>/<dataset>`, such as
  `OUT/baseline/<dataset>`, whose `seed<k>` sub-folders are its seeds), or a single source (a user generator's
  state dict, an image folder, an .npz) with one "seed".
- A *table protocol* is everything that makes numbers comparable except the metric's own options:
  extractor, weights, preprocessing, N generated, the reporting reference and N reference, the sampling
  seed and ganbench's metric-protocol version. Numbers of different table protocols are never ranked together.
- *final* is each seed's last evaluated checkpoint. *best* is each seed's checkpoint with the best
  selection metric (default FID) on the *selection* reference (default `DATASET:train:10000`), reported
  with its numbers on the reporting reference. Without selection results for a group, the choice falls back
  to the reporting reference itself and the row says so (`selected_on` = the reported data, optimistic).
- Ranks: a row's rank is 1 + the number of rows whose 95% interval is entirely better than its own, so
  rows whose intervals overlap share a rank and no order is claimed that the data cannot support.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ganbench.errors import counted, single_line
from ganbench.metrics.registry import METRICS
from ganbench.protocol import DATASETS, SELECTION_SUBSET_SEED, SELECTION_SUBSET_SIZE, selection_reference
from ganbench.train.zoo import MODELS  # the model names (plain data, no torch)

if TYPE_CHECKING:
    import pandas as pd

# The fields of a table protocol, in header order.
PROTOCOL_FIELDS = ("extractor", "weights_sha256", "preprocessing", "n_generated", "reference_name", "reference_split",
                   "n_reference", "seed", "metric_protocol_version")
RULES = ("final", "best")
_SEED_DIR = re.compile(r"seed(\d+)$")

# Derived columns `tidy()` adds to the store's long format, in order (the store's own columns come first).
DERIVED_COLUMNS = ("group", "group_kind", "protocol_id", "reference_role", "metric_protocol_version")


def metric_order(names) -> list[str]:
    """Registry order first (fid, is, kid, ...), then any unknown names alphabetically."""
    known = [m for m in METRICS if m in set(names)]
    return known + sorted(set(names) - set(known))


def direction(metric: str) -> str:
    """"lower" or "higher" is better, from the metric registry; a metric it does not know ranks as "lower"."""
    return METRICS[metric].direction if metric in METRICS else "lower"


def markdown_cell(text: str) -> str:
    """`text` as one Markdown table cell: '|' escaped, line breaks written as \\n (a raw one would end the row)."""
    return single_line(text.replace("|", "\\|"))


def group_of(source_path: str, run_kind: str | None, run_dataset: str | None) -> str:
    """The model group of a source: a zoo model's run folder above its `seed<k>` folders (the run kind is the model's
    name), else the source itself."""
    parts = source_path.replace("\\", "/").split("/")
    if run_kind in MODELS and len(parts) >= 3 and _SEED_DIR.fullmatch(parts[-2]):
        return "/".join(parts[:-2])
    return source_path


def protocol_id(fields: dict) -> str:
    """A short, stable name for a table protocol (first 10 hex digits of the sha256 of its canonical JSON)."""
    text = json.dumps({k: fields.get(k) for k in PROTOCOL_FIELDS}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """The store's long format plus DERIVED_COLUMNS: one row per (source, protocol, metric), schema fixed."""
    import pandas as pd

    out = frame.copy()
    out["metric_protocol_version"] = pd.Series(
        [json.loads(text).get("metric_protocol_version") if isinstance(text, str) else None for text in out["protocol_json"]],
        index=out.index, dtype="Int64",
    )
    out["group"] = pd.Series(
        [group_of(str(p), _na(k), _na(d)) for p, k, d in zip(out["source_path"], out["run_kind"], out["run_dataset"],
                                                             strict=True)],
        index=out.index, dtype="string",
    )
    out["group_kind"] = out["run_kind"].fillna("source").astype("string")
    out["protocol_id"] = pd.Series([protocol_id(row) for row in _records(out, PROTOCOL_FIELDS)], index=out.index,
                                   dtype="string")
    out["reference_role"] = pd.Series(
        [_role(_na(ref), _na(ds)) for ref, ds in zip(out["reference_name"], out["run_dataset"], strict=True)],
        index=out.index, dtype="string",
    )
    return out[[*frame.columns, *DERIVED_COLUMNS]]


def _role(reference: str | None, dataset: str | None) -> str:
    return "selection" if dataset is not None and reference == selection_reference(dataset) else "reporting"


def by_seed(frame: pd.DataFrame, missing: object = None):
    """`frame` grouped by run seed, in seed order; rows without a seed (folders, npz files) form the group `missing`."""
    seeds = frame["run_seed"].astype("object").where(frame["run_seed"].notna(), missing)
    return frame.groupby(seeds, dropna=False, sort=True)


def _na(value):
    import pandas as pd

    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else value


def _records(frame: pd.DataFrame, columns) -> list[dict]:
    return [{c: _na(v) for c, v in zip(columns, values, strict=True)} for values in frame[list(columns)].itertuples(index=False)]


@dataclass(frozen=True)
class Aggregate:
    """One metric of one leaderboard row: its values over seeds and what they support."""

    values: tuple[float, ...]
    mean: float
    std: float  # sample std over seeds (ddof=1); NaN with one seed
    ci_low: float  # 95% interval of the mean: Student t over seeds; with one seed, its stored interval if any
    ci_high: float
    rank: int = 0
    tied: bool = False


def aggregate(values, stored_ci: tuple[float, float] | None = None) -> Aggregate:
    """Mean, sample std and a 95% t interval of the mean over seeds.

    With one seed there is no spread to estimate: the interval is the stored one (a bootstrap interval)
    when given, else NaN, and ranking then treats the value as a point."""
    from scipy import stats

    xs = tuple(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("aggregate needs at least one value")
    mean = math.fsum(xs) / n
    if n == 1:
        low, high = stored_ci if stored_ci is not None else (math.nan, math.nan)
        return Aggregate(xs, mean, math.nan, low, high)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Aggregate(xs, mean, std, mean - half, mean + half)


def interval_ranks(aggregates: list[Aggregate], direction: str) -> list[tuple[int, bool]]:
    """(rank, tied) per row: rank = 1 + rows whose interval is entirely better; tied when another row shares it."""

    def bounds(a: Aggregate) -> tuple[float, float]:
        return (a.mean, a.mean) if math.isnan(a.ci_low) else (a.ci_low, a.ci_high)

    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    ranks = []
    for a in aggregates:
        low, high = bounds(a)
        if direction == "lower":
            better = sum(1 for b in aggregates if bounds(b)[1] < low)
        else:
            better = sum(1 for b in aggregates if bounds(b)[0] > high)
        ranks.append(1 + better)
    return [(r, ranks.count(r) > 1) for r in ranks]


@dataclass
class Row:
    """One leaderboard row: a model group under one checkpoint rule."""

    group: str
    group_kind: str
    dataset: str | None
    rule: str
    selected_on: str  # the reference the checkpoint was chosen on ("" for final)
    selection_note: str  # "" or why this choice is optimistic
    epochs: dict[int | None, int | None]  # seed -> epoch of the chosen checkpoint
    sources: dict[int | None, str]  # seed -> source path
    metrics: dict[str, Aggregate] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # flags in words, e.g. "copies: AuthPct 0.12" (results.neighbours)

    @property
    def n_seeds(self) -> int:
        return len(self.epochs)


@dataclass
class Table:
    """One ranked table: rows of one table protocol under one checkpoint rule."""

    protocol_id: str
    protocol: dict
    rule: str
    rule_text: str
    ganbench_versions: tuple[str, ...]
    metrics: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # header lines beyond the protocol, e.g. where memorization columns come from


def _protocol_order(reporting: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Protocols by extractor, then the one covering the most checkpoints first (a run scored at every epoch under
    one sampling seed, its final checkpoints again under another: the first is the main table), then by id."""
    parts = list(reporting.groupby("protocol_id", sort=True))
    return sorted(parts, key=lambda kv: (str(kv[1]["extractor"].iloc[0]), -kv[1]["source_sha256"].nunique(), kv[0]))


def build_tables(frame: pd.DataFrame, *, select_metric: str = "fid", select_on: str | None = None) -> list[Table]:
    """The leaderboards of a `tidy()` frame: per reporting protocol, a 'final' and a 'best' table.

    `select_on` overrides the selection reference (default: `selection_reference(dataset)` per group)."""
    ok, superseded, failed = _latest_content(frame)

    def reported(rows: pd.DataFrame) -> pd.DataFrame:
        return rows[rows["reference_role"] == "reporting"] if select_on is None else rows[rows["reference_name"] != select_on]

    reporting, failed = reported(ok), reported(failed)
    tables = []
    for pid, part in _protocol_order(reporting):
        protocol = _records(part.head(1), PROTOCOL_FIELDS)[0]
        metrics = metric_order(part["metric"].unique())
        mine = failed[failed["protocol_id"] == pid]
        for rule in RULES:
            rows = [row for group, gpart in part.groupby("group", sort=True)
                    if (row := _row(str(group), gpart, ok, rule, select_metric, select_on, protocol,
                                    mine[mine["group"] == group])) is not None]
            for metric in metrics:
                ranked = [r for r in rows if metric in r.metrics]
                aggs = [r.metrics[metric] for r in ranked]
                for r, (rank, tied) in zip(ranked, interval_ranks(aggs, direction(metric)), strict=True):
                    a = r.metrics[metric]
                    r.metrics[metric] = Aggregate(a.values, a.mean, a.std, a.ci_low, a.ci_high, rank, tied)
            versions = tuple(sorted(set(part["ganbench_version"].dropna().astype(str))))
            tables.append(Table(str(pid), protocol, rule, _rule_text(rule, select_metric, select_on, protocol), versions,
                                metrics, rows))
            if dropped := superseded.get(str(pid)):
                tables[-1].notes.append(
                    f"{counted(dropped, 'source')} {'was' if dropped == 1 else 'were'} scored again with other content "
                    "(a file or folder rewritten): only the latest content of each is reported; results.csv keeps "
                    "every row")
    return tables


def _latest_content(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """The successful rows of each source path's most recently scored content (failed or not), per protocol id
    how many paths lost older content (a file or folder rewritten and scored again no longer holds what its older
    rows measured), and the failed rows of the latest content."""
    newest = frame.sort_values("created_at").groupby("source_path", sort=False)["source_sha256"].last()
    current = frame["source_sha256"] == frame["source_path"].map(newest)
    ok = frame["status"] == "ok"
    stale = frame[ok & ~current]
    superseded = {str(pid): int(part["source_path"].nunique()) for pid, part in stale.groupby("protocol_id")}
    return frame[ok & current], superseded, frame[~ok & current]


def _rule_text(rule: str, select_metric: str, select_on: str | None, protocol: dict) -> str:
    if rule == "final":
        return "final: each seed's last evaluated checkpoint"
    extreme = "lowest" if direction(select_metric) == "lower" else "highest"
    dataset = str(protocol["reference_name"]).partition(":")[0]  # the reported split's dataset names the subset
    where = select_on or (f"{selection_reference(dataset if dataset in DATASETS else 'DATASET')} (a fixed "
                          f"{SELECTION_SUBSET_SIZE:,}-image training subset, seed {SELECTION_SUBSET_SEED})")
    return (f"best: each seed's checkpoint with the {extreme} {select_metric} on {where}, "
            f"reported on {protocol['reference_name']}")


def _row(group: str, part: pd.DataFrame, ok: pd.DataFrame, rule: str, select_metric: str, select_on: str | None,
         protocol: dict, failed: pd.DataFrame) -> Row | None:
    """One group's row: pick a checkpoint per seed by `rule`, then aggregate every metric over seeds.

    `failed`: the group's failed rows under this protocol. A seed whose last checkpoint failed altogether (no
    successful row: NaN samples from a run that diverged) has no final value and is left out with a note, rather
    than reported with an earlier epoch's number."""
    first = part.iloc[0]
    dataset = _na(first["run_dataset"])
    chosen: dict[int | None, str] = {}  # seed -> source_sha256
    epochs: dict[int | None, int | None] = {}
    sources: dict[int | None, str] = {}
    selected_on, note, notes = "", "", []
    if rule == "best":
        reference = select_on or (selection_reference(dataset) if dataset else None)
        candidates = _selection_candidates(ok, group, protocol, reference, select_metric)
        if candidates.empty:
            reference = protocol["reference_name"]
            candidates = part[part["metric"] == select_metric]
            note = "selected on the reported data (optimistic)"
        if candidates.empty:
            return None
        selected_on = reference
        for seed, seed_part in by_seed(candidates):
            ordered = seed_part.sort_values(["value", "run_epoch"], ascending=[direction(select_metric) == "lower", True])
            best = ordered.iloc[0]
            chosen[_na(seed)] = str(best["source_sha256"])
    else:
        for seed, seed_part in by_seed(part):
            last = seed_part.sort_values(["run_epoch", "created_at"], na_position="first").iloc[-1]
            chosen[_na(seed)] = str(last["source_sha256"])
        lost = _failed_finals(part, failed)
        for seed in lost:
            chosen.pop(seed, None)
        notes = [f"seed {seed}: its final checkpoint (epoch {epoch}) failed ({error}); left out, not replaced by an "
                 "earlier one" for seed, (epoch, error) in sorted(lost.items())]
    values: dict[str, list[tuple[float, float | None, float | None]]] = {}
    for seed, sha in chosen.items():
        rows = part[part["source_sha256"] == sha]
        if rows.empty:  # selected on a checkpoint that was never scored on the reporting reference
            continue
        epochs[seed] = _na(rows.iloc[0]["run_epoch"])
        sources[seed] = str(rows.iloc[0]["source_path"])
        for _, r in rows.iterrows():
            values.setdefault(str(r["metric"]), []).append((float(r["value"]), _na(r["ci_low"]), _na(r["ci_high"])))
    if not epochs and not notes:  # every seed's final checkpoint failed: the row stays, empty, with the notes
        return None
    row = Row(group, str(first["group_kind"]), dataset, rule, selected_on, note, epochs, sources, notes=notes)
    for metric in metric_order(values):
        triples = values[metric]
        stored = (triples[0][1], triples[0][2]) if len(triples) == 1 and triples[0][1] is not None else None
        row.metrics[metric] = aggregate([t[0] for t in triples], stored)
    return row


def _failed_finals(part: pd.DataFrame, failed: pd.DataFrame) -> dict[int, tuple[int, str]]:
    """seed -> (epoch, error) for each seed whose latest checkpoint has failed rows and no successful one."""
    lost = {}
    scored = set(part["source_sha256"])
    for seed, seed_failed in by_seed(failed[failed["run_epoch"].notna() & failed["run_seed"].notna()]):
        unscored = seed_failed[~seed_failed["source_sha256"].isin(scored)]
        if unscored.empty:
            continue
        last = unscored.sort_values(["run_epoch", "created_at"]).iloc[-1]
        mine = part[part["run_seed"] == seed]
        if mine.empty or int(last["run_epoch"]) > int(mine["run_epoch"].max()):
            lost[int(seed)] = (int(last["run_epoch"]), str(last["error"]))
    return lost


def _selection_candidates(ok: pd.DataFrame, group: str, protocol: dict, reference: str | None,
                          select_metric: str) -> pd.DataFrame:
    """The group's selection-metric rows on `reference`, under the table protocol's extractor and sample counts."""
    if reference is None:
        return ok.iloc[0:0]
    same = (ok["group"] == group) & (ok["reference_name"] == reference) & (ok["metric"] == select_metric)
    for name in ("extractor", "weights_sha256", "preprocessing", "n_generated", "seed", "metric_protocol_version"):
        same &= ok[name] == protocol[name]
    return ok[same]
