"""The training loop of every zoo model, readable top to bottom.

Algorithm (the specification, see baselines/mnist-mlp-gan.md; the other models change the losses, see
baselines/zoo.md):
    for each batch of real images x (label 1) and noise z:
        D step: BCE(D(x), 1) + BCE(D(G(z).detach()), 0), one Adam step on D
        G step: BCE(D(G(z)), 1) on the same fake batch (non-saturating), one Adam step on G
WGAN-GP adds the gradient penalty to the D loss and takes the G step after every n_critic-th D step only
(counted over the whole run, so an epoch is still one pass over the data for D and a resume keeps the cadence).

Three changes of shape, not of maths, make it faster than the straightforward loop (bench/train_throughput.py):
- the real and the detached fake batch go through D in one pass of 2B rows (bigger matmuls,
  half the launches); the loss is still the sum of the two per-half means (not for dcgan, whose BatchNorm
  would mix the statistics of the two halves);
- D's parameters are frozen during the G step, so the backward pass skips D's weight gradients,
  which the original listing computes and then throws away at the next zero_grad;
- Adam runs fused: one pass over each parameter tensor instead of eight elementwise kernels.
The dataset lives on the training device as one float tensor; batches are index slices of it.
The loop never reads a value back to the host inside an epoch except for the progress bar.
On a GPU this network is too small to keep the device busy: every step is a few dozen tiny kernels, so
launch overhead dominates. `--compile` (torch.compile of G and D) fuses them; the maths is unchanged, and the
checkpoints hold the plain modules' state dicts either way. `--cuda-graphs` goes further: the whole step,
optimiser updates included, is captured once as a CUDA graph and replayed (GraphedStep), one launch per step.

Randomness: weight init and dropout use torch's global generator, which we seed inside
`torch.random.fork_rng` (so the caller's RNG is untouched) and save in every checkpoint; noise and
shuffling each have their own explicit generator. Restoring all three makes --resume exact.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ganbench import __version__
from ganbench.atomic import remove_stale_temporaries
from ganbench.config import BaselineConfig, ZooConfig, check_writable_dir
from ganbench.data import ImageDataset, load_dataset
from ganbench.devices import resolve_device
from ganbench.errors import CheckpointError, ConfigError, counted, one_line
from ganbench.safeload import load_tensors
from ganbench.train import checkpoint as ckpt
from ganbench.train.losses import LOSSES, gradient_penalty
from ganbench.train.models import images_to_model, make_networks, model_to_images
from ganbench.train.outputs import (
    HISTORY_COLUMNS,
    plot_loss_curve,
    read_history_timings,
    save_sample_grid,
    write_history_csv,
    write_json,
)
from ganbench.train.zoo import MODELS

RESUME_NAME = "resume.pt"  # written every epoch so an interruption loses at most the epoch in progress
NUM_FIXED_SAMPLES = 64


def derive_seed(seed: int, stream: str) -> int:
    """Independent, reproducible seeds for each random stream of a run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") >> 1


