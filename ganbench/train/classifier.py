"""Training the small domain classifier behind the lenet-* extractors (`ganbench train classifier`).

Recipe: the LeNet of `ganbench.features.lenet` on the dataset's train split, cross-entropy, Adam with a
one-cycle learning-rate schedule (peak 2e-3), batch 128, 6 epochs, no augmentation (random flips
cost Fashion-MNIST accuracy at this short schedule: 90.9% vs 91.5% after 5 epochs). The test split
is used once, at the end, for the accuracy recorded in the weights file and its JSON sidecar.

Determinism: weight init and dropout use torch's global generator, seeded inside
`torch.random.fork_rng` so the caller's RNG is untouched; shuffling uses an explicit
generator. Same seed, torch version, device and thread count -> bit-identical weights file. Nothing
time-dependent goes into the `.pt` (dates and durations go to the sidecar), so the file's sha256 is
a function of the training inputs alone.

Outputs: OUT (the weights dict, `torch.load(weights_only=True)`) and OUT with `.json` (sidecar: the
command that reproduces it, test accuracy, sha256, seed, epochs, torch version, date, wall time).
"""

from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from ganbench import __version__
from ganbench.atomic import atomic_write_bytes
from ganbench.config import ClassifierConfig, check_writable_dir
from ganbench.data import ImageDataset, load_dataset
from ganbench.devices import resolve_device
from ganbench.errors import ConfigError, DataUnavailableError
from ganbench.features import lenet
from ganbench.train.loop import derive_seed
from ganbench.train.outputs import write_json


@dataclass(frozen=True)
class ClassifierResult:
    path: Path
    sidecar: dict


def train_classifier(cfg: ClassifierConfig, progress: bool = True) -> ClassifierResult:
    """Train, test, and write the weights file and its sidecar; returns where and what was recorded."""
    out = cfg.out_path
    check_writable_dir(out.parent, "--out")
    if out.exists() and not out.is_file():
        raise ConfigError(f"--out {out} exists and is not a file; name a .pt file")
    train = load_dataset(cfg.dataset, "train", cfg.data_root).head(cfg.max_train_images)
    test = load_dataset(cfg.dataset, "test", cfg.data_root).head(cfg.max_test_images)
    if cfg.batch_size > len(train):
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {len(train)} training images; lower --batch-size")
    device = resolve_device(cfg.device)
    normalization = lenet.dataset_normalization(train.images)

    started = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(cfg.seed, "init+dropout"))  # global RNG, inside fork_rng
        net = lenet.LeNet().to(device)
        history = _fit(net, cfg, train, normalization, device, progress)
    test_accuracy = evaluate_accuracy(net, test.images, test.labels, normalization)
    seconds = time.perf_counter() - started

    state = {
        "format": lenet.WEIGHTS_FORMAT,
        "format_version": lenet.WEIGHTS_FORMAT_VERSION,
        "ganbench_version": __version__,
        "torch_version": str(torch.__version__),
        "architecture": lenet.ARCHITECTURE,
        "preprocessing": lenet.PREPROCESSING,
        "dataset": cfg.dataset,
        "normalization": normalization,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in cfg.NOT_IN_WEIGHTS},
        "train_data": {"num_images": len(train), "fingerprint": train.fingerprint()},
        "test_accuracy": test_accuracy,
        "test_images": len(test),
        "history": history,
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: torch.save turns a full disk's OSError into a RuntimeError
    atomic_write_bytes(out, lambda f: f.write(buffer.getbuffer()))
    sidecar = {
        "file": out.name,
        "sha256": lenet.file_sha256(out),
        "command": cfg.command(),
        "extractor": f"lenet-{cfg.dataset}",
        "architecture": lenet.ARCHITECTURE,
        "preprocessing": lenet.PREPROCESSING,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "train_images": len(train),
        "test_images": len(test),
        "test_accuracy": test_accuracy,
        "torch_version": str(torch.__version__),
        "ganbench_version": __version__,
        "device": str(device),
        "torch_num_threads": torch.get_num_threads(),
        "train_seconds": round(seconds, 1),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "history": history,
    }
    write_json(sidecar, cfg.sidecar_path)
    return ClassifierResult(path=out, sidecar=sidecar)


