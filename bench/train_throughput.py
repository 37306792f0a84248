"""Training throughput: a straightforward DataLoader loop like the original listing vs ganbench's trainer.

Both run the same algorithm (the specified GAN, batch 64, Adam 2e-4, float32) on the same data,
in one process, alternating rounds so that load on the machine affects both alike. Prints images/s
and the implied seconds per 60,000-image epoch.

    python bench/train_throughput.py [--device cpu|cuda] [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ganbench.config import BaselineConfig
from ganbench.data import DEBIAN_FASHION_MNIST, load_dataset
from ganbench.train.loop import TrainingState, _train_epochs
from ganbench.train.models import make_discriminator, make_generator


def straightforward_loop(root: Path, steps: int, device: torch.device) -> float:
    """The original listing's shape: torchvision dataset + per-sample transforms + DataLoader; returns images/s."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    data = datasets.FashionMNIST(root=str(root), train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    G, D = make_generator().to(device), make_discriminator().to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
    bce = nn.BCELoss()
    done, images = 0, 0
    started = time.perf_counter()
    while done < steps:
        for real, _ in loader:
            real = real.view(-1, 784).to(device)
            b = real.size(0)
            real_labels = torch.ones(b, 1, device=device)
            fake_labels = torch.zeros(b, 1, device=device)
            D.zero_grad()
            loss_real = bce(D(real), real_labels)
            fake = G(torch.randn(b, 100, device=device))
            loss_fake = bce(D(fake.detach()), fake_labels)
            (loss_real + loss_fake).backward()
            opt_d.step()
            G.zero_grad()
            g_loss = bce(D(fake), real_labels)
            g_loss.backward()
            opt_g.step()
            done += 1
            images += b
            if done >= steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def ganbench_loop(steps: int, device: torch.device) -> float:
    """ganbench's trainer on the first steps*64 images for one epoch; returns images/s."""
    dataset = load_dataset("fashion-mnist", "train", log=False).head(steps * 64)
    cfg = BaselineConfig(dataset="fashion-mnist", epochs=1, max_train_images=steps * 64, device=device.type)
    with torch.random.fork_rng(devices=[]):
        state = TrainingState(cfg, device)
        with tempfile.TemporaryDirectory() as tmp:
            _train_epochs(state, dataset, "bench", Path(tmp), progress=False)
    return len(dataset) / state.history[-1]["seconds"]  # the loop's own timing, before outputs are written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):  # torchvision reads the raw files
            with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (raw / name).write_bytes(b"")  # torchvision checks that the test files exist, even for train=True

        straightforward_loop(Path(tmp), 20, device)  # warm-up
        ganbench_loop(20, device)
        rates = {"straightforward DataLoader loop": [], "ganbench trainer": []}
        for _ in range(args.rounds):
            rates["straightforward DataLoader loop"].append(straightforward_loop(Path(tmp), args.steps, device))
            rates["ganbench trainer"].append(ganbench_loop(args.steps, device))

    base = statistics.median(rates["straightforward DataLoader loop"])
    print(f"\ntraining throughput, specified GAN, batch 64, float32, {device.type}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps x {args.rounds} rounds (median)")
    print(f"{'loop':34} {'images/s':>10} {'s/epoch (60k)':>14} {'speed-up':>9}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:34} {rate:10,.0f} {60000 / rate:14.1f} {rate / base:8.2f}x")


if __name__ == "__main__":
    main()
