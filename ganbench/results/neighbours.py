"""Memorization evidence in the report: the leaderboard's memorization and generalization columns, the copy flag,
and the nearest-neighbour grids (generated samples each beside their nearest training image).

Columns: a leaderboard row holds the numbers of its checkpoints on the reporting reference (the test split). The
same checkpoints' results on a training-split reference (`DATASET:train:10000` by default) give `fid_train`, the
generalization gap `fid_gap` = fid - fid_train (per seed, then over seeds), and the memorization metrics
authenticity, mifid and data_copying_ct, which mean something only against the data the model saw. A row is
flagged "copies" when AuthPct < 0.3 (held-out real images score about 0.6 on Fashion-MNIST, copies 0) or
C_T < -3 (generated samples significantly closer to the training set than held-out data; a z-score).

Grids: the report reads the store, not samples, so 64 samples are drawn again (seed 0) from each group's latest
checkpoint on disk (any zoo model), and their nearest training images are searched in pixel space (L2 on [0, 1]
pixels, over the whole training split) and, for the `lenet-*` extractors, in feature space (the split's features
are cached after the first report). Anything missing (checkpoint, dataset, weights) skips the grid with a one-line note.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from ganbench.results.leaderboard import Table

MEMORIZATION = ("authenticity", "mifid", "data_copying_ct")
GAP = ("fid_train", "fid_gap")
COLUMNS = (*GAP, *MEMORIZATION)  # the leaderboard columns this module fills, in display order
COPY_AUTHENTICITY = 0.3
COPY_CT = -3.0
GRID_SAMPLES = 64
GRID_SEED = 0
TRAIN_IMAGES: int | None = None  # None: the whole training split (tests use fewer)
_MATCH = ("extractor", "weights_sha256", "preprocessing", "n_generated", "seed", "metric_protocol_version")


def copy_flag(values: dict[str, float]) -> str | None:
    """'copies: AuthPct 0.12, C_T -8.3' when the memorization numbers say the model copies, else None."""
    auth, ct = values.get("authenticity"), values.get("data_copying_ct")
    if not ((auth is not None and auth < COPY_AUTHENTICITY) or (ct is not None and ct < COPY_CT)):
        return None
    parts = ([f"AuthPct {auth:.2f}"] if auth is not None else []) + ([f"C_T {ct:.1f}"] if ct is not None else [])
    return "copies: " + ", ".join(parts)


def add_memorization(tables: list[Table], frame: pd.DataFrame) -> None:
    """Fill COLUMNS of every row from its checkpoints' results on a training-split reference, rank them, flag
    copying rows (row.notes) and say in the table's notes where the numbers come from, or why there are none."""
    from ganbench.results.leaderboard import Aggregate, aggregate, direction, interval_ranks

    ok = frame[frame["status"] == "ok"]
    for table in tables:
        p = table.protocol
        same = ok
        for name in _MATCH:
            same = same[same[name] == p[name]]
        if p["reference_split"] == "train":  # the table itself is against training data: its own columns say it
            for row in table.rows:
                flag = copy_flag({m: row.metrics[m].mean for m in MEMORIZATION if m in row.metrics})
                row.notes += [flag] if flag else []
            continue
        train = same[same["reference_split"] == "train"]
        values: dict[str, dict[str, list[float]]] = {}  # group -> column -> a value per seed
        used: set[str] = set()
        for row in table.rows:
            for path in row.sources.values():
                mine = train[train["source_path"] == path]
                if mine.empty:
                    continue
                # the largest training reference when there are several (the whole split says most about copying)
                name = mine.sort_values(["n_reference", "reference_name"], ascending=[False, True])["reference_name"].iloc[0]
                used.add(str(name))
                chosen = mine[mine["reference_name"] == name]
                got = {str(m): float(v) for m, v in zip(chosen["metric"], chosen["value"], strict=True)}
                own = same[(same["source_path"] == path) & (same["reference_name"] == p["reference_name"])
                           & (same["metric"] == "fid")]
                if "fid" in got:
                    got["fid_train"] = got["fid"]
                    if not own.empty:
                        got["fid_gap"] = float(own["value"].iloc[0]) - got["fid"]
                for column in COLUMNS:
                    if column in got:
                        values.setdefault(row.group, {}).setdefault(column, []).append(got[column])
        if not values:
            table.notes.append("no generalization gap or memorization columns: these checkpoints have no results on a "
                               "training-split reference (ganbench eval --reference DATASET:train[:N] --reference DATASET:test)")
            continue
        columns = [c for c in COLUMNS if any(c in v for v in values.values())]
        for column in columns:
            ranked = [r for r in table.rows if column in values.get(r.group, {})]
            aggs = [aggregate(values[r.group][column]) for r in ranked]
            for r, a, (rank, tied) in zip(ranked, aggs, interval_ranks(aggs, direction(column)), strict=True):
                r.metrics[column] = Aggregate(a.values, a.mean, a.std, a.ci_low, a.ci_high, rank, tied)
        table.metrics = [*[m for m in table.metrics if m not in columns], *columns]
        for row in table.rows:
            flag = copy_flag({m: row.metrics[m].mean for m in MEMORIZATION if m in values.get(row.group, {})})
            row.notes += [flag] if flag else []
        table.notes.append(
            f"memorization: {', '.join(columns)} are these checkpoints against the training-split reference "
            f"{', '.join(sorted(used))}; fid_gap = fid - fid_train per seed; flagged 'copies' when AuthPct < "
            f"{COPY_AUTHENTICITY} or C_T < {COPY_CT:g}")


# -- nearest-neighbour grids -------------------------------------------------------------------------------------------