class TrainingState:
    """Everything that changes during training, and its round trip through a checkpoint dict."""

    def __init__(self, cfg: BaselineConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        torch.manual_seed(derive_seed(cfg.seed, "init+dropout"))  # global RNG, inside fork_rng
        self.spec = MODELS[cfg.kind]
        generator, discriminator = make_networks(self.spec.architecture, cfg.latent_dim)
        self.generator, self.discriminator = generator.to(device), discriminator.to(device)
        # fused=True: the same Adam update in one pass over each tensor instead of eight (~1.5x per step on CPU).
        # capturable (for --cuda-graphs): the fused kernel reads lr and the step count from the device.
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=cfg.betas, fused=True,
                                      capturable=cfg.cuda_graphs)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr, betas=cfg.betas, fused=True,
                                      capturable=cfg.cuda_graphs)
        self.noise_rng = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "noise"))
        self.shuffle_rng = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "shuffle"))
        fixed = torch.Generator().manual_seed(derive_seed(cfg.seed, "fixed-noise"))
        self.fixed_noise = torch.randn(NUM_FIXED_SAMPLES, cfg.latent_dim, generator=fixed)
        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []  # the maths only; wall-clock times stay out of checkpoints

    def to_checkpoint(self, dataset: ImageDataset, fingerprint: str) -> dict:
        rng = {
            "torch_cpu": torch.get_rng_state(),
            "noise": self.noise_rng.get_state(),
            "shuffle": self.shuffle_rng.get_state(),
        }
        if self.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "ganbench_version": __version__,
            "kind": self.cfg.kind,
            # Not where it was written, where its data were read or how the device was named (config.json keeps
            # them): the same weights are the same bytes, so the results store, which keys checkpoints by content,
            # sees one source, and a resume that spells its data folder another way ends in the uninterrupted bytes.
            "config": {k: v for k, v in self.cfg.to_dict().items() if k not in self.cfg.NOT_IN_WEIGHTS},
            "epoch": self.epoch,
            "step": self.step,
            "dataset": {"name": dataset.name, "split": dataset.split, "num_images": len(dataset), "fingerprint": fingerprint},
            "generator": _cpu_state(self.generator.state_dict()),
            "discriminator": _cpu_state(self.discriminator.state_dict()),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "rng": rng,
            "fixed_noise": self.fixed_noise,
            "history": [{k: row[k] for k in ("epoch", "step", "d_loss", "g_loss", "d_real", "d_fake")} for row in self.history],
        }

    def load_checkpoint(self, state: dict, path: Path) -> None:
        """Restore a checkpoint that ckpt.load_checkpoint and ckpt.resume_config have checked; what only torch
        can check (shapes, generator states) fails here as a CheckpointError."""
        try:
            self.generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
            for name, optimizer in (("optimizer_g", self.opt_g), ("optimizer_d", self.opt_d)):
                optimizer.load_state_dict(state[name])
                _check_adam_state(optimizer, name)
            for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
                group["capturable"] = self.cfg.cuda_graphs  # a run may resume with or without --cuda-graphs
            torch.set_rng_state(state["rng"]["torch_cpu"])
            if self.device.type == "cuda" and "torch_cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["torch_cuda"], self.device)
            self.noise_rng.set_state(state["rng"]["noise"].to(self.noise_rng.get_state().device))
            self.shuffle_rng.set_state(state["rng"]["shuffle"].to(self.shuffle_rng.get_state().device))
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise CheckpointError(f"--resume: {path} does not fit this run ({one_line(exc)}); "
                                  "delete it or choose another --out") from exc
        self.fixed_noise = state["fixed_noise"]
        self.epoch = state["epoch"]
        self.step = state["step"]
        self.history = [dict(row) for row in state["history"]]


def _check_adam_state(optimizer: torch.optim.Adam, name: str) -> None:
    # Adam's load_state_dict matches parameter counts only; a wrong-shaped moment would fail inside the first step.
    for param, moments in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if moments[key].shape != param.shape:
                raise ValueError(f"{name} {key} has shape {tuple(moments[key].shape)}, its parameter {tuple(param.shape)}")


