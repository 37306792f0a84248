"""Typed, frozen configuration for each command, validated in one place.

Defaults live on the fields. The CLI only parses strings into these objects; every range and
consistency check is here, so a config that exists is a config that can run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ganbench.errors import ConfigError
from ganbench.protocol import DATASETS, PRECISIONS
from ganbench.train.zoo import MODELS, SPEC_BETAS

DEVICES = ("auto", "cpu", "cuda")
# Seeds reach torch.Generator.manual_seed (which takes up to 2**64 - 1) and the results store's signed 64-bit
# INTEGER columns, the narrower of the two. (KID's numpy RandomState seed is the fixed metric seed, not --seed.)
SEED_LIMIT = 2**63
MAX_LATENT_DIM = 65_536
# Where a run was written, read its data and how its device was named, not what it computed: left out of the
# weights files it writes (config.json beside them records them), so the same weights are the same bytes.
NOT_IN_WEIGHTS = ("out", "data_root", "device")


def check_seed(seed: int, flag: str = "--seed") -> None:
    if seed < 0:
        raise ConfigError(f"{flag} must be non-negative, got {seed}")
    if seed >= SEED_LIMIT:
        raise ConfigError(f"{flag} must be below 2**63 (seeds are signed 64-bit integers), got {seed}")


def _check_training_run(cfg: BaselineConfig | ClassifierConfig) -> None:
    """The checks both training commands share, each message naming the flag that fixes it."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; expected one of {', '.join(DATASETS)} (--dataset)")
    if cfg.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.max_train_images is not None and cfg.max_train_images < 1:
        raise ConfigError(f"--max-train-images must be at least 1, got {cfg.max_train_images}")
    if cfg.max_train_images is not None and cfg.batch_size > cfg.max_train_images:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than --max-train-images {cfg.max_train_images}; "
            "lower --batch-size or raise --max-train-images"
        )
    check_seed(cfg.seed)
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr must be a positive finite number, got {cfg.lr}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"unknown device {cfg.device!r}; expected one of {', '.join(DEVICES)} (--device)")


