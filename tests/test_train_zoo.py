"""The model zoo: each loss's formula on a known case, each model trains, checkpoints its name, loss and
hyper-parameters, resumes exactly and is evaluated by `ganbench eval` as its own model group; --jobs and torchrun
train seeds in parallel, each run equal to the run trained alone."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import make_idx_split
from torch import nn

from ganbench.cli import main
from ganbench.config import ZooConfig
from ganbench.train import losses
from ganbench.train.models import make_dcgan_discriminator, make_dcgan_generator, make_discriminator, make_networks
from ganbench.train.zoo import MODELS

ZOO = [name for name in MODELS if name != "baseline"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_idx_split(root, "train", 256, seed=1)
    make_idx_split(root, "test", 64, seed=2)
    return root


def _args(model: str, data_root: Path, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    # Batch 16: 8 steps an epoch, so wgan-gp (one G step per 5 critic steps) takes G steps in both epochs.
    return ["train", model, "--dataset", "fashion-mnist", "--data-root", str(data_root), "--out", str(out),
            "--max-train-images", "128", "--batch-size", "16", "--epochs", str(epochs), "--checkpoint-every", "1",
            "--device", "cpu", "--quiet", *extra]


@pytest.fixture(scope="module")
def zoo_out(data_root, tmp_path_factory) -> Path:
    """Every zoo model trained two epochs, seed 0, in one output root."""
    out = tmp_path_factory.mktemp("zoo")
    for model in ZOO:
        assert main(_args(model, data_root, out)) == 0
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the losses, on cases whose values are known -------------------------------------------------------------------

def test_least_squares_losses_are_mao_et_al_with_a0_b1_c1():
    d_real, d_fake = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    assert losses.least_squares_d_loss(d_real, d_fake).item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert losses.least_squares_g_loss(d_fake).item() == pytest.approx(0.5 * 0.5)
    assert losses.least_squares_d_loss(torch.ones(3, 1), torch.zeros(3, 1)).item() == 0.0  # D's optimum


def test_hinge_and_wasserstein_losses():
    d_real, d_fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.0]])
    assert losses.hinge_d_loss(d_real, d_fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert losses.critic_g_loss(d_fake).item() == pytest.approx(1.0)
    assert losses.wasserstein_d_loss(d_real, d_fake).item() == pytest.approx(-1.0 - 1.25)


def test_minimax_g_loss_is_the_saturating_formula_and_nonsaturating_its_practical_variant():
    p = torch.tensor([[0.5], [0.25]])
    assert losses.minimax_g_loss(p).item() == pytest.approx((math.log(0.5) + math.log(0.75)) / 2)
    assert losses.nonsaturating_g_loss(p).item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert losses.bce_d_loss(p, p).item() == pytest.approx(
        -(math.log(0.5) + math.log(0.25)) / 2 - (math.log(0.5) + math.log(0.75)) / 2)
    # Saturation: where D rejects the fakes, the minimax gradient vanishes and the non-saturating one does not.
    logit = torch.tensor([[-8.0]], requires_grad=True)
    (minimax,) = torch.autograd.grad(losses.minimax_g_loss(torch.sigmoid(logit)), logit)
    (nonsaturating,) = torch.autograd.grad(losses.nonsaturating_g_loss(torch.sigmoid(logit)), logit)
    assert abs(minimax.item()) < 1e-3 < abs(nonsaturating.item())


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    # D(x) = w.x + b has gradient w everywhere, so the penalty is (||w|| - 1)^2 at any interpolate.
    gen = torch.Generator().manual_seed(0)
    critic = nn.Linear(784, 1)
    real, fake, eps = torch.rand(8, 784, generator=gen), torch.rand(8, 784, generator=gen), torch.rand(8, 1, generator=gen)
    penalty = losses.gradient_penalty(critic, real, fake, eps)
    assert penalty.item() == pytest.approx((critic.weight.norm().item() - 1.0) ** 2, rel=1e-5)
    penalty.backward()  # create_graph: the penalty reaches the critic's weights
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


# --- the networks ---------------------------------------------------------------------------------------------------

def test_critic_is_the_specified_discriminator_without_its_sigmoid():
    with_sigmoid, critic = make_discriminator(), make_discriminator(sigmoid=False)
    assert [type(m) for m in critic] == [type(m) for m in with_sigmoid][:-1]
    assert isinstance(with_sigmoid[-1], nn.Sigmoid)
    for model in ("lsgan", "wgan-gp", "hinge"):
        assert not isinstance(make_networks(MODELS[model].architecture)[1][-1], nn.Sigmoid)
    assert isinstance(make_networks(MODELS["minimax"].architecture)[1][-1], nn.Sigmoid)


def test_dcgan_networks_have_the_lucic_et_al_layers_and_flat_images_in_and_out():
    g, d = make_dcgan_generator(), make_dcgan_discriminator()
    convs = [(type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride)
             for m in (*g, *d) if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert convs == [("ConvTranspose2d", 128, 64, (4, 4), (2, 2)), ("ConvTranspose2d", 64, 1, (4, 4), (2, 2)),
                     ("Conv2d", 1, 64, (4, 4), (2, 2)), ("Conv2d", 64, 128, (4, 4), (2, 2))]
    linears = [(m.in_features, m.out_features) for m in (*g, *d) if isinstance(m, nn.Linear)]
    assert linears == [(100, 1024), (1024, 7 * 7 * 128), (7 * 7 * 128, 1024), (1024, 1)]
    assert sum(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in g) == 3
    assert sum(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in d) == 2
    images = g(torch.randn(4, 100))
    assert images.shape == (4, 784) and images.abs().max() <= 1.0
    assert d(images).shape == (4, 1)


# --- training, checkpoints, resume ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ZOO)
def test_each_model_trains_checkpoints_its_spec_and_resumes_exactly(model, data_root, zoo_out, tmp_path):
    run = zoo_out / model / "fashion-mnist" / "seed0"
    state = torch.load(run / "epoch_0002.pt", weights_only=True)
    spec = MODELS[model]
    assert state["kind"] == model and state["step"] == 2 * 8
    assert {k: state["config"][k] for k in ("model", "loss", "architecture", "lr", "betas", "n_critic", "gp_weight")} == {
        "model": model, "loss": spec.loss, "architecture": spec.architecture, "lr": spec.lr, "betas": list(spec.betas),
        "n_critic": spec.n_critic, "gp_weight": spec.gp_weight}
    assert state["optimizer_d"]["param_groups"][0]["lr"] == spec.lr
    assert all(math.isfinite(row[k]) for row in state["history"] for k in ("d_loss", "g_loss", "d_real", "d_fake"))
    assert (run / "epoch_0002.png").is_file() and (run / "loss_curve.png").is_file()

    # "killed after epoch 1", continued with --resume: the uninterrupted run's checkpoint, every value bit for bit
    assert main(_args(model, data_root, tmp_path, epochs=1)) == 0
    assert main(_args(model, data_root, tmp_path, "--resume")) == 0
    _assert_equal(torch.load(tmp_path / model / "fashion-mnist/seed0/epoch_0002.pt", weights_only=True), state, "")


def _assert_equal(ours, theirs, where: str) -> None:
    """Every field of two checkpoints equal, tensors bit for bit (the files' bytes may differ in pickling order)."""
    assert type(ours) is type(theirs), where
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in theirs:
            _assert_equal(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list | tuple):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_equal(a, b, f"{where}[{i}]")
    elif isinstance(theirs, torch.Tensor):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), where
    else:
        assert ours == theirs, where


