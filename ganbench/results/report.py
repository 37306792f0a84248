"""`ganbench report`'s files: results.csv, leaderboard.csv/.md, curves, sample grids and index.html.

Everything is written into a temporary folder beside `--out` and moved into place at the end, so a
failure leaves the previous report (or nothing) and never a half-written one.

Moving into place replaces `--out` as a whole, so it is allowed only where nothing of the user's can be lost:
`--out` must be new, an empty folder, or a previous report holding nothing the report did not write. Every
report carries a `.ganbench-report` marker listing its files; a folder without one is left alone, except a
report from before the marker (see `_files_of_previous_report`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ganbench import __version__
from ganbench.atomic import make_temporary_dir, put_back_moved_aside, remove_stale_temporaries, replace_dir
from ganbench.errors import ConfigError, ResultsStoreError
from ganbench.metrics.registry import METRICS
from ganbench.results import neighbours
from ganbench.results.leaderboard import (
    PROTOCOL_FIELDS,
    Aggregate,
    Row,
    Table,
    build_tables,
    by_seed,
    direction,
    markdown_cell,
    metric_order,
    tidy,
)
from ganbench.results.schema import COLUMNS
from ganbench.results.store import ResultsStore

if TYPE_CHECKING:
    import pandas as pd

REPORT_FILES = ("results.csv", "leaderboard.csv", "leaderboard.md", "index.html")
REPORT_MARKER = ".ganbench-report"  # JSON: {"format": REPORT_FORMAT, "version": 1, "ganbench": ..., "files": [...]}
REPORT_FORMAT = "ganbench-report"
_INDEX_TITLE = "<title>ganbench report</title>"
# leaderboard.csv: fixed leading columns, then per metric (registry order) these suffixes.
LEADERBOARD_COLUMNS = ("protocol_id", "rule", "group", "group_kind", "dataset", "config", "n_seeds", "epochs",
                       "selected_on", "selection_note", *PROTOCOL_FIELDS, "ganbench_versions", "flags")
METRIC_SUFFIXES = ("mean", "std", "ci_low", "ci_high", "n", "rank", "tied")


@dataclass(frozen=True)
class ReportConfig:
    """One `ganbench report` call."""

    results: str = "results/ganbench.sqlite"
    out: str = "reports"
    datasets: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()  # protocol ids (or prefixes) or extractor names
    select_metric: str | None = None  # None: fid, and a store without fid still reports its 'final' tables
    select_on: str | None = None
    plots: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in (*self.metrics, self.select_metric or "fid") if m not in METRICS]
        if unknown:
            raise ConfigError(f"unknown metric {', '.join(unknown)}; expected one of {', '.join(METRICS)} "
                              "(--metric, --select-metric)")


def load_results(path: str | Path) -> pd.DataFrame:
    """The store as a tidy frame; a missing, foreign, newer or empty store is a one-line error."""
    import numpy as np

    with ResultsStore(path, read_only=True) as store:
        frame = store.to_dataframe()
    if frame.empty:
        raise ResultsStoreError(f"{path} holds no results yet; run `ganbench eval CHECKPOINTS --results {path}` first")
    # eval stores only finite values; one written by hand or by another tool is a failure, not a number to average
    infinite = (frame["status"] == "ok") & ~np.isfinite(frame["value"].astype(float))
    frame.loc[infinite, "status"] = "failed"
    frame.loc[infinite, "error"] = "the stored value is not finite (written outside ganbench eval)"
    return tidy(frame)


def filter_results(frame: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Apply --dataset and --protocol; an empty result is an error naming what exists instead."""
    out = frame
    if cfg.datasets:
        out = out[out["run_dataset"].isin(cfg.datasets)]
        if out.empty:
            have = ", ".join(sorted(set(frame["run_dataset"].dropna()))) or "none"
            raise ConfigError(f"--dataset {','.join(cfg.datasets)} matches no results; datasets in the store: {have}")
    if cfg.protocols:
        keep = out["extractor"].isin(cfg.protocols)
        for wanted in cfg.protocols:
            keep |= out["protocol_id"].str.startswith(wanted)
        matched = out[keep.fillna(False).astype(bool)]
        if matched.empty:
            have = ", ".join(sorted(f"{p} ({e})" for p, e in set(zip(out["protocol_id"], out["extractor"], strict=True))))
            raise ConfigError(f"--protocol {','.join(cfg.protocols)} matches no results; protocols: {have}")
        # keep the selection rows of the groups and extractors that matched, so best checkpoints can still be chosen
        out = out[keep.fillna(False).astype(bool) | (out["group"].isin(matched["group"]) &
                                                     out["extractor"].isin(matched["extractor"]))]
    if cfg.select_on is not None and not (out["reference_name"] == cfg.select_on).any():
        have = ", ".join(sorted(set(out["reference_name"].dropna()))) or "none"
        raise ConfigError(f"--select-on {cfg.select_on} matches no results; references in the store: {have}")
    if cfg.select_metric is not None and not (out["metric"] == cfg.select_metric).any():
        raise ConfigError(f"--select-metric {cfg.select_metric} matches no results, so no best checkpoint can be chosen; "
                          f"metrics in the store: {', '.join(metric_order(out['metric'].unique()))}")
    if cfg.metrics and not out["metric"].isin(cfg.metrics).any():
        raise ConfigError(f"--metric {','.join(cfg.metrics)} matches no results; metrics in the store: "
                          f"{', '.join(metric_order(out['metric'].unique()))}")
    return out


