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

import dataclasses
import math
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from ganbench import __version__
from ganbench.atomic import atomic_write_bytes
from ganbench.config import DEVICES, check_writable_dir
from ganbench.data import DATASETS, ImageDataset, load_dataset
from ganbench.errors import ConfigError
from ganbench.features import lenet
from ganbench.train.loop import derive_seed, resolve_device
from ganbench.train.outputs import write_json


@dataclass(frozen=True)
class ClassifierConfig:
    """One training run of the lenet classifier. `out=None` means the user cache, lenet-<dataset>.pt."""

    dataset: str = "fashion-mnist"
    epochs: int = 6
    batch_size: int = 128
    seed: int = 0
    lr: float = 2e-3  # the one-cycle schedule's peak
    max_train_images: int | None = None
    max_test_images: int | None = None
    device: str = "auto"
    out: str | None = None
    data_root: str | None = None

    # Fields that do not change the trained weights (given the device), so they stay out of the .pt.
    NOT_IN_WEIGHTS = ("device", "out", "data_root")

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)} (--dataset)")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be non-negative, got {self.seed}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        for flag, value in (("--max-train-images", self.max_train_images), ("--max-test-images", self.max_test_images)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
        if self.max_train_images is not None and self.batch_size > self.max_train_images:
            raise ConfigError(
                f"--batch-size {self.batch_size} is larger than --max-train-images {self.max_train_images}; "
                "lower --batch-size or raise --max-train-images"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)} (--device)")
        if self.out is not None and not str(self.out).endswith(".pt"):
            raise ConfigError(f"--out names the weights file and must end in .pt, got {self.out!r}")

    @property
    def out_path(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return lenet.default_weights_cache() / lenet.weights_file_name(self.dataset)

    @property
    def sidecar_path(self) -> Path:
        return self.out_path.with_suffix(".json")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def command(self) -> str:
        """The `ganbench train classifier` command line that reproduces this run."""
        defaults = ClassifierConfig(dataset=self.dataset)
        argv = ["ganbench", "train", "classifier", "--dataset", self.dataset]
        flags = {"epochs": "--epochs", "seed": "--seed", "batch_size": "--batch-size", "lr": "--lr",
                 "max_train_images": "--max-train-images", "max_test_images": "--max-test-images",
                 "device": "--device", "out": "--out", "data_root": "--data-root"}
        for field, flag in flags.items():
            value = getattr(self, field)
            if value is not None and value != getattr(defaults, field):
                argv += [flag, str(value)]
        return shlex.join(argv)


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
    atomic_write_bytes(out, lambda f: torch.save(state, f))
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