def test_wgan_gp_takes_one_generator_step_per_five_critic_steps_across_epochs(zoo_out):
    state = torch.load(zoo_out / "wgan-gp/fashion-mnist/seed0/epoch_0002.pt", weights_only=True)
    # 16 critic steps: G steps after steps 5, 10 and 15, one in epoch 1 and two in epoch 2
    assert int(state["optimizer_g"]["state"][0]["step"]) == 3
    assert int(state["optimizer_d"]["state"][0]["step"]) == 16


def test_resuming_another_models_run_is_refused(data_root, zoo_out, tmp_path, capsys):
    import shutil

    shutil.copytree(zoo_out / "lsgan", tmp_path / "hinge")  # an lsgan run where a hinge run is expected
    assert main(_args("hinge", data_root, tmp_path, "--resume", epochs=3)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"ganbench: error: --resume: .*seed0/resume\.pt is a 'lsgan' checkpoint, not a hinge run; use the "
                        r"same model or another --out", last), last


@pytest.mark.parametrize(("extra", "pattern"), [
    (["--cuda-graphs"], r"--cuda-graphs does not apply to wgan-gp: its steps alternate 5 critic updates with one "
                        r"generator update .*; train it without --cuda-graphs"),
    (["--compile"], r"--compile does not apply to wgan-gp: torch.compile cannot differentiate its backward again"),
    (["--jobs", "0"], r"--jobs must be at least 1, got 0"),
])
def test_options_that_do_not_apply_are_one_line_errors(data_root, tmp_path, capsys, extra, pattern):
    args = _args("wgan-gp", data_root, tmp_path / "out", *extra)
    args.remove("--device")
    args.remove("cpu")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "out").exists()