@dataclass(frozen=True)
class BaselineConfig:
    """One training run of the specified GAN (one seed)."""

    dataset: str = "mnist"
    epochs: int = 100
    batch_size: int = 64
    seed: int = 0
    lr: float = 2e-4
    betas: tuple[float, float] = SPEC_BETAS
    latent_dim: int = 100
    max_train_images: int | None = None
    checkpoint_every: int = 10
    device: str = "auto"
    out: str = "checkpoints"
    data_root: str | None = None
    compile: bool = False  # torch.compile G and D: the same maths in fewer kernel launches
    cuda_graphs: bool = False  # the whole training step as one CUDA graph, replayed: the same maths in one launch

    # Fields that may change between an interrupted run and its --resume without changing the maths.
    RESUMABLE_CHANGES = ("epochs", "checkpoint_every", "device", "out", "data_root", "compile", "cuda_graphs")
    NOT_IN_WEIGHTS = NOT_IN_WEIGHTS

    def __post_init__(self) -> None:
        _check_training_run(self)
        if not 1 <= self.latent_dim <= MAX_LATENT_DIM:  # not a flag, but a checkpoint's config comes through here
            raise ConfigError(f"latent_dim must be in 1..{MAX_LATENT_DIM}, got {self.latent_dim}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be at least 1 epoch, got {self.checkpoint_every}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"--betas must be two numbers in [0, 1), got {self.betas}")
        if self.compile and self.cuda_graphs:
            raise ConfigError("--compile and --cuda-graphs are alternatives; choose one (--cuda-graphs is the faster on GPUs)")
        if self.cuda_graphs and self.device == "cpu":
            raise ConfigError("--cuda-graphs needs a CUDA device; drop it or use --device cuda")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    @property
    def kind(self) -> str:
        """The model's name in ganbench/train/zoo.py: the checkpoint's kind and the run folder's model part."""
        return "baseline"

    @property
    def run_dir(self) -> Path:
        """OUT/<model>/<dataset>/seed<k>/"""
        return Path(self.out) / self.kind / self.dataset / f"seed{self.seed}"

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> BaselineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def training_identity(self) -> dict:
        """The fields that define the maths of a run; a resume must match these exactly."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE_CHANGES}


@dataclass(frozen=True)
class ZooConfig(BaselineConfig):
    """One training run (one seed) of a zoo model other than the baseline (ganbench/train/zoo.py).

    A hyper-parameter left None takes the model's default from the zoo. The baseline keeps BaselineConfig, so its
    checkpoints carry exactly the config they always did; a zoo checkpoint's config adds the model's name, loss,
    architecture, n_critic and gradient-penalty weight.
    """

    lr: float | None = None  # redeclared: None takes the model's default
    betas: tuple[float, float] | None = None
    model: str = "minimax"
    n_critic: int | None = None
    gp_weight: float | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS or self.model == "baseline":
            zoo = ", ".join(name for name in MODELS if name != "baseline")
            raise ConfigError(f"unknown model {self.model!r}; expected one of {zoo} (the baseline is `ganbench train baseline`)")
        spec = MODELS[self.model]
        for name in ("lr", "betas", "n_critic", "gp_weight"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(spec, name))
        super().__post_init__()
        if self.n_critic < 1:
            raise ConfigError(f"n_critic must be at least 1, got {self.n_critic}")
        if self.gp_weight < 0:
            raise ConfigError(f"the gradient penalty weight must be non-negative, got {self.gp_weight}")
        if self.cuda_graphs and (self.n_critic > 1 or self.gp_weight > 0):
            raise ConfigError(f"--cuda-graphs does not apply to {self.model}: its steps alternate {self.n_critic} critic "
                              "updates with one generator update and its gradient penalty needs a double backward, which "
                              "ganbench does not capture; train it without --cuda-graphs")
        if self.compile and self.gp_weight > 0:
            raise ConfigError(f"--compile does not apply to {self.model}: torch.compile cannot differentiate its backward "
                              "again, which the gradient penalty needs; train it without --compile")

    @property
    def kind(self) -> str:
        return self.model

    def to_dict(self) -> dict:
        spec = MODELS[self.model]  # loss and architecture follow from the model; stored so a checkpoint says them
        return {**super().to_dict(), "loss": spec.loss, "architecture": spec.architecture}


def train_config_class(kind: str) -> type[BaselineConfig]:
    """The config class of a checkpoint's kind."""
    return BaselineConfig if kind == "baseline" else ZooConfig


def check_writable_dir(path: str | Path, flag: str) -> None:
    """Fail before any work if `path` cannot be created or written; leaves nothing behind.

    Probes by creating (and removing) a temp file in the nearest existing ancestor, because
    `os.access` says yes to root even on read-only file systems.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {path}: {probe} exists and is not a directory; choose another {flag}")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".ganbench-write-test-")
    except OSError as exc:
        raise ConfigError(f"{flag} {path} is not writable ({probe}: {exc.strerror}); choose another {flag}") from None
    os.close(fd)
    os.unlink(tmp)


FORMATS = ("table", "json", "csv")
# Under torchrun: split each source's samples across the ranks, or deal whole sources to them.
DISTRIBUTE = ("samples", "sources")


@dataclass(frozen=True)
class EvalConfig:
    """One `ganbench eval` call: what to evaluate, against what, with which protocol, into which store."""

    paths: tuple[str, ...] = ()
    generator: str | None = None
    references: tuple[str, ...] = ()  # empty: protocol.default_references(the checkpoint's dataset)
    num_samples: int = 10_000
    extractors: tuple[str, ...] = ("inception",)
    inception_weights: str | None = None
    preprocessing: str = "tf1"
    vgg16_weights: str | None = None
    wavelet_size: int | None = None  # None: the wavelet extractor's default (28)
    dinov2_weights: str | None = None
    dinov2_preprocessing: str = "dgm-eval"
    clip_weights: str | None = None
    clip_preprocessing: str = "cmmd"
    metrics: tuple[str, ...] | None = None  # None: every metric that applies
    cmmd_estimator: str = "unbiased"  # or "biased", the official CMMD code's V-statistic
    batch_size: int = 250
    device: str = "auto"
    seed: int = 0
    bootstrap: int = 0
    results: str = "results/ganbench.sqlite"
    format: str = "table"
    force: bool = False
    quiet: bool = False
    cache_dir: str | None = None
    data_root: str | None = None
    precision: str = "fp32"
    distribute: str = "samples"

    def __post_init__(self) -> None:
        from ganbench.features.registry import extractor_names
        from ganbench.metrics.registry import METRICS

        if not self.paths:
            raise ConfigError("nothing to evaluate: pass checkpoint files or folders, image folders or .npz files")
        if self.generator is not None and not all(part.strip() for part in self.generator.partition(":")[::2]):
            raise ConfigError(f"--generator expects module:callable, got {self.generator!r}")
        if self.data_root is not None and not os.path.isdir(self.data_root):  # every reference would fail on it
            raise ConfigError(f"--data-root {self.data_root} does not exist or is not a folder")
        if self.cmmd_estimator not in ("unbiased", "biased"):
            raise ConfigError(f"--cmmd-estimator must be unbiased or biased, got {self.cmmd_estimator!r}")
        if self.num_samples < 2:
            raise ConfigError(f"--num-samples must be at least 2, got {self.num_samples}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise ConfigError(f"--bootstrap takes 0 (off) or at least 2 resamples, got {self.bootstrap}")
        check_seed(self.seed)
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)} (--device)")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)} (--format)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)} (--precision)")
        if self.distribute not in DISTRIBUTE:
            raise ConfigError(f"unknown --distribute {self.distribute!r}; expected one of {', '.join(DISTRIBUTE)}")
        unknown = [name for name in self.extractors if name not in extractor_names()]
        if unknown or not self.extractors:
            raise ConfigError(
                f"unknown extractor {', '.join(unknown) or '(none)'}; "
                f"expected one of {', '.join(extractor_names())} (--extractor)"
            )
        if self.metrics is not None:
            unknown = [m for m in self.metrics if m not in METRICS]
            if unknown or not self.metrics:
                raise ConfigError(
                    f"unknown metric {', '.join(unknown) or '(none)'}; expected some of {', '.join(METRICS)} (--metrics)"
                )
            for name in self.metrics:
                need = 2 if name == "kid" else METRICS[name].min_samples  # KID shrinks its subsets to the data
                if self.num_samples < need:
                    raise ConfigError(
                        f"--num-samples {self.num_samples} is too few for {name}, which needs at least {need}; "
                        "raise --num-samples or drop it from --metrics"
                    )

    def extractor_options(self, name: str, device: str, progress: bool) -> dict:
        """`build_extractor`'s options for extractor `name` under this call's weights, preprocessing and precision flags."""
        from ganbench.features.registry import extractor_options

        return extractor_options(name, device=device, precision=self.precision, inception_weights=self.inception_weights,
                                 preprocessing=self.preprocessing, vgg16_weights=self.vgg16_weights,
                                 wavelet_size=self.wavelet_size, dinov2_weights=self.dinov2_weights,
                                 dinov2_preprocessing=self.dinov2_preprocessing, clip_weights=self.clip_weights,
                                 clip_preprocessing=self.clip_preprocessing, data_root=self.data_root, progress=progress)


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
    NOT_IN_WEIGHTS = NOT_IN_WEIGHTS

    def __post_init__(self) -> None:
        _check_training_run(self)
        if self.max_test_images is not None and self.max_test_images < 1:
            raise ConfigError(f"--max-test-images must be at least 1, got {self.max_test_images}")
        if self.out is not None and not str(self.out).endswith(".pt"):
            raise ConfigError(f"--out names the weights file and must end in .pt, got {self.out!r}")

    @property
    def out_path(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        from ganbench.features import lenet

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