def _cpu_state(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


class ResumePoint(NamedTuple):
    path: Path
    state: dict  # checked by ckpt.load_checkpoint and ckpt.resume_config
    config: BaselineConfig  # the one the checkpoint was written under


def find_resume_checkpoint(run_dir: Path, *, quiet: bool = False) -> ResumePoint | None:
    """The usable checkpoint with the most completed epochs (resume.pt or an epoch_XXXX.pt), loaded.

    One that is unreadable, malformed or lacks resume state is skipped with a note: every epoch's checkpoint
    holds the full resume state, so an older one is a correct, if earlier, place to continue from.
    """
    best: ResumePoint | None = None
    for path in _checkpoint_files(run_dir):
        try:
            state = ckpt.load_checkpoint(path)
            config = ckpt.resume_config(path, state)
        except CheckpointError as exc:
            if not quiet:
                print(f"ganbench: --resume: skipping {path.name}: {one_line(exc, None)}", file=sys.stderr)
            continue
        if best is None or state["epoch"] > best.state["epoch"]:
            best = ResumePoint(path, state, config)
    return best


def _checkpoint_files(run_dir: Path) -> list[Path]:
    """resume.pt (first: on a tie it is the one to keep, as it is already up to date), then every epoch_XXXX.pt."""
    resume_file = run_dir / RESUME_NAME
    return ([resume_file] if resume_file.is_file() else []) + ckpt.find_checkpoints(run_dir)


def _readable_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint files in `run_dir` that hold data (they load, whatever their fields): --resume may write over
    a corrupt one, never over one of these."""
    readable = []
    for path in _checkpoint_files(run_dir):
        try:
            load_tensors(path, "checkpoint")
        except (CheckpointError, OSError):
            continue
        readable.append(path)
    return readable


def check_fresh_run(cfg: BaselineConfig) -> None:
    """Without --resume a run folder must hold no checkpoint, readable or not: training would overwrite them."""
    run_dir = cfg.run_dir
    if ckpt.find_checkpoints(run_dir) or (run_dir / RESUME_NAME).is_file():
        raise ConfigError(
            f"{run_dir} already holds checkpoints; pass --resume to continue that run (a finished run is skipped) "
            "or choose another --out"
        )


def prepare_run(cfg: BaselineConfig, resume: bool) -> tuple[ImageDataset, ResumePoint | None]:
    """Every check that can fail, before anything is written: data, sizes, output dir, resume state.

    With `resume`, a run folder without checkpoints starts from scratch (so one --resume command finishes every
    seed of an interrupted --seeds call), and one whose checkpoints all cannot be continued is refused (training
    would overwrite them); without it, a folder holding checkpoints is refused.
    """
    check_writable_dir(cfg.out, "--out")
    dataset = load_dataset(cfg.dataset, "train", cfg.data_root).head(cfg.max_train_images)
    if cfg.batch_size > len(dataset):
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than the {len(dataset)} training images; lower --batch-size"
        )
    steps = -(-len(dataset) // cfg.batch_size) * cfg.epochs
    if steps < MODELS[cfg.kind].n_critic:
        raise ConfigError(
            f"{cfg.kind} updates G once every {MODELS[cfg.kind].n_critic} critic steps, and {counted(cfg.epochs, 'epoch')} "
            f"of {len(dataset)} images in batches of {cfg.batch_size} gives {steps} steps: G would never be trained; "
            "raise --epochs or --max-train-images"
        )
    if MODELS[cfg.kind].architecture == "dcgan" and 1 in (cfg.batch_size, len(dataset) % cfg.batch_size):
        raise ConfigError(
            f"{cfg.kind}'s batch norm needs at least 2 images in every batch, and {len(dataset)} images in batches of "
            f"{cfg.batch_size} leave one alone; change --batch-size or --max-train-images"
        )
    if not resume:
        check_fresh_run(cfg)
        return dataset, None
    point = resume_point(cfg)
    if point is None:
        print(f"ganbench: --resume: no usable checkpoint in {cfg.run_dir}; training it from the start", file=sys.stderr)
    return dataset, point


def resume_point(cfg: BaselineConfig, *, quiet: bool = False) -> ResumePoint | None:
    """Where --resume continues `cfg`'s run (None: from the start), refused in one line when that would train over
    checkpoints it cannot continue, or continue another model's or another config's run. `ganbench train` asks it
    for every seed before the first one trains; quiet: without the notes on skipped checkpoints."""
    run_dir = cfg.run_dir
    point = find_resume_checkpoint(run_dir, quiet=quiet) if run_dir.is_dir() else None
    if point is None and run_dir.is_dir() and _readable_checkpoints(run_dir):
        raise ConfigError(f"--resume: {run_dir} holds checkpoints none of which can be continued (see the notes above); "
                          "training from the start would overwrite them: move them away or choose another --out")
    if point is None:
        return None
    if point.state["kind"] != cfg.kind:
        raise CheckpointError(f"--resume: {point.path} is a {point.state['kind']!r} checkpoint, not a {cfg.kind} run; "
                              "use the same model or another --out")
    theirs, ours = point.config.training_identity(), cfg.training_identity()
    if theirs != ours:
        changed = [k for k in ours if theirs.get(k) != ours.get(k)]
        diff = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {ours.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"--resume: {point.path} was trained with a different config ({diff}); use the same options or another --out"
        )
    return point


def train_model(cfg: BaselineConfig, resume: bool = False, progress: bool = True, bar_position: int | None = None,
                eval_every=None) -> Path:
    """Train one seed of a zoo model (the specified GAN for a BaselineConfig); returns the run directory.

    bar_position: the progress bar's line, when several worker processes share the terminal (--jobs).
    eval_every: a `ganbench.train_eval.EvalEvery` (--eval-every): score the generator in this process at the epochs
    it names, before that epoch's files are written (a kill during scoring repeats the epoch and its scoring)."""
    dataset, point = prepare_run(cfg, resume)
    device = resolve_device(cfg.device)
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError("--cuda-graphs needs a CUDA device, and none is available here; train without --cuda-graphs")
    fingerprint = dataset.fingerprint()
    if point is not None and point.state["dataset"]["fingerprint"] != fingerprint:
        raise CheckpointError(
            f"--resume: the training data differ from the data of the checkpoint in {cfg.run_dir} "
            "(fingerprint mismatch); use the same --dataset, --data-root and --max-train-images"
        )
    devices = [device.index or 0] if device.type == "cuda" else []
    scorer = None
    if eval_every is not None:  # its errors (weights, references) before anything is written; its RNG use is its own
        with torch.random.fork_rng(devices=devices):
            scorer = eval_every.start(device, cfg.dataset)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if removed := remove_stale_temporaries(run_dir):
        print(f"ganbench: removed {removed} temporary file(s) that a killed run left in {run_dir}", file=sys.stderr)

    with torch.random.fork_rng(devices=devices):
        state = TrainingState(cfg, device)
        if point is not None:
            state.load_checkpoint(point.state, point.path)
            timings = read_history_timings(run_dir / "history.csv")
            for row in state.history:
                row.update(timings.get(row["epoch"], {"seconds": "", "images_per_s": ""}))
            _complete_epoch_outputs(state, point, dataset, fingerprint, run_dir, cfg)
            if state.epoch >= cfg.epochs:
                print(f"ganbench: {run_dir} already completed {counted(state.epoch, 'epoch')} (--epochs {cfg.epochs}); "
                      "skipped it (raise --epochs to train further)", file=sys.stderr)
                return run_dir
            print(f"ganbench: resuming {run_dir} after epoch {state.epoch}", file=sys.stderr)
            _note_thread_change(run_dir, device)
        write_json({**cfg.to_dict(), "ganbench_version": __version__, "device_resolved": str(device),
                    "torch_threads": torch.get_num_threads()}, run_dir / "config.json")
        try:
            _train_epochs(state, dataset, fingerprint, run_dir, progress, bar_position, scorer)
        except Exception as exc:
            if cfg.compile and _is_compile_failure(exc):
                raise ConfigError(f"--compile: torch.compile failed here ({one_line(exc, 200)}); "
                                  "train without --compile") from exc
            raise
    return run_dir


def compiled(module: nn.Module) -> nn.Module:
    """torch.compile(module): a wrapper sharing the module's parameters, so optimisers and checkpoints see no change.

    fallback_random: Inductor would otherwise draw dropout masks from its own generator, so a compiled run would
    not follow the eager one; with it, both draw the same masks and differ only by the fused kernels' rounding.
    """
    try:
        return torch.compile(module, options={"fallback_random": True})
    except RuntimeError as exc:  # e.g. a Python version that Dynamo does not support yet
        raise ConfigError(f"--compile: torch.compile is unavailable ({one_line(exc, 200)}); "
                          "train without --compile") from exc


def _is_compile_failure(exc: BaseException) -> bool:
    # Compilation is lazy: it fails inside the first step, as a Dynamo/Inductor error (no C++ compiler, no Triton, ...).
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)