def test_zoo_config_takes_the_models_defaults_and_refuses_unknown_models():
    cfg = ZooConfig(model="wgan-gp", dataset="fashion-mnist")
    assert (cfg.lr, cfg.betas, cfg.n_critic, cfg.gp_weight) == (1e-4, (0.5, 0.9), 5, 10.0)
    assert cfg.run_dir == Path("checkpoints/wgan-gp/fashion-mnist/seed0")
    assert ZooConfig(model="lsgan", betas=(0.5, 0.999)).betas == (0.5, 0.999)
    with pytest.raises(Exception, match=r"unknown model 'baseline'; expected one of minimax, lsgan, wgan-gp, hinge, "
                                        r"dcgan \(the baseline is `ganbench train baseline`\)"):
        ZooConfig(model="baseline")


# --- parallel seeds -------------------------------------------------------------------------------------------------

def test_a_seed_trained_in_a_two_job_run_equals_it_trained_alone(data_root, tmp_path):
    assert main(_args("hinge", data_root, tmp_path / "jobs", "--seeds", "0,1", "--jobs", "2", epochs=1)) == 0
    assert main(_args("hinge", data_root, tmp_path / "alone", "--seed", "1", epochs=1)) == 0
    jobs, alone = tmp_path / "jobs/hinge/fashion-mnist", tmp_path / "alone/hinge/fashion-mnist"
    def load(path: Path) -> dict:
        return torch.load(path, weights_only=True)

    _assert_equal(load(jobs / "seed1/epoch_0001.pt"), load(alone / "seed1/epoch_0001.pt"), "")
    assert not torch.equal(load(jobs / "seed0/epoch_0001.pt")["generator"]["0.weight"],
                           load(jobs / "seed1/epoch_0001.pt")["generator"]["0.weight"])


def test_torchrun_deals_the_seeds_to_the_ranks(data_root, tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost"}.items():
        monkeypatch.setenv(name, value)
    assert main(_args("minimax", data_root, tmp_path, "--seeds", "0,1,2", epochs=1)) == 0
    assert sorted(p.name for p in (tmp_path / "minimax/fashion-mnist").iterdir()) == ["seed1"]


# --- evaluation -----------------------------------------------------------------------------------------------------

def test_ganbench_eval_scores_every_zoo_model_as_its_own_group(data_root, zoo_out, tmp_path):
    from ganbench.results import ResultsStore
    from ganbench.results.leaderboard import group_of

    results = tmp_path / "r.sqlite"
    assert main(["eval", str(zoo_out), "--extractor", "lenet-fashion-mnist", "--num-samples", "64", "--metrics", "fid",
                 "--reference", "fashion-mnist:test", "--data-root", str(data_root), "--cache-dir", str(tmp_path / "cache"),
                 "--results", str(results), "--quiet", "--device", "cpu"]) == 0
    with ResultsStore(results, create=False) as store:
        rows = store.rows()
    assert {(r["run_kind"], r["run_epoch"], r["status"]) for r in rows} == {
        (model, epoch, "ok") for model in ZOO for epoch in (1, 2)}
    assert all(math.isfinite(r["value"]) for r in rows)
    groups = {group_of(r["source_path"], r["run_kind"], r["run_dataset"]) for r in rows}
    assert groups == {str(zoo_out / model / "fashion-mnist") for model in ZOO}


@pytest.mark.parametrize("images,batch", [(65, 64), (64, 1)])
def test_dcgan_refuses_a_batch_of_one_image_before_training(tiny_data_root, tmp_path, capsys, images, batch):
    # batch norm cannot train on one image: a traceback (ValueError: Expected more than 1 value per channel) after
    # the run folder was made
    from ganbench.cli import main

    args = ["train", "dcgan", "--dataset", "fashion-mnist", "--data-root", str(tiny_data_root), "--out",
            str(tmp_path / "out"), "--max-train-images", str(images), "--batch-size", str(batch), "--epochs", "1",
            "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("ganbench: error: dcgan's batch norm needs at least 2 images in every batch")
    assert not (tmp_path / "out").exists()