def _fit(net: lenet.LeNet, cfg: ClassifierConfig, train: ImageDataset, normalization: dict, device: torch.device,
         progress: bool) -> list[dict]:
    """The training loop: on-device tensors sliced into batches, one host sync per progress update."""
    x_all = lenet.normalize(train.images.to(device), normalization)  # (N, 1, 28, 28) float32
    y_all = train.labels.to(device)
    n, b = len(train), cfg.batch_size
    steps_per_epoch = math.ceil(n / b)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=device.type in ("cpu", "cuda"))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2)
    rng = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "shuffle"))
    loss_fn = nn.CrossEntropyLoss()

    bar = _progress_bar(progress, total=cfg.epochs * steps_per_epoch, desc=f"lenet-{cfg.dataset}")
    history = []
    net.train()
    for epoch in range(1, cfg.epochs + 1):
        sums = torch.zeros(2, device=device)  # summed loss * batch, correct predictions
        order = torch.randperm(n, generator=rng, device=device)
        for i in range(steps_per_epoch):
            index = order[i * b : (i + 1) * b]
            x, y = x_all[index], y_all[index]
            _, logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            sums += torch.stack([loss.detach() * x.shape[0], (logits.detach().argmax(1) == y).sum()])
            if bar is not None:
                bar.update(1)
                if i % 50 == 0 or i == steps_per_epoch - 1:
                    seen = min((i + 1) * b, n)
                    loss_mean, correct = sums.tolist()  # the only host sync, for the progress bar
                    bar.set_description(f"lenet-{cfg.dataset} epoch {epoch}/{cfg.epochs}")
                    bar.set_postfix_str(f"loss {loss_mean / seen:.4f} train acc {correct / seen:.4f}")
        loss_sum, correct = sums.tolist()
        history.append({"epoch": epoch, "train_loss": loss_sum / n, "train_accuracy": correct / n})
    if bar is not None:
        bar.close()
    net.eval()
    return history


@torch.no_grad()
def evaluate_accuracy(net: lenet.LeNet, images: torch.Tensor, labels: torch.Tensor, normalization: dict,
                      batch_size: int = 1000) -> float:
    """Top-1 accuracy of `net` (in eval mode) on uint8 images (N, 1, 28, 28) and int64 labels (N,)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = lenet.normalize(images[start : start + batch_size].to(device), normalization)
        _, logits = net(x)
        correct += int((logits.argmax(1).cpu() == labels[start : start + batch_size]).sum())
    net.train(was_training)
    return correct / len(labels)


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True, desc=desc)


def lenet_mnist_trained_on_first_use(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
    progress: bool = True,
) -> lenet.LeNetExtractor:
    """The `lenet-mnist` extractor: `weights=` if given, else the cached file, else trained now on MNIST and cached.

    It lives here, not in `ganbench.features.lenet`, so that features never import training (the circle
    config -> features.lenet -> train.classifier -> config is gone)."""
    if weights is not None:
        return lenet.build_lenet_mnist(weights, device)
    cached = lenet.default_weights_cache() / lenet.weights_file_name("mnist")
    if not cached.is_file():
        print(f"ganbench: no cached lenet-mnist weights at {cached}; training them once on MNIST", file=sys.stderr)
        cfg = ClassifierConfig(dataset="mnist", out=str(cached), data_root=str(data_root) if data_root else None)
        try:
            train_classifier(cfg, progress=progress)
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"lenet-mnist needs weights trained on MNIST: none cached at {cached} and MNIST could not be loaded to "
                f"train them ({exc}). Fix: go online once (ganbench trains and caches them), or run "
                f"`ganbench train classifier --dataset mnist --data-root DIR` with MNIST's files in DIR (it writes "
                f"{cached}), or use --extractor lenet-fashion-mnist; in Python, build_extractor('lenet-mnist', "
                "weights=FILE)"
            ) from exc
    return lenet.build_lenet_mnist(cached, device)