def _train_epochs(state: TrainingState, dataset: ImageDataset, fingerprint: str, run_dir: Path, progress: bool,
                  bar_position: int | None = None, scorer=None) -> None:
    cfg, device, spec = state.cfg, state.device, state.spec
    G, D = state.generator, state.discriminator
    if cfg.compile:
        G, D = compiled(G), compiled(D)
    loss = LOSSES[spec.loss]
    n_critic, gp_weight = (cfg.n_critic, cfg.gp_weight) if isinstance(cfg, ZooConfig) else (1, 0.0)
    joint_pass = spec.architecture != "dcgan"  # BatchNorm would mix the real and the fake half's statistics
    real_data = images_to_model(dataset.images).to(device)  # (N, 784) float32 in [-1, 1], on the device
    n, b = real_data.shape[0], cfg.batch_size
    steps_per_epoch = -(-n // b)  # the last batch may be smaller, as with DataLoader(drop_last=False)
    no_g_step = torch.zeros((), device=device)

    def step(idx: torch.Tensor, update_g: bool = True) -> torch.Tensor:
        """One iteration on the real images `idx` (the G step only if `update_g`); returns d_loss, g_loss (0 without
        a G step), mean D(x), mean D(G(z)). Float labels: the original listing builds integer labels, which BCE
        rejects (the one bug fixed); the losses build theirs as float."""
        real = real_data[idx]
        m = real.shape[0]
        fake = G(torch.randn(m, cfg.latent_dim, generator=state.noise_rng, device=device))

        # Discriminator: real (label 1) and detached fake (label 0), in one pass where that is the same maths.
        if joint_pass:
            d_out = D(torch.cat([real, fake.detach()]))
            d_real, d_fake = d_out[:m], d_out[m:]
        else:
            d_real, d_fake = D(real), D(fake.detach())
        d_loss = loss.d_loss(d_real, d_fake)
        if gp_weight:
            eps = torch.rand(m, 1, generator=state.noise_rng, device=device)
            d_loss = d_loss + gp_weight * gradient_penalty(D, real, fake.detach(), eps)
        state.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        state.opt_d.step()

        g_loss = no_g_step
        if update_g:  # on the same fake batch through the updated D
            D.requires_grad_(False)  # D's weight gradients here would be discarded anyway
            g_loss = loss.g_loss(D(fake))
            state.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            state.opt_g.step()
            D.requires_grad_(True)
        return torch.stack([d_loss.detach(), g_loss.detach(), d_real.detach().mean(), d_fake.detach().mean()])

    full_step = GraphedStep(step, b, device, [state.noise_rng]) if cfg.cuda_graphs else step  # n_critic is 1 here

    bar = _progress_bar(progress, total=(cfg.epochs - state.epoch) * steps_per_epoch, run=run_dir, position=bar_position)
    G.train()
    D.train()
    while state.epoch < cfg.epochs:
        started = time.perf_counter()
        sums = torch.zeros(4, device=device)  # d_loss, g_loss, mean D(x), mean D(G(z)), summed over steps
        g_steps = 0
        order = torch.randperm(n, generator=state.shuffle_rng, device=device)
        for i in range(steps_per_epoch):
            idx = order[i * b : (i + 1) * b]
            if n_critic == 1:
                sums += full_step(idx) if idx.shape[0] == b else step(idx)  # a short last batch runs as it is
                g_steps += 1
            else:  # the G step after every n_critic-th D step of the run
                update_g = (state.step + 1) % n_critic == 0
                sums += step(idx, update_g)
                g_steps += update_g
            state.step += 1
            if bar is not None:
                bar.update(1)
                if i % 100 == 0 or i == steps_per_epoch - 1:
                    means = (sums / (i + 1)).tolist()  # the only host sync, for the progress bar
                    g_mean = sums[1].item() / max(g_steps, 1)
                    rate = (i + 1) * b / max(time.perf_counter() - started, 1e-9)
                    bar.set_description(f"{cfg.kind} seed{cfg.seed} epoch {state.epoch + 1}/{cfg.epochs}")
                    bar.set_postfix_str(
                        f"D {means[0]:.3f} G {g_mean:.3f} D(x) {means[2]:.2f} D(G(z)) {means[3]:.2f} {rate:,.0f} img/s"
                    )

        state.epoch += 1
        d_loss_mean, _, d_real_mean, d_fake_mean = (sums / steps_per_epoch).tolist()  # waits for the GPU
        # The G loss is a mean over the epoch's G steps (all of them but for wgan-gp); the same division for the baseline.
        g_loss_mean = (sums[1] / g_steps).item() if g_steps else float("nan")
        seconds = time.perf_counter() - started
        state.history.append(
            {"epoch": state.epoch, "step": state.step, "d_loss": d_loss_mean, "g_loss": g_loss_mean,
             "d_real": d_real_mean, "d_fake": d_fake_mean, "seconds": seconds, "images_per_s": n / seconds}
        )
        checkpoint = state.to_checkpoint(dataset, fingerprint)
        if scorer is not None and scorer.due(state.epoch, cfg.epochs):  # from memory; the rows name the epoch's file
            scorer(state.generator, cfg.latent_dim, checkpoint, run_dir / ckpt.checkpoint_name(state.epoch))
        _write_epoch_outputs(state, dataset, fingerprint, run_dir, _keeps_checkpoint(state.epoch, cfg), checkpoint=checkpoint)
    if bar is not None:
        bar.close()
    last = state.history[-1]
    print(
        f"ganbench: {run_dir}: {state.epoch} epochs, D loss {last['d_loss']:.3f}, G loss {last['g_loss']:.3f}; "
        f"checkpoints {ckpt.checkpoint_name(state.epoch)} and earlier",
        file=sys.stderr,
    )


class GraphedStep:
    """`step(idx)` for full batches, captured once as a CUDA graph and then replayed (`--cuda-graphs`).

    The first WARMUP calls are ordinary steps of the run, executed on a side stream (capture needs the kernels,
    cuBLAS workspaces and Adam's state to exist already); the next call captures the step into a graph and every
    call from then on copies its batch indices into the graph's static index buffer and replays it. Capture
    records kernels without running them, so no step is run twice or skipped. Noise (from the registered
    `generators`) and dropout (from the default CUDA generator) are drawn inside the graph from the same
    generator states that eager code would use, and Adam's step counts live on the device (capturable), so a
    graphed run is resumable like any other.
    """

    WARMUP = 3

    def __init__(self, step, batch_size: int, device: torch.device, generators: list[torch.Generator]):
        self.step = step
        self.generators = generators
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: torch.Tensor | None = None
        self.side = torch.cuda.Stream(device)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        self.idx.copy_(idx)
        if self.graph is None and self.calls >= self.WARMUP:
            self._capture()
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.stats
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            stats = self.step(self.idx)
        torch.cuda.current_stream().wait_stream(self.side)
        return stats

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            self.stats = self.step(self.idx)
        self.graph = graph


def _note_thread_change(run_dir: Path, device: torch.device) -> None:
    """CPU kernels (dcgan's convolutions) round differently with another thread count: say so when a resume changes it."""
    try:
        before = json.loads((run_dir / "config.json").read_text()).get("torch_threads")
    except (OSError, ValueError, AttributeError):
        return
    now = torch.get_num_threads()
    if device.type == "cpu" and isinstance(before, int) and before != now:
        print(f"ganbench: note: {run_dir} was trained with {before} CPU threads and resumes with {now}: kernels round "
              "differently with another thread count, so its weights will not be bit-identical to an uninterrupted "
              f"run's (OMP_NUM_THREADS={before} keeps them so)", file=sys.stderr)


def _keeps_checkpoint(epoch: int, cfg: BaselineConfig) -> bool:
    return epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs


def _grid_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:04d}.png"


