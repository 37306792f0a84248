"""`ganbench train MODEL`: the specified GAN (`baseline`) and the other models of the zoo, one or several seeds,
one after another, in --jobs worker processes, or dealt to the ranks of a torchrun launch."""

from __future__ import annotations

import argparse
import os
import re

from ganbench.config import SPEC_BETAS, BaselineConfig, EvalConfig, ZooConfig, check_seed
from ganbench.errors import ConfigError, GanbenchError
from ganbench.protocol import DATASETS
from ganbench.train.zoo import MODELS

EPILOG = """\
examples:
  ganbench train baseline                                  # the specification: MNIST, 100 epochs, seed 0
  ganbench train baseline --dataset fashion-mnist --seeds 0,1,2
  ganbench train baseline --dataset fashion-mnist --epochs 2 --max-train-images 2048   # a quick smoke run
  ganbench train baseline --dataset fashion-mnist --seeds 0,1,2 --resume   # finish an interrupted call exactly
  ganbench train baseline --dataset fashion-mnist --device cuda --cuda-graphs   # ~0.5 s/epoch on an H200
  ganbench train lsgan --dataset fashion-mnist --seeds 0,1,2 --jobs 3   # three seeds in three processes
  torchrun --nproc-per-node 3 -m ganbench train hinge --dataset fashion-mnist --seeds 0,1,2   # seeds dealt to ranks
  ganbench train baseline --dataset fashion-mnist --eval-every 5   # FID & co. of every 5th epoch into the store

outputs, under OUT/<model>/<dataset>/seed<k>/ (OUT/baseline/... for the specified GAN):
  epoch_XXXX.pt   checkpoints (every --checkpoint-every epochs and at the end; load with weights_only=True)
  epoch_XXXX.png  8x8 grid of samples from fixed noise, one per checkpoint
  resume.pt       the latest epoch, rewritten every epoch (after that epoch's other files) so an interruption
                  loses at most the epoch in progress
  history.csv     per epoch: D loss, G loss, mean D(x), mean D(G(z)), seconds, images/s
  loss_curve.png  the losses and discriminator outputs per epoch
  config.json     the resolved configuration
"""


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]  # an empty part ("0,,1") is an error, not skipped
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed, like 0,1,2")
    return seeds


