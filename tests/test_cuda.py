"""The CUDA paths, on a machine that has one: training (plain, resumed, compiled) and evaluation agree with the CPU.

CI has no GPU, so this module is skipped there (and says so); it is run on a GPU machine with
`python -m pytest tests/test_cuda.py`. Everything here is also covered on CPU by the rest of the suite;
what these tests add is that the device-specific code (data and RNGs on the GPU, channels_last, TF32 control,
Inductor) computes the same thing.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from ganbench.cli import main
from ganbench.features.extract import extract_features
from ganbench.features.registry import build_extractor
from ganbench.train import checkpoint as ckpt
from ganbench.train.models import make_generator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
EXTRACTOR = "lenet-fashion-mnist"


def _train(root, out, *extra: str) -> list[str]:
    return ["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(root), "--out", str(out),
            "--max-train-images", "128", "--batch-size", "64", "--device", "cuda", "--checkpoint-every", "1",
            "--quiet", *extra]


def _state(path) -> dict:
    return ckpt.load_checkpoint(path)


def test_resumed_cuda_training_is_bit_identical_to_an_uninterrupted_run(tiny_data_root, tmp_path):
    assert main(_train(tiny_data_root, tmp_path / "a", "--epochs", "2")) == 0
    assert main(_train(tiny_data_root, tmp_path / "b", "--epochs", "1")) == 0
    assert main(_train(tiny_data_root, tmp_path / "b", "--epochs", "2", "--resume")) == 0
    run = "baseline/fashion-mnist/seed0/epoch_0002.pt"
    a, b = _state(tmp_path / "a" / run), _state(tmp_path / "b" / run)
    assert a["config"]["device"] == "cuda"
    for part in ("generator", "discriminator"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), (part, name)
    assert a["history"] == b["history"]


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
# Inductor's own imports use torch.jit.script_method, which torch 2.11 deprecates (not ganbench's code).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
# Inductor's advice to enable TF32 matmuls; training keeps float32 arithmetic on purpose.
@pytest.mark.filterwarnings("ignore:TensorFloat32 tensor cores for float32 matrix multiplication:UserWarning")
def test_compiled_cuda_training_matches_eager_and_saves_plain_state(tiny_data_root, tmp_path):
    assert main(_train(tiny_data_root, tmp_path / "eager", "--epochs", "1")) == 0
    assert main(_train(tiny_data_root, tmp_path / "compiled", "--epochs", "1", "--compile")) == 0
    run = "baseline/fashion-mnist/seed0/epoch_0001.pt"
    eager, compiled = _state(tmp_path / "eager" / run), _state(tmp_path / "compiled" / run)
    make_generator().load_state_dict(compiled["generator"])  # no "_orig_mod." prefixes
    # Two steps from the same initial weights: Inductor's fused kernels round differently, but only just.
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert math.isclose(compiled["history"][0][key], eager["history"][0][key], rel_tol=1e-3), key


def test_cuda_graph_training_equals_plain_training_and_resumes_exactly(tiny_data_root, tmp_path):
    # 200 images in batches of 64: three full steps per epoch (warm-up, then capture and replay from epoch 2 on)
    # and a short last batch that runs eagerly between replays.
    extra = ("--max-train-images", "200")
    assert main(_train(tiny_data_root, tmp_path / "plain", "--epochs", "3", *extra)) == 0
    assert main(_train(tiny_data_root, tmp_path / "graphs", "--epochs", "3", "--cuda-graphs", *extra)) == 0
    assert main(_train(tiny_data_root, tmp_path / "resumed", "--epochs", "2", "--cuda-graphs", *extra)) == 0
    assert main(_train(tiny_data_root, tmp_path / "resumed", "--epochs", "3", "--cuda-graphs", "--resume", *extra)) == 0
    run = "baseline/fashion-mnist/seed0/epoch_0003.pt"
    plain, graphs, resumed = (_state(tmp_path / name / run) for name in ("plain", "graphs", "resumed"))
    for part in ("generator", "discriminator"):
        for name, tensor in plain[part].items():
            # The same kernels on the same random numbers: equal up to the order of floating-point reductions.
            torch.testing.assert_close(graphs[part][name], tensor, rtol=1e-4, atol=1e-6)
            assert torch.equal(resumed[part][name], graphs[part][name]), (part, name)
    for row, expected in zip(graphs["history"], plain["history"], strict=True):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert math.isclose(row[key], expected[key], rel_tol=1e-4), (row, expected)
    assert resumed["history"] == graphs["history"]


def test_fp32_features_on_cuda_equal_cpu_ones_and_tf32_settings_are_restored():
    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu = extract_features(build_extractor(EXTRACTOR, device="cpu"), images, 32)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: fp32 must switch it off for its forward pass only
    try:
        gpu = extract_features(build_extractor(EXTRACTOR, device="cuda"), images, 32, "cuda")
        assert torch.backends.cudnn.allow_tf32 is True
        tf32_extractor = build_extractor(EXTRACTOR, device="cuda", precision="tf32")
        tf32 = extract_features(tf32_extractor, images, 32, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    scale = np.abs(cpu.features).max()
    assert np.abs(gpu.features - cpu.features).max() < 1e-5 * scale
    assert np.abs(tf32.features - cpu.features).max() < 1e-2 * scale
    assert tf32_extractor.protocol["preprocessing"] == "lenet-28-gray-unit+tf32"


def test_eval_on_cuda_equals_eval_on_cpu(tiny_data_root, tmp_path):
    assert main(_train(tiny_data_root, tmp_path / "out", "--epochs", "1")) == 0
    values = {}
    for device in ("cpu", "cuda"):
        results = tmp_path / f"{device}.sqlite"
        args = ["eval", str(tmp_path / "out"), "--extractor", EXTRACTOR, "--reference", "fashion-mnist:test",
                "--num-samples", "64", "--batch-size", "32", "--data-root", str(tiny_data_root),
                "--cache-dir", str(tmp_path / f"cache-{device}"), "--results", str(results), "--device", device,
                "--metrics", "fid,is,precision,recall,density,coverage", "--quiet", "--format", "json"]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(args) == 0
        values[device] = {json.loads(line)["metric"]: json.loads(line)["value"] for line in stdout.getvalue().splitlines()}
    assert values["cpu"].keys() == values["cuda"].keys() == {"fid", "is", "precision", "recall", "density", "coverage"}
    # Samples are generated from the same seeded noise on each device; a pixel may round to the neighbouring
    # uint8 value, so the metrics agree closely rather than bit for bit.
    for metric, value in values["cpu"].items():
        assert math.isclose(values["cuda"][metric], value, rel_tol=1e-3, abs_tol=2 / 64), (metric, values)


def test_a_cpu_generator_evaluated_on_cuda_comes_back_on_the_cpu_in_its_mode(tiny_data_root, tmp_path):
    from ganbench.api import evaluate

    module = make_generator()
    module.train()
    evaluate((module, 100), "fashion-mnist:test", extractor=EXTRACTOR, num_samples=64, device="cuda",
             data_root=tiny_data_root, cache_dir=tmp_path / "cache", metrics=["fid"])
    assert {p.device.type for p in module.parameters()} == {"cpu"} and module.training


# ---- metric maths on the GPU: the same numbers as the CPU path -------------------------------------------------


def _gaussian_sets(n_real=1500, n_fake=1700, d=64, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, d), dtype=np.float32)
    fake = (1.1 * rng.standard_normal((n_fake, d)) + 0.15).astype(np.float32)
    return real, fake


def _near_tie_sets(n=300, d=32, k=3, seed=7):
    # fake points one part in 10^6 inside or outside a real point's k-NN radius, far from the origin
    rng = np.random.default_rng(seed)
    real = (300.0 + rng.standard_normal((n, d))).astype(np.float32)
    dist = np.linalg.norm(real[:, None].astype(np.float64) - real[None].astype(np.float64), axis=2)
    kth = np.argsort(dist, axis=1)[:, k]
    fake = (real[kth] + rng.choice([-1.0, 1.0], size=(n, 1)) * 1e-6 * (real[kth] - real)).astype(np.float32)
    return real, fake


def _cuda(*arrays):
    return tuple(torch.from_numpy(a).cuda() for a in arrays)


@pytest.mark.parametrize("sets", [_gaussian_sets, _near_tie_sets])
def test_knn_metrics_on_cuda_count_exactly_as_on_cpu(sets, monkeypatch):
    from ganbench.metrics import _knn
    from ganbench.metrics.manifold import knn_metrics, prdc

    real, fake = sets()
    cpu = knn_metrics(real, fake, 3, 5, chunk_size=512)
    assert knn_metrics(*_cuda(real, fake), 3, 5, chunk_size=512) == cpu
    assert prdc(*_cuda(real, fake), 3) == prdc(real, fake, 3)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # products switch to float64, so the bound stays valid
    try:
        assert knn_metrics(*_cuda(real, fake), 3, 5, chunk_size=512) == cpu
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    monkeypatch.setattr(_knn, "_FLOAT64_BLOCK", 0.0)  # every block with an uncertain pair: float64 products
    assert knn_metrics(*_cuda(real, fake), 3, 5, chunk_size=512) == cpu


def test_fid_and_kid_on_cuda_equal_cpu_to_1e9():
    from ganbench.metrics.fid import feature_statistics, fid_from_features
    from ganbench.metrics.kid import kernel_inception_distance

    real, fake = _gaussian_sets()
    assert math.isclose(fid_from_features(*_cuda(real, fake)), fid_from_features(real, fake), rel_tol=1e-9)
    mu, sigma = feature_statistics(_cuda(real)[0])
    mu_cpu, sigma_cpu = feature_statistics(real)
    np.testing.assert_allclose(sigma, sigma_cpu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mu, mu_cpu, rtol=1e-9, atol=1e-12)
    gpu = kernel_inception_distance(*_cuda(real, fake), subsets=20, subset_size=500, seed=2020)
    cpu = kernel_inception_distance(real, fake, subsets=20, subset_size=500, seed=2020)
    assert math.isclose(gpu[0], cpu[0], rel_tol=1e-9) and math.isclose(gpu[1], cpu[1], rel_tol=1e-9)


def test_metrics_from_features_on_cuda_equal_cpu_bootstrap_included():
    from ganbench.features.extract import FeatureSet
    from ganbench.metric_values import metrics_from_features

    protocol = {"extractor": "lenet-fashion-mnist", "preprocessing": "lenet-28-gray-unit", "weights_sha256": "x"}
    real, fake = _gaussian_sets(n_real=1200, n_fake=1100, d=32, seed=3)
    logits = np.random.default_rng(4).standard_normal((2, 1200, 10)).astype(np.float32)
    real_set, fake_set = FeatureSet(real, logits[0], protocol), FeatureSet(fake, logits[1, :1100], protocol)
    cpu = metrics_from_features(real_set, fake_set, bootstrap=4)
    gpu = metrics_from_features(real_set, fake_set, bootstrap=4, device="cuda")
    assert cpu.keys() == gpu.keys()
    for name, value in cpu.items():
        other = gpu[name]
        assert other.options == value.options, name
        if name in ("fid", "kid"):  # float64 sums in another order
            for a, b in ((other.value, value.value), (other.std, value.std), (other.ci_low, value.ci_low),
                         (other.ci_high, value.ci_high)):
                assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9), (name, a, b)
        else:  # counts, IS and the class metrics: the same numbers
            assert other == value, name