def _write_epoch_outputs(state: TrainingState, dataset: ImageDataset, fingerprint: str, run_dir: Path,
                         keep_checkpoint: bool, only_missing: bool = False, checkpoint: dict | None = None) -> None:
    """The files of a finished epoch; `only_missing` leaves an existing checkpoint and grid as they are."""
    cfg = state.cfg
    checkpoint = checkpoint if checkpoint is not None else state.to_checkpoint(dataset, fingerprint)
    if keep_checkpoint:
        path, grid = run_dir / ckpt.checkpoint_name(state.epoch), _grid_path(run_dir, state.epoch)
        if not (only_missing and path.is_file()):
            ckpt.save_checkpoint(checkpoint, path)
        if not (only_missing and grid.is_file()):
            save_sample_grid(sample_fixed_grid(state), grid)
        plot_loss_curve(state.history, run_dir / "loss_curve.png", title=f"{cfg.kind} {cfg.dataset} seed {cfg.seed}",
                        loss=state.spec.loss, probabilities=state.spec.outputs_probability)
    write_history_csv(state.history, run_dir / "history.csv")
    # Last: --resume continues after the newest checkpoint, so a kill before this line repeats the epoch, and
    # one after it finds the epoch's checkpoint and grid already on disk.
    ckpt.save_checkpoint(checkpoint, run_dir / RESUME_NAME)


