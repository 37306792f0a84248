"""What a training run leaves beside its checkpoints: sample grids, the per-epoch CSV, the loss curve, the config."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from ganbench.atomic import atomic_write_bytes

HISTORY_COLUMNS = ("epoch", "step", "d_loss", "g_loss", "d_real", "d_fake", "seconds", "images_per_s")


def save_sample_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """uint8 (B, 1, H, W) -> one PNG grid (8x8 for the 64 fixed-noise samples), written atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.cpu(), nrow=nrow, padding=2, pad_value=255)  # uint8 (3, H', W')
    picture = Image.fromarray(grid[0].numpy(), mode="L")
    atomic_write_bytes(path, lambda f: picture.save(f, format="PNG"))


def write_history_csv(rows: list[dict], path: Path) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, lambda f: f.write(text.getvalue().encode()))


def read_history_timings(path: Path) -> dict[int, dict]:
    """Wall-clock columns of an earlier (interrupted) run's CSV, by epoch; empty when there is none.

    Only informative (the maths lives in the checkpoints), so an unreadable file or row is left out, not an error.
    """
    if not path.is_file():
        return {}
    timings = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    timings[int(row["epoch"])] = {"seconds": float(row["seconds"]), "images_per_s": float(row["images_per_s"])}
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    return timings


def write_json(data: dict, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


G_LOSS_LABELS = {"nonsaturating": "G loss (non-saturating)", "minimax": "G loss (minimax, saturating)",
                 "least-squares": "G loss (least squares)", "wasserstein-gp": "G loss (-E D(G(z)))",
                 "hinge": "G loss (-E D(G(z)))"}


def plot_loss_curve(rows: list[dict], path: Path, title: str, loss: str = "nonsaturating", probabilities: bool = True) -> None:
    """Losses (left) and mean discriminator outputs (right) per epoch; `probabilities`: D's outputs lie in [0, 1]
    (a Sigmoid), else they are a critic's real-valued scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_d) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["d_loss"] for r in rows], label="D loss (real + fake)")
    ax_loss.plot(epochs, [r["g_loss"] for r in rows], label=G_LOSS_LABELS.get(loss, "G loss"))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("BCE" if loss in ("nonsaturating", "minimax") else loss)
    ax_loss.legend()
    ax_d.plot(epochs, [r["d_real"] for r in rows], label="mean D(x)")
    ax_d.plot(epochs, [r["d_fake"] for r in rows], label="mean D(G(z))")
    ax_d.set_xlabel("epoch")
    if probabilities:
        ax_d.set_ylim(0, 1)
    ax_d.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))