def make_tables(frame: pd.DataFrame, cfg: ReportConfig) -> list[Table]:
    tables = build_tables(frame, select_metric=cfg.select_metric or "fid", select_on=cfg.select_on)
    neighbours.add_memorization(tables, frame)  # training-split columns, the generalization gap, copy flags
    if cfg.metrics:
        for table in tables:
            table.metrics = [m for m in table.metrics if m in cfg.metrics or m in neighbours.GAP]
        tables = [t for t in tables if t.metrics]
    tables = [t for t in tables if t.rows]
    if not tables:
        raise ConfigError("no successful results on a reporting reference match these filters; "
                          "run `ganbench eval` (its default references include DATASET:test) or relax the filters")
    return tables


# -- leaderboard formats -------------------------------------------------------------------------------------------


def leaderboard_frame(tables: list[Table], configs: dict[str, str]) -> pd.DataFrame:
    """leaderboard.csv: one row per (table, group); the column set depends only on the metrics in the registry."""
    import pandas as pd

    metrics = metric_order({m for t in tables for m in t.metrics} | set(METRICS) | set(neighbours.COLUMNS))
    columns = [*LEADERBOARD_COLUMNS, *(f"{m}_{s}" for m in metrics for s in METRIC_SUFFIXES)]
    records = []
    for table in tables:
        for row in table.rows:
            record = {"protocol_id": table.protocol_id, "rule": table.rule, "group": row.group,
                      "group_kind": row.group_kind, "dataset": row.dataset, "config": configs.get(row.group, ""),
                      "n_seeds": row.n_seeds, "epochs": _epochs(row), "selected_on": row.selected_on,
                      "selection_note": row.selection_note, **table.protocol,
                      "ganbench_versions": ",".join(table.ganbench_versions), "flags": "; ".join(row.notes)}
            for m in table.metrics:
                a = row.metrics.get(m)
                if a is not None:
                    record.update({f"{m}_mean": a.mean, f"{m}_std": a.std, f"{m}_ci_low": a.ci_low,
                                   f"{m}_ci_high": a.ci_high, f"{m}_n": len(a.values), f"{m}_rank": a.rank,
                                   f"{m}_tied": a.tied})
            records.append(record)
    return pd.DataFrame.from_records(records, columns=columns)


def _epochs(row: Row) -> str:
    return ",".join("-" if e is None else str(e) for _, e in sorted(row.epochs.items(), key=lambda kv: (kv[0] is None,
                                                                                                          kv[0] or 0)))


def format_value(a: Aggregate | None) -> str:
    """'12.3 ± 0.45 [11.9, 12.8] #1=': mean ± std over seeds, the 95% interval, the rank (= marks a tie)."""
    if a is None:
        return ""
    text = _num(a.mean)
    if not math.isnan(a.std):
        text += f" ± {_num(a.std)}"
    if not math.isnan(a.ci_low):
        text += f" [{_num(a.ci_low)}, {_num(a.ci_high)}]"
    return f"{text} #{a.rank}{'=' if a.tied else ''}"