def latest_checkpoint(frame: pd.DataFrame, group: str) -> tuple[Path, str | None, str | None] | None:
    """(path, dataset, extractor) of the group's latest evaluated checkpoint still on disk (lowest seed; an epoch scored
    during training keeps no file unless --checkpoint-every wrote one), or None for sources that are not zoo runs.
    When none is on disk, the latest one (whose absence the grid's note reports)."""
    from ganbench.train.zoo import MODELS

    part = frame[(frame["group"] == group) & frame["run_epoch"].notna() & frame["run_kind"].isin(list(MODELS))]
    if part.empty:
        return None
    ordered = part.sort_values(["run_seed", "run_epoch"], ascending=[True, False], na_position="last")
    paths = list(dict.fromkeys(ordered["source_path"].astype(str)))
    path = next((p for p in paths if Path(p).is_file()), paths[0])
    last = ordered[ordered["source_path"].astype(str) == path].iloc[0]
    extractors = sorted(set(part["extractor"].dropna().astype(str)))
    lenet = [e for e in extractors if e.startswith("lenet-")]
    return Path(path), last["run_dataset"], (lenet or [None])[0]


def neighbour_grids(frame: pd.DataFrame, group: str, folder: Path, *, data_root=None,
                    samples: int = GRID_SAMPLES) -> tuple[list[tuple[str, str]], list[str]]:
    """Write `neighbours_*.png` for the group into `folder`: ([(caption, file name)], [one-line notes])."""
    from ganbench.errors import GanbenchError, one_line

    found = latest_checkpoint(frame, group)
    if found is None:
        return [], ["no nearest-neighbour grid: not a ganbench checkpoint run, so no training split is known"]
    path, dataset, extractor = found
    if not path.is_file():
        return [], [f"no nearest-neighbour grid: the checkpoint {path} is no longer on disk"]
    try:
        fake, train, test = _images(path, dataset, data_root, samples)
        spaces = [("pixel", "L2 on [0, 1] pixels", fake.flatten(1) / 255, train.flatten(1) / 255, test.flatten(1) / 255)]
        notes = []
        if extractor is not None:
            spaces.append(("feature", f"L2 in {extractor} features", *_features(extractor, dataset, data_root, fake, test)))
        else:
            notes.append("nearest neighbours in pixel space only: feature-space search over the training split needs "
                         "a lenet-* extractor (Inception over 60,000 images is too slow for a report)")
    except (GanbenchError, OSError) as exc:
        return [], [f"no nearest-neighbour grid for {path.name}: {one_line(exc)}"]
    out = []
    epoch = path.stem.split("_")[-1].lstrip("0") or "0"
    for space, metric, fake_x, train_x, test_x in spaces:
        name = f"neighbours_{space}_{path.parent.name}_epoch{epoch}.png"
        caption = _draw(folder / name, fake, train, fake_x, train_x, test_x, f"{space} space ({metric})")
        out.append((f"{caption}; {path.parent.name}, epoch {epoch}", name))
    return out, notes


def _images(path: Path, dataset: str | None, data_root, samples: int):
    """Generated samples (seeded), the training split and as many test images (for the distance scale)."""
    from ganbench.data import load_dataset
    from ganbench.samples import generate, load_baseline_generator

    module, latent_dim, _ = load_baseline_generator(path)
    fake = generate(module, latent_dim, samples, GRID_SEED, batch_size=samples)
    train = load_dataset(dataset, "train", data_root, log=False)
    train = train.head(TRAIN_IMAGES) if TRAIN_IMAGES else train
    test = load_dataset(dataset, "test", data_root, log=False).head(samples)
    return fake, train.images, test.images


def _features(extractor_name: str, dataset: str, data_root, fake, test):
    """Features of the generated and test images and of the training split (the latter cached by the feature cache)."""
    from ganbench.features.extract import extract_features
    from ganbench.features.registry import build_extractor
    from ganbench.reference import reference_features

    extractor = build_extractor(extractor_name)
    train = reference_features(extractor, dataset, "train", TRAIN_IMAGES, data_root=data_root, progress=False)
    return (extract_features(extractor, fake).features, train.features, extract_features(extractor, test).features)


def _draw(png: Path, fake, train_images, fake_x, train_x, test_x, title: str) -> str:
    """An 8-wide grid of (generated | nearest training image) pairs, closest first, each with its distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ganbench.metrics.memorization import nearest_neighbours

    distance, index = nearest_neighbours(fake_x, train_x)
    scale = float(np.median(nearest_neighbours(test_x, train_x)[0].numpy()))  # where held-out real images lie
    order = np.argsort(distance.numpy(), kind="stable")
    cols, rows = 8, -(-len(order) // 8)
    h, w = fake.shape[-2:]
    canvas = np.full((rows * (h + 12), cols * (2 * w + 6)), 255, dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.3, rows * 0.75 + 0.6))
    for k, i in enumerate(order):
        r, c = divmod(k, cols)
        y, x = r * (h + 12) + 10, c * (2 * w + 6)
        canvas[y:y + h, x:x + w] = fake[i, 0].numpy()  # generated on the left
        canvas[y:y + h, x + w + 1:x + 2 * w + 1] = train_images[int(index[i]), 0].numpy()
        ax.text(x + w, y - 1.5, f"{float(distance[i]):.3g}", fontsize=6, ha="center", va="bottom",
                color="crimson" if float(distance[i]) < 0.5 * scale else "black")
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    caption = (f"nearest training image beside each generated sample, {title}, closest first; held-out test images "
               f"lie at median {scale:.3g} from the training set (red: under half of that)")
    ax.set_title(f"{title}: generated | nearest training image", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return caption if not math.isnan(scale) else caption.split("; held-out")[0]