def _complete_epoch_outputs(state: TrainingState, point: ResumePoint, dataset: ImageDataset, fingerprint: str,
                            run_dir: Path, cfg: BaselineConfig) -> None:
    """--resume: write what a kill left out of the epoch it resumes from (its checkpoint, its grid, an up-to-date
    resume.pt), before training moves the weights on. The resume state is exactly that epoch's state, so the
    files come out as the uninterrupted run would have written them."""
    # what the interrupted run's options owed this epoch, and the final checkpoint when this call ends at it
    keep = _keeps_checkpoint(state.epoch, point.config) or state.epoch == cfg.epochs
    owed = [run_dir / ckpt.checkpoint_name(state.epoch), _grid_path(run_dir, state.epoch)] if keep else []
    missing = [path.name for path in owed if not path.is_file()]
    if point.path.name != RESUME_NAME:
        missing.append(RESUME_NAME)  # absent, unreadable or behind the checkpoint resumed from
    if missing:
        _write_epoch_outputs(state, dataset, fingerprint, run_dir, keep, only_missing=True)
        print(f"ganbench: {run_dir}: wrote {', '.join(missing)} of epoch {state.epoch}, left out by an interruption",
              file=sys.stderr)


@torch.no_grad()
def sample_fixed_grid(state: TrainingState) -> torch.Tensor:
    """The 64 fixed-noise samples as uint8 images, with G in eval mode (dcgan's BatchNorm uses its running
    statistics, as eval's samples do; the MLP has no dropout or BatchNorm in G)."""
    state.generator.eval()
    images = model_to_images(state.generator(state.fixed_noise.to(state.device)))
    state.generator.train()
    return images


def _progress_bar(enabled: bool, total: int, run: Path, position: int | None = None):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True, desc=str(run),
                position=position)


train_baseline = train_model  # the specified GAN is train_model(BaselineConfig(...)); the name tests and scripts use

__all__ = ["HISTORY_COLUMNS", "ResumePoint", "TrainingState", "check_fresh_run", "find_resume_checkpoint", "prepare_run",
           "resolve_device", "resume_point", "train_baseline", "train_model"]