def _num(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def table_header(table: Table) -> list[str]:
    """The lines stating a table's protocol and checkpoint rule."""
    p = table.protocol
    return [
        f"protocol {table.protocol_id}: extractor {p['extractor']} (weights sha256 {str(p['weights_sha256'])[:12]}), "
        f"preprocessing {p['preprocessing']}, N generated {p['n_generated']}, reference {p['reference_name']} "
        f"(split {p['reference_split']}, N reference {p['n_reference']}), sampling seed {p['seed']}, "
        f"metric protocol v{p['metric_protocol_version']}, ganbench {', '.join(table.ganbench_versions)}",
        f"checkpoint rule: {table.rule_text}",
        "cells: mean ± std over seeds [95% t interval of the mean] #rank; rows whose intervals overlap share a rank (=); "
        + ", ".join(f"{m} {direction(m)} is better" for m in table.metrics if m in METRICS),
        *table.notes,
    ]


def display_names(tables: list[Table]) -> dict[str, str]:
    """group -> the shortest trailing part of its path that no other group in the report ends with.

    Tables name a model by this rather than by its absolute path, which says more about the machine that
    evaluated it than about the model (results.csv and leaderboard.csv keep the full paths). A zoo run's group
    `OUT/<model>/<dataset>` keeps at least `<model>/<dataset>`, so every model of a zoo is named alike.
    """
    groups = sorted({row.group: row.group_kind for t in tables for row in t.rows}.items())
    parts = {group: Path(group).parts for group, _ in groups}
    names = {}
    for group, kind in groups:
        own = parts[group]
        keep = min(len(own), 2 if len(own) >= 2 and own[-2] == kind else 1)
        while keep < len(own) and any(o != group and parts[o][-keep:] == own[-keep:] for o in parts):
            keep += 1
        names[group] = str(Path(*own[-keep:])) if keep < len(own) else group
    return names


def _model_label(row: Row, name: str) -> str:
    """A run's `<model>/<dataset>` name says its kind and dataset already; other sources are prefixed with both."""
    if row.dataset and Path(name).parts[-2:] == (row.group_kind, row.dataset):
        return name
    return f"{row.group_kind} {row.dataset or ''} {name}".strip()


def _display_rows(table: Table, configs: dict[str, str], names: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    flags = any(row.notes for row in table.rows)
    head = ["model", "seeds", "epoch per seed", *(["selected on"] if table.rule == "best" else []), *table.metrics,
            *(["flags"] if flags else [])]
    body = []
    for row in table.rows:
        label = _model_label(row, names.get(row.group, row.group))
        if configs.get(row.group):
            label += f" ({configs[row.group]})"
        selected = [row.selected_on + (f" - {row.selection_note}" if row.selection_note else "")] if table.rule == "best" else []
        body.append([label, str(row.n_seeds), _epochs(row), *selected, *(format_value(row.metrics.get(m))
                                                                          for m in table.metrics),
                     *(["; ".join(row.notes)] if flags else [])])
    return head, body


def markdown(tables: list[Table], configs: dict[str, str]) -> str:
    lines = ["# ganbench leaderboard", "",
             "Regenerate with `ganbench report`; every table compares one protocol only.", ""]
    names = display_names(tables)
    for table in tables:
        lines += [f"## {table.rule} checkpoint, protocol `{table.protocol_id}`", ""]
        lines += [f"- {line}" for line in table_header(table)] + [""]
        head, body = _display_rows(table, configs, names)
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(markdown_cell(cell) for cell in cells) + " |" for cells in body]
        lines.append("")
    return "\n".join(lines)


def plain_text(tables: list[Table], configs: dict[str, str]) -> str:
    blocks, names = [], display_names(tables)
    for table in tables:
        head, body = _display_rows(table, configs, names)
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
        lines = [*table_header(table), "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- curves, sample grids, html -----------------------------------------------------------------------------------


def slug(group: str) -> str:
    import hashlib

    tail = "-".join(p for p in Path(group).parts[-2:] if p not in ("/", ""))
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in tail).strip("-") or "source"
    return f"{clean}-{hashlib.sha256(group.encode()).hexdigest()[:6]}"


def plot_curves(frame: pd.DataFrame, table: Table, best: Table | None, path: Path, group: str) -> bool:
    """Metric versus epoch for one group under one protocol: mean over seeds, min-max band, best checkpoints marked."""
    part = frame[(frame["group"] == group) & (frame["protocol_id"] == table.protocol_id) & (frame["status"] == "ok")
                 & frame["run_epoch"].notna()]
    metrics = [m for m in table.metrics if m in set(part["metric"])]
    if part.empty or part["run_epoch"].nunique() < 2 or not metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    best_row = next((r for r in (best.rows if best else []) if r.group == group), None)
    p = table.protocol
    selection = frame[(frame["group"] == group) & (frame["reference_role"] == "selection") & (frame["status"] == "ok")
                      & (frame["extractor"] == p["extractor"]) & (frame["weights_sha256"] == p["weights_sha256"])
                      & (frame["n_generated"] == p["n_generated"]) & (frame["seed"] == p["seed"]) & frame["run_epoch"].notna()]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        m = part[part["metric"] == metric]
        by_epoch = m.groupby("run_epoch")["value"].agg(["mean", "min", "max", "count"]).sort_index()
        x = by_epoch.index.astype(float)
        ax.plot(x, by_epoch["mean"], marker="o", ms=3, lw=1.5, label=f"mean over {int(by_epoch['count'].max())} seed(s)")
        ax.fill_between(x, by_epoch["min"].astype(float), by_epoch["max"].astype(float), alpha=0.25, label="min-max")
        chosen_on = selection[selection["metric"] == metric].groupby("run_epoch")["value"].mean().sort_index()
        if len(chosen_on) > 1:  # the same checkpoints on the selection reference: what "best" was chosen on
            ax.plot(chosen_on.index.astype(float), chosen_on.to_numpy(), ls="--", lw=1, color="grey",
                    label=f"mean on {selection['reference_name'].iloc[0]} (selection)")
        if best_row is not None:
            for seed, epoch in best_row.epochs.items():
                hit = m[(m["run_epoch"] == epoch) & ((m["run_seed"] == seed) if seed is not None else m["run_seed"].isna())]
                if not hit.empty:
                    ax.plot([epoch], [float(hit["value"].iloc[0])], marker="*", ms=12, color="crimson", ls="none")
            ax.plot([], [], marker="*", ms=10, color="crimson", ls="none", label="selected (best) per seed")
        ax.set_title(f"{metric} ({direction(metric)} is better)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{Path(group).name or group} vs {table.protocol['reference_name']} "
                 f"({table.protocol['extractor']}, protocol {table.protocol_id})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_GRID_BYTES = 16 * 2**20  # a trainer's grid is ~50 KB; anything far larger is not one


def latest_grids(frame: pd.DataFrame, group: str, limit: int = 3) -> tuple[list[tuple[str, Path]], list[str]]:
    """(label, PNG) of the sample grid beside each seed's latest checkpoint, when it is still on disk, and a note for
    each file under a grid's name that is not a PNG image (it is left out: the report copies nothing unchecked)."""
    part = frame[(frame["group"] == group) & frame["run_epoch"].notna()]
    grids, notes = [], []
    for seed, seed_part in by_seed(part, missing=-1):
        last = seed_part.sort_values("run_epoch").iloc[-1]
        png = Path(str(last["source_path"])).with_suffix(".png")
        if not png.is_file():
            continue
        with open(png, "rb") as f:
            is_png = f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
        if is_png and png.stat().st_size <= MAX_GRID_BYTES:
            grids.append((f"seed {seed}, epoch {int(last['run_epoch'])}", png))
        else:
            notes.append(f"{png.name} (seed {seed}) is not a PNG image; its sample grid is left out"
                         if not is_png else f"{png.name} (seed {seed}) is over {MAX_GRID_BYTES >> 20} MiB; left out")
    return grids[:limit], notes


def run_configs(frame: pd.DataFrame) -> dict[str, str]:
    """group -> a short description of its training config, from `config.json` beside the checkpoints when present."""
    configs = {}
    for group, part in frame.groupby("group"):
        path = Path(str(part["source_path"].iloc[0])).parent / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        keys = ("epochs", "batch_size", "lr", "betas", "max_train_images")
        configs[str(group)] = ", ".join(f"{k} {_short(cfg[k])}" for k in keys if cfg.get(k) is not None)
    return configs


def _short(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def index_html(tables: list[Table], configs: dict[str, str], curves: dict[tuple[str, str], str],
               grids: dict[str, list[tuple[str, str]]], comparison: str = "",
               notes: dict[str, list[str]] | None = None) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>ganbench report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}th{background:#eee}"
             ".hdr{color:#444;font-size:13px;margin:0}.note{color:#a40}img{max-width:100%;border:1px solid #ddd}"
             "figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:12px;color:#555}",
             "</style></head><body><h1>ganbench report</h1>",
             "<p>Leaderboards from the results store; each table compares numbers of one protocol only. "
             "Files: <a href='leaderboard.md'>leaderboard.md</a>, <a href='leaderboard.csv'>leaderboard.csv</a>, "
             "<a href='results.csv'>results.csv</a>.</p>"]
    names = display_names(tables)
    for table in tables:
        parts.append(f"<h2>{esc(table.rule)} checkpoint &mdash; protocol <code>{esc(table.protocol_id)}</code></h2>")
        parts += [f"<p class='hdr'>{esc(line)}</p>" for line in table_header(table)]
        head, body = _display_rows(table, configs, names)
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
        for cells in body:
            parts.append("<tr>" + "".join(f"<td{' class=note' if 'optimistic' in c else ''}>{esc(c)}</td>"
                                          for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append(comparison)  # the pairwise tests, right after the leaderboards they test
    groups = sorted({row.group for t in tables for row in t.rows})
    for group in groups:
        images = [(label, src) for (g, label), src in curves.items() if g == group] + grids.get(group, [])
        if not images and not (notes or {}).get(group):
            continue
        parts.append(f"<h2>{esc(names.get(group, group))}</h2>")
        parts += [f"<p class='note'>{esc(note)}</p>" for note in (notes or {}).get(group, [])]  # grids skipped, and why
        for label, src in images:
            parts.append(f"<figure><img src='{esc(src)}' alt='{esc(label)}'><figcaption>{esc(label)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- the whole report ---------------------------------------------------------------------------------------------


def write_report(cfg: ReportConfig) -> tuple[Path, list[Table], dict[str, str]]:
    """Build every file in a temporary folder beside `cfg.out`, then move it into place (see `check_out`)."""
    out = Path(cfg.out)
    if put_back_moved_aside(out.resolve()):  # a report killed between replace_dir's two renames (no exchange here)
        print(f"ganbench: put back {out}, which a killed report had moved aside", file=sys.stderr)
    check_out(out, cfg.results)
    frame = filter_results(load_results(cfg.results), cfg)
    tables = make_tables(frame, cfg)
    configs = run_configs(frame)
    target = out.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target.parent, target=target.name)  # the build folders of killed reports
        tmp = make_temporary_dir(target, "build")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror}); choose another --out") from None
    try:
        _write_files(tmp, frame, tables, configs, cfg)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        marker = {"format": REPORT_FORMAT, "version": 1, "ganbench": __version__, "files": files}
        (tmp / REPORT_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        check_out(out, cfg.results)  # again: the folder may have changed while the report was built
        replace_dir(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.filename is None and exc.errno is not None:  # pandas and write_text on a full disk name no file
            raise OSError(exc.errno, exc.strerror, str(out)) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, tables, configs


def check_out(out: Path, results: str | Path) -> None:
    """Refuse an --out whose replacement could delete anything but a previous report (ConfigError naming why).

    Refused: the root folder or a mount point, the current folder or any folder above it, a folder holding
    the results store being read, an existing file, and an existing folder that is not empty and not a
    previous report, or a previous report holding files the report did not write (notes.txt dropped in it)."""
    target = out.resolve()
    if os.path.ismount(target):
        raise ConfigError(f"--out {out} is {'the root folder' if target == Path(target.anchor) else 'a mount point'}; "
                          "report replaces its --out as a whole: choose a new folder inside it")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ConfigError(f"--out {out} is the current folder or one above it; report replaces its --out as a whole: "
                          "choose a new folder, e.g. --out reports")
    if target in Path(results).resolve().parents:
        raise ConfigError(f"--out {out} holds the results store {results} that report reads; choose another --out")
    if not target.exists():
        above = next((p for p in target.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise ConfigError(f"--out {out}: {above} is a file, not a folder; choose another --out")
        return
    if not target.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; choose another --out")
    if not any(target.iterdir()):
        return
    known = _files_of_previous_report(target)
    if known is None:
        raise ConfigError(f"--out {out} exists and is not a ganbench report (no {REPORT_MARKER} marker); "
                          "choose another --out or remove it yourself")
    foreign = _entries_not_in(target, known | {REPORT_MARKER})
    if foreign:
        raise ConfigError(f"--out {out} holds files that ganbench report did not write ({', '.join(foreign)}); "
                          "move them out of it, or choose another --out")


def _files_of_previous_report(folder: Path) -> set[str] | None:
    """The files (relative paths) a previous report in `folder` wrote, or None when it is not a report.

    A report from before the marker is recognised by its shape: the four REPORT_FILES, an index.html titled
    "ganbench report", and otherwise only per-group folders of curves_*.png and samples_*.png. Accepted because
    every such report (`reports/` by default) would otherwise need removing by hand after an upgrade, and a
    folder of exactly that shape holds nothing else to lose."""
    marker = folder / REPORT_MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            data = json.loads(marker.read_text())
            if data.get("format") == REPORT_FORMAT and all(isinstance(f, str) for f in data["files"]):
                return set(data["files"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return None
    try:
        with open(folder / "index.html", "rb") as handle:
            index = handle.read(400).decode("utf-8", "replace")
    except OSError:
        return None
    if _INDEX_TITLE not in index or not all((folder / name).is_file() for name in REPORT_FILES):
        return None
    known = set(REPORT_FILES)
    for group in folder.iterdir():
        if group.is_dir() and not group.is_symlink() and re.search(r"-[0-9a-f]{6}$", group.name):
            known |= {f"{group.name}/{png.name}" for png in group.iterdir()
                      if png.is_file() and re.fullmatch(r"(curves|samples)_.+\.png", png.name)}
    return known


def _entries_not_in(folder: Path, known: set[str], limit: int = 3) -> list[str]:
    """Up to `limit` entries below `folder` (files, links, empty folders; relative paths) that are not in `known`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow links
        here = Path(dirpath)
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in (*filenames, *links):
            relative = (here / name).relative_to(folder).as_posix()
            if relative not in known:
                found.append(relative)
        if not dirnames and not filenames and here != folder:
            found.append(here.relative_to(folder).as_posix() + "/")
        if len(found) >= limit:
            break
    return found[:limit]


def _write_files(tmp: Path, frame: pd.DataFrame, tables: list[Table], configs: dict[str, str], cfg: ReportConfig) -> None:
    long = frame if not cfg.metrics else frame[frame["metric"].isin(cfg.metrics)]
    long[[*COLUMNS, *[c for c in frame.columns if c not in COLUMNS]]].to_csv(tmp / "results.csv", index=False)
    leaderboard_frame(tables, configs).to_csv(tmp / "leaderboard.csv", index=False)
    (tmp / "leaderboard.md").write_text(markdown(tables, configs) + "\n")
    curves: dict[tuple[str, str], str] = {}
    grids: dict[str, list[tuple[str, str]]] = {}
    notes: dict[str, list[str]] = {}
    if cfg.plots:
        best_by_protocol = {t.protocol_id: t for t in tables if t.rule == "best"}
        for table in (t for t in tables if t.rule == "final"):
            for row in table.rows:
                folder = tmp / slug(row.group)
                folder.mkdir(exist_ok=True)
                name = f"curves_{table.protocol_id}.png"
                if plot_curves(frame, table, best_by_protocol.get(table.protocol_id), folder / name, row.group):
                    label = f"{table.protocol['extractor']} vs {table.protocol['reference_name']} ({table.protocol_id})"
                    curves[(row.group, label)] = f"{folder.name}/{name}"
                if row.group not in grids:
                    grids[row.group] = []
                    samples, grid_notes = latest_grids(frame, row.group)
                    for label, png in samples:
                        target = folder / f"samples_{label.replace(', ', '_').replace(' ', '')}.png"
                        shutil.copyfile(png, target)
                        grids[row.group].append((f"samples, {label}", f"{folder.name}/{target.name}"))
                    pairs, neighbour_notes = neighbours.neighbour_grids(frame, row.group, folder)
                    grids[row.group] += [(caption, f"{folder.name}/{name}") for caption, name in pairs]
                    notes[row.group] = grid_notes + neighbour_notes
                if not any(folder.iterdir()):
                    folder.rmdir()
    from ganbench.results.comparison import write_comparison  # numpy and scipy: not needed for `ganbench --help`

    section = write_comparison(tmp, tables, display_names(tables))  # comparison.md/.csv when 2+ groups have 2+ seeds
    (tmp / "index.html").write_text(index_html(tables, configs, curves, grids, section, notes))