def _betas(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.5,0.999, got {text!r}") from None
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.5,0.999, got {text!r}")
    return values  # type: ignore[return-value]


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a model", description="Train a model of the zoo, or the classifier.")
    kinds = train.add_subparsers(dest="kind", metavar="KIND", parser_class=type(train))
    kinds.required = True
    for spec in MODELS.values():
        _add_model_parser(kinds, spec)

    from ganbench.cli import classifier

    classifier.add_parser(kinds)


def _add_model_parser(kinds, spec) -> None:
    defaults = BaselineConfig()
    baseline = spec.name == "baseline"
    p = kinds.add_parser(
        spec.name,
        help=("the specified MLP GAN (see baselines/mnist-mlp-gan.md)" if baseline
              else f"zoo: {spec.summary.split(':')[0]} (see baselines/zoo.md)"),
        description=("Train the specified MLP GAN exactly as specified: G 100-256-512-1024-784 (ReLU, Tanh), "
                     "D 784-1024-512-256-1 (LeakyReLU 0.2, Dropout 0.3, Sigmoid), BCE, Adam lr 2e-4." if baseline
                     else f"Train {spec.summary}. See baselines/zoo.md."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument("--dataset", choices=DATASETS, default=defaults.dataset, help="training data (default: %(default)s)")
    p.add_argument("--data-root", metavar="DIR", help="a folder holding the dataset's IDX files (.gz or raw)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs to train (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step (default: %(default)s)")
    seeds = p.add_mutually_exclusive_group()
    # default None: argparse lets an exclusive option through when its value is the default (--seed 0 --seeds 1,2)
    seeds.add_argument("--seed", type=int, default=None, help=f"random seed of the run (default: {defaults.seed})")
    seeds.add_argument("--seeds", type=_seed_list, metavar="S,S,...", help="several runs in one call, e.g. 0,1,2")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train the --seeds in N worker processes at once (several on one GPU, which one small run leaves "
                   "mostly idle); each run equals the run trained alone. Under torchrun the seeds are dealt to the ranks "
                   "instead (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device,
                   help="auto picks cuda when available (default: %(default)s)")
    p.add_argument("--out", default=defaults.out, metavar="DIR", help="output root (default: %(default)s/)")
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, metavar="N",
                   help="write epoch_XXXX.pt every N epochs, and at the end (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="finish each seed's run: continue it exactly from its latest usable checkpoint (first writing "
                   "the checkpoint or grid of that epoch that an interruption left out), skip it when it already has "
                   "--epochs epochs, start it when it has no checkpoint. Without --resume, a seed folder that holds "
                   "checkpoints is refused")
    p.add_argument("--max-train-images", type=int, metavar="N", help="train on the first N images only (smoke tests, demos)")
    betas = ",".join(f"{b:g}" for b in spec.betas)
    p.add_argument("--betas", type=_betas, default=SPEC_BETAS if baseline else None, metavar="B1,B2",
                   help=("Adam betas (default: 0.9,0.999, PyTorch's default, as specified; 0.5,0.999 is the common DCGAN "
                         "variant)" if baseline else f"Adam betas (default: {betas}, this model's)"))
    p.add_argument("--compile", action="store_true",
                   help="torch.compile G and D: fewer, fused kernels, for GPUs where this small GAN is launch-bound "
                   "(the first steps compile for a while; needs a C++ compiler on CPU, Triton on CUDA; default: off)"
                   + ("; not for wgan-gp, whose gradient penalty needs a double backward" if spec.gp_weight else ""))
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture the whole training step (forwards, backwards, both Adam updates, noise and dropout) "
                   "once as a CUDA graph and replay it: one launch per step instead of ~100, the same maths. "
                   "CUDA only; 100 epochs of the baseline took 52 s of steps on an H200, see the README (default: off)"
                   + ("; not for wgan-gp (refused: n_critic steps and the penalty's double backward)" if spec.gp_weight
                      else ""))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_eval_flags(p)
    p.set_defaults(run=run_training, model=spec.name)


def _add_eval_flags(p) -> None:
    defaults = EvalConfig(paths=("-",))
    group = p.add_argument_group(
        "evaluation during training",
        "Score the generator in this process every N epochs, without writing a checkpoint first. The rows are those\n"
        "`ganbench eval` gives that epoch's checkpoint (the same protocol, key and numbers; a later eval of the run\n"
        "skips them), written to --eval-results, where `ganbench report` draws them as curves.")
    group.add_argument("--eval-every", type=int, metavar="N",
                       help="score every N epochs and at the last (default: off)")
    group.add_argument("--eval-extractor", metavar="NAME",
                       help="feature space (default: lenet-DATASET, the classifier of the training data; inception "
                       "needs its weights, see `ganbench eval --help`)")
    group.add_argument("--eval-num-samples", type=int, metavar="N",
                       help=f"generated samples per evaluation (default: {defaults.num_samples})")
    group.add_argument("--eval-reference", action="append", metavar="DATASET:SPLIT|FOLDER|NPZ",
                       help="reference (repeatable; default: DATASET:train:10000 and DATASET:test, as `ganbench eval`)")
    group.add_argument("--eval-metrics", metavar="M[,M]", help="metrics (default: every metric that applies)")
    group.add_argument("--eval-results", metavar="PATH", help=f"results store (default: {defaults.results})")


def configs_from_args(args) -> list[BaselineConfig]:
    seeds = args.seeds if args.seeds is not None else [BaselineConfig.seed if args.seed is None else args.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {','.join(map(str, seeds))}")
    for seed in seeds if args.seeds is not None else ():
        check_seed(seed, "--seeds")
    shared = dict(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, betas=args.betas,
                  max_train_images=args.max_train_images, checkpoint_every=args.checkpoint_every, device=args.device,
                  out=args.out, data_root=args.data_root, compile=args.compile, cuda_graphs=args.cuda_graphs)
    if args.model == "baseline":
        return [BaselineConfig(seed=seed, **shared) for seed in seeds]
    return [ZooConfig(model=args.model, seed=seed, **shared) for seed in seeds]


def eval_every_from_args(args):
    """--eval-every and its options as an EvalEvery (None without --eval-every); the eval flags alone are refused."""
    from ganbench.train_eval import EvalEvery

    given = [flag for flag, value in (("--eval-extractor", args.eval_extractor), ("--eval-reference", args.eval_reference),
                                      ("--eval-metrics", args.eval_metrics), ("--eval-num-samples", args.eval_num_samples),
                                      ("--eval-results", args.eval_results)) if value is not None]
    if args.eval_every is None:
        if given:
            raise ConfigError(f"{given[0]} applies to --eval-every, which is off; add --eval-every N")
        return None
    from ganbench.reference import parse_reference

    metrics = tuple(m.strip() for m in args.eval_metrics.split(",") if m.strip()) if args.eval_metrics else None
    extractor = args.eval_extractor or f"lenet-{args.dataset}"
    try:
        defaults = EvalConfig(paths=(args.out,))
        cfg = EvalConfig(paths=(args.out,), references=tuple(args.eval_reference or ()),
                         num_samples=defaults.num_samples if args.eval_num_samples is None else args.eval_num_samples,
                         extractors=(extractor,), metrics=metrics, device=args.device,
                         results=args.eval_results or defaults.results, quiet=args.quiet, data_root=args.data_root)
        for reference in cfg.references:
            parse_reference(reference)
    except ConfigError as exc:  # eval's messages name eval's flags; here they are --eval-*
        raise ConfigError(EVAL_FLAGS.sub(r"--eval-\1", str(exc))) from exc
    return EvalEvery(args.eval_every, cfg)


EVAL_FLAGS = re.compile(r"(?<![\w-])--(num-samples|extractor|metrics|reference|results)\b")


def run_training(args) -> int:
    from ganbench.distributed import launched_by_torchrun
    from ganbench.train.loop import check_fresh_run, resume_point, train_model

    configs = configs_from_args(args)  # validates every seed's config before the first one trains
    eval_every = eval_every_from_args(args)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if launched_by_torchrun():
        if args.jobs > 1:
            raise ConfigError("--jobs and torchrun are alternatives (torchrun deals the seeds to its ranks); drop --jobs "
                              "or launch without torchrun")
        # Ranks need not talk: each takes every WORLD_SIZE-th run, and its own GPU when it trains on CUDA.
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        configs = configs[rank::world]
        _use_local_gpu(configs)
    for cfg in configs:  # every seed's folder, so a refusal comes before hours of training the first seeds
        if args.resume:
            try:
                resume_point(cfg, quiet=True)
            except GanbenchError:
                resume_point(cfg)  # again, printing the notes on skipped checkpoints that its error refers to
                raise
        else:
            check_fresh_run(cfg)
    if args.jobs > 1 and len(configs) > 1:
        if eval_every is not None and configs:  # here first: weights and reference features cached for the workers
            from ganbench.devices import resolve_device

            eval_every.start(resolve_device(configs[0].device), configs[0].dataset)
        _train_in_workers(configs, args.jobs, args.resume, not args.quiet, eval_every)
        return 0
    for cfg in configs:
        train_model(cfg, resume=args.resume, progress=not args.quiet, eval_every=eval_every)
    return 0


run_baseline = run_training  # the name earlier code used


def _use_local_gpu(configs: list[BaselineConfig]) -> None:
    import torch

    if configs and configs[0].device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def _train_in_workers(configs: list[BaselineConfig], jobs: int, resume: bool, progress: bool, eval_every=None) -> None:
    """Each run in one of `jobs` spawned processes (a fresh interpreter: no CUDA state is forked). A run's maths
    depends only on its config, so it equals the run trained alone. The first failure stops the runs not yet
    started, lets the running ones finish (their checkpoints are sound; --resume continues) and is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ganbench.train.loop import train_model

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=context) as pool:
        futures = [pool.submit(train_model, cfg, resume, progress, position, eval_every)
                   for position, cfg in enumerate(configs)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
