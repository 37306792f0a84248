"""GanbenchMetric (a torchmetrics Metric): compute() equals ganbench's metric functions with eval's options on the same
features, FID equals torchmetrics' FrechetInceptionDistance on them (states and value), FID's state stays the same
size over 1,000 update() calls, max_samples caps the kept features, states merge through the reductions torchmetrics
syncs with, the metric moves with its module, reset can keep the real set, and bad input is one line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import readme_python_block
from torch import nn

from ganbench.errors import ConfigError, MetricError
from ganbench.features.base import ExtractorOutput, FeatureExtractor
from ganbench.features.extract import FeatureSet
from ganbench.features.registry import build_extractor
from ganbench.torchmetrics_metric import METRICS, GanbenchMetric

PRDC = ("precision", "recall", "density", "coverage")

README_EXAMPLE = readme_python_block("metric = GanbenchMetric(")  # the README's text: they cannot drift apart


class PixelMeans(FeatureExtractor):
    """A 16-d extractor fast enough for 1,000 updates: 4x4 mean-pooled gray pixels, scaled by a parameter."""

    name, preprocessing, weights_sha256, feature_dim, num_classes = "pixel-means", "pool-4x4", "none", 16, None

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        gray = images.to(self.scale.device).float().mean(dim=1, keepdim=True) / 255
        return ExtractorOutput(nn.functional.adaptive_avg_pool2d(gray, 4).flatten(1) * self.scale, None)


def images(n: int, seed: int, high: int = 256) -> torch.Tensor:
    return torch.randint(0, high, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(scope="module")
def lenet() -> FeatureExtractor:
    return build_extractor("lenet-fashion-mnist", device="cpu")


@pytest.fixture(scope="module")
def batches(lenet) -> dict:
    """Real (120) and generated (100) images in uneven batches, and the lenet features of each batch."""
    real = [images(n, seed) for n, seed in ((50, 1), (7, 2), (63, 3))]
    fake = [images(n, seed, high=160) for n, seed in ((64, 4), (36, 5))]
    features = {name: torch.cat([lenet(b).features for b in sets]).numpy() for name, sets in (("real", real), ("fake", fake))}
    return {"real": real, "fake": fake, "features": features}


def fed(metric: GanbenchMetric, batches: dict) -> GanbenchMetric:
    for batch in batches["real"]:
        metric.update(batch, real=True)
    for batch in batches["fake"]:
        metric.update(batch, real=False)
    return metric


def test_compute_equals_ganbench_functions_with_the_options_of_eval(lenet, batches):
    from ganbench.metric_values import metrics_from_features

    values = fed(GanbenchMetric(lenet, METRICS), batches).compute()
    protocol = dict(lenet.protocol)
    real, fake = (FeatureSet(batches["features"][name], None, protocol) for name in ("real", "fake"))
    expected = metrics_from_features(real, fake, METRICS)
    assert set(values) == {*METRICS, "kid_std"}
    assert all(v.dtype == torch.float64 and v.ndim == 0 for v in values.values())
    # FID: torchmetrics' raw float64 moments against ganbench's two-pass statistics: 1.4e-9 relative here
    assert float(values["fid"]) == pytest.approx(expected["fid"].value, rel=1e-8)
    for name in ("kid", *PRDC):  # the same functions on the same features: exactly
        assert float(values[name]) == expected[name].value, name
    assert float(values["kid_std"]) == expected["kid"].std


def test_fid_equals_torchmetrics_fid_on_the_same_features(lenet, batches):
    from torchmetrics.image.fid import FrechetInceptionDistance

    class LenetFeatures(nn.Module):  # torchmetrics' custom-extractor contract: images -> (N, num_features)
        num_features = lenet.feature_dim

        def forward(self, x):
            return lenet(x).features.double()

    theirs = FrechetInceptionDistance(feature=LenetFeatures())
    ours = fed(GanbenchMetric(lenet, "fid"), batches)
    fed(theirs, batches)
    for name in ("real", "fake"):
        assert int(getattr(ours, f"{name}_count")) == int(getattr(theirs, f"{name}_features_num_samples"))
        torch.testing.assert_close(getattr(ours, f"{name}_sum"), getattr(theirs, f"{name}_features_sum"), rtol=1e-12, atol=0)
        torch.testing.assert_close(getattr(ours, f"{name}_outer"), getattr(theirs, f"{name}_features_cov_sum"),
                                   rtol=1e-12, atol=1e-12)
    assert float(ours.compute()["fid"]) == pytest.approx(float(theirs.compute()), rel=1e-6)


def _state_bytes(metric: GanbenchMetric) -> int:
    total = 0
    for name in metric._defaults:
        value = getattr(metric, name)
        total += sum(t.numel() * t.element_size() for t in (value if isinstance(value, list) else [value]))
    return total


def test_fid_state_stays_the_same_size_over_1000_updates():
    from ganbench.metrics.fid import fid_from_features

    extractor = PixelMeans()
    metric = GanbenchMetric(extractor, "fid")
    real = [images(3, seed) for seed in range(1000)]
    fake = [images(3, 5000 + seed, high=128) for seed in range(1000)]
    metric.update(real[0], real=True)
    metric.update(fake[0], real=False)
    size = _state_bytes(metric)
    assert size == 2 * (16 * 16 + 16) * 8 + 2 * 8  # two sets of float64 sums and one count each
    for r, f in zip(real[1:], fake[1:], strict=True):
        metric.update(r, real=True)
        metric.update(f, real=False)
    assert _state_bytes(metric) == size and int(metric.real_count) == int(metric.fake_count) == 3000
    with torch.inference_mode():
        expected = fid_from_features(extractor(torch.cat(real)).features, extractor(torch.cat(fake)).features)
    assert float(metric.compute()["fid"]) == pytest.approx(expected, rel=1e-9)


def test_kid_and_prdc_keep_the_features_up_to_max_samples_for_every_metric():
    from ganbench.metrics.fid import fid_from_features
    from ganbench.metrics.kid import kernel_inception_distance
    from ganbench.metrics.manifold import density_coverage, precision_recall

    extractor = PixelMeans()
    metric = GanbenchMetric(extractor, ("fid", "kid", *PRDC), max_samples=50)
    real, fake = images(120, 1), images(90, 2, high=200)
    for start in range(0, 120, 40):
        metric.update(real[start : start + 40], real=True)
    for start in range(0, 90, 30):
        metric.update(fake[start : start + 30], real=False)
    assert int(metric.real_count) == int(metric.fake_count) == 50
    assert sum(len(t) for t in metric.real_features) == sum(len(t) for t in metric.fake_features) == 50
    with torch.inference_mode():
        r, f = extractor(real[:50]).features, extractor(fake[:50]).features  # the first 50 of each, for every metric
    values = metric.compute()
    assert float(values["fid"]) == pytest.approx(fid_from_features(r, f), rel=1e-9)
    assert float(values["kid"]) == kernel_inception_distance(r, f, 100, 50, seed=2020)[0]
    assert float(values["precision"]) == precision_recall(r, f, 3)["precision"]
    assert float(values["coverage"]) == density_coverage(r, f, 5)["coverage"]


def test_states_merge_through_the_reductions_torchmetrics_syncs_with(lenet, batches):
    """merge_state applies each state's dist_reduce_fx, as a sync across ranks does: halves merged equal the whole."""
    whole = fed(GanbenchMetric(lenet, METRICS), batches).compute()
    first, second = GanbenchMetric(lenet, METRICS), GanbenchMetric(lenet, METRICS)
    fed(first, {"real": batches["real"][:1], "fake": batches["fake"][:1]})
    fed(second, {"real": batches["real"][1:], "fake": batches["fake"][1:]})
    second.merge_state(first)  # the incoming state goes first, as rank 0's rows do in a sync: the whole's order
    merged = second.compute()
    assert float(merged["fid"]) == pytest.approx(float(whole["fid"]), rel=1e-8)  # sums in another order: 4e-10 here
    for name in ("kid", *PRDC):
        assert float(merged[name]) == float(whole[name]), name


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_torchmetrics_metric import METRICS, PixelMeans, images
from ganbench.torchmetrics_metric import GanbenchMetric

dist.init_process_group("gloo")
rank = dist.get_rank()
metric = GanbenchMetric(PixelMeans(), METRICS)
real, fake = images(80, 1), images(60, 2, high=200)
metric.update(real[:50] if rank == 0 else real[50:], real=True)  # unequal shares: 50 and 30, 20 and 40
metric.update(fake[:20] if rank == 0 else fake[20:], real=False)
values = {{name: float(value) for name, value in metric.compute().items()}}  # compute() syncs the states
counts = (int(metric.real_count), int(metric.fake_count))
with open({out!r} + str(rank), "w") as f:
    json.dump({{"values": values, "counts": counts}}, f)
dist.destroy_process_group()
"""


def test_two_gloo_ranks_sync_through_torchmetrics_to_the_one_process_values(tmp_path):
    script, out = tmp_path / "ranks.py", tmp_path / "values"
    script.write_text(RANK_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads(Path(f"{out}{rank}").read_text()) for rank in (0, 1)]
    one = GanbenchMetric(PixelMeans(), METRICS)
    one.update(images(80, 1), real=True)
    one.update(images(60, 2, high=200), real=False)
    expected = {name: float(value) for name, value in one.compute().items()}
    assert [rank["counts"] for rank in ranks] == [[50, 20], [30, 40]]  # compute() leaves each rank its own state
    for rank in ranks:
        assert rank["values"]["fid"] == pytest.approx(expected["fid"], rel=1e-9)
        for name in ("kid", "kid_std", *PRDC):  # the features gathered in rank order: the one process's rows
            assert rank["values"][name] == expected[name], name


def test_the_metric_moves_with_its_module_and_its_extractor_stays_in_eval_mode():
    holder = nn.Module()
    holder.metric = GanbenchMetric(PixelMeans(), ("fid", "kid"))
    holder.to("meta")
    metric = holder.metric
    assert metric.extractor.scale.device.type == "meta"
    tensors = [name for name in metric._defaults if name.endswith(("_sum", "_outer", "_count"))]
    assert len(tensors) == 6 and all(getattr(metric, name).device.type == "meta" for name in tensors)
    holder.train()
    assert metric.training and not metric.extractor.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_values_are_the_cpus():
    cpu = GanbenchMetric(PixelMeans(), ("fid", "kid", "precision"))
    gpu = GanbenchMetric(PixelMeans(), ("fid", "kid", "precision")).to("cuda")
    for metric in (cpu, gpu):
        metric.update(images(60, 1), real=True)
        metric.update(images(60, 2, high=200), real=False)
    on_gpu, on_cpu = gpu.compute(), cpu.compute()
    assert on_gpu["fid"].device.type == "cuda" and gpu.real_sum.device.type == "cuda"
    for name in on_cpu:
        assert float(on_gpu[name]) == pytest.approx(float(on_cpu[name]), rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize("keep_real", [True, False])
def test_calling_the_metric_adds_the_batch_as_update_does(lenet, batches, keep_real):
    # torchmetrics' forward computes a batch value by resetting, updating and merging the state back: with the real
    # set kept over resets, every call added the real set again (its count doubled, FID moved); without it every
    # call raised "received 0 real" and left the counts of that one batch. A set metric has no batch value.
    expected = fed(GanbenchMetric(lenet, METRICS), batches).compute()
    metric = GanbenchMetric(lenet, METRICS, reset_real_features=not keep_real)
    for batch in batches["real"]:
        assert metric(batch, real=True) is None
    for batch in batches["fake"]:
        assert metric(batch, real=False) is None
    assert (int(metric.real_count), int(metric.fake_count)) == (120, 100)
    assert {k: float(v) for k, v in metric.compute().items()} == {k: float(v) for k, v in expected.items()}


@pytest.mark.parametrize("convert", [lambda m: m.to(torch.float64), lambda m: m.to(torch.float16),
                                     lambda m: m.set_dtype(torch.float32), lambda m: m.to(device="cpu", dtype=torch.bfloat16)])
def test_dtype_conversions_leave_the_extractor_and_the_sums_as_they_are(lenet, batches, convert):
    # .to(dtype) converted the extractor's weights (a raw "Input type (float) and bias type (double)" in update) and
    # the float64 sums (float16 sums of outer products); set_dtype(float32) broke update's float64 addmm_. The values
    # are defined by float32 features and float64 sums, so a dtype conversion leaves them so (as .double() does).
    expected = fed(GanbenchMetric(lenet, ("fid", "kid")), batches).compute()
    metric = convert(GanbenchMetric(build_extractor("lenet-fashion-mnist", device="cpu"), ("fid", "kid")))
    assert {p.dtype for p in metric.extractor.parameters()} == {torch.float32}
    assert metric.real_sum.dtype == metric.real_outer.dtype == torch.float64
    assert {k: float(v) for k, v in fed(metric, batches).compute().items()} == {k: float(v) for k, v in expected.items()}


def test_kid_std_is_nan_where_eval_stores_none(lenet, batches):
    # With as many real as generated images and fewer than 1,000 of each, every KID subset is both whole sets
    # reordered: the spread over subsets is rounding (~1e-15), which eval stores as no std. The metric returned it.
    from ganbench.metric_values import metrics_from_features

    metric = GanbenchMetric(lenet, ("kid",))
    metric.update(torch.cat(batches["real"])[:100], real=True)
    metric.update(torch.cat(batches["fake"]), real=False)
    values = metric.compute()
    protocol = dict(lenet.protocol)
    expected = metrics_from_features(FeatureSet(batches["features"]["real"][:100], None, protocol),
                                     FeatureSet(batches["features"]["fake"], None, protocol), ("kid",))["kid"]
    assert expected.std is None and float(values["kid"]) == pytest.approx(expected.value, rel=1e-8)  # other batches
    assert torch.isnan(values["kid_std"])


def test_reset_keeps_the_real_set_when_asked():
    metric = GanbenchMetric(PixelMeans(), ("fid", "kid"), reset_real_features=False)
    metric.update(images(20, 1), real=True)
    metric.update(images(20, 2), real=False)
    metric.reset()
    assert int(metric.real_count) == 20 and len(metric.real_features) == 1
    assert int(metric.fake_count) == 0 and metric.fake_features == []
    GanbenchMetric.reset(metric)  # the default resets both
    metric = GanbenchMetric(PixelMeans(), "fid")
    metric.update(images(20, 1), real=True)
    metric.reset()
    assert int(metric.real_count) == 0


def test_the_readme_example_runs():
    namespace: dict = {}
    exec(compile(README_EXAMPLE.replace("500", "40"), "README.md", "exec"), namespace)
    assert set(namespace["values"]) == {"fid", "kid", "kid_std"} and int(namespace["metric"].real_count) == 40
    assert int(namespace["metric"].fake_count) == 0


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match=r"^unknown metric is; GanbenchMetric computes some of fid, kid, precision"):
        GanbenchMetric(PixelMeans(), ("fid", "is"))
    with pytest.raises(ConfigError, match=r"^unknown extractor 'bogus'; expected one of inception, "):
        GanbenchMetric("bogus")
    with pytest.raises(ConfigError, match=r"^max_samples must be an integer >= 2 or None, got 1$"):
        GanbenchMetric(PixelMeans(), max_samples=1)
    metric = GanbenchMetric(PixelMeans())
    with pytest.raises(ConfigError, match=r"^feature extractors take uint8 images with values 0\.\.255, got torch\.float32"):
        metric.update(torch.rand(4, 1, 28, 28), real=True)
    metric.update(images(4, 1), real=True)
    with pytest.raises(MetricError, match=r"^GanbenchMetric: received 4 real and 0 generated images; each set needs at least 2"):
        metric.compute()


@pytest.mark.parametrize("value", [0, 255])
def test_a_fully_collapsed_generator_gets_its_fid_not_an_error(lenet, batches, value):
    # 100 identical generated images: the raw-moment covariance is round-off of either sign, and compute() raised
    # "eigenvalue -5.4e-14 is negative beyond round-off" where fid_from_features gives a number
    from ganbench.metrics.fid import fid_from_features

    metric = GanbenchMetric(lenet, "fid")
    for batch in batches["real"]:
        metric.update(batch, real=True)
    collapsed = torch.full((100, 1, 28, 28), value, dtype=torch.uint8)
    metric.update(collapsed, real=False)
    expected = fid_from_features(batches["features"]["real"], lenet(collapsed).features.numpy())
    assert float(metric.compute()["fid"]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("make", "pattern"), [
    (lambda: GanbenchMetric(PixelMeans(), None), r"metrics must be a metric name or a sequence of them, got NoneType"),
    (lambda: GanbenchMetric("lenet-fashion-mnist", "fid", extractor_options={"bogus": 1}),
     r"extractor_options for lenet-fashion-mnist: .*bogus"),
    (lambda: GanbenchMetric(PixelMeans(), "fid").update(np.zeros((8, 1, 28, 28), np.uint8), real=True),
     r"images must be a torch.Tensor of uint8 NCHW images, got ndarray"),
    (lambda: GanbenchMetric(PixelMeans(), "fid").update([[1]], True), r"images must be a torch.Tensor .*got list"),
    (lambda: GanbenchMetric(PixelMeans(), "fid").update(images(4, 0), real="no"), r"real must be True or False, got 'no'"),
    # torchmetrics' own keyword check raised a raw ValueError
    (lambda: GanbenchMetric(PixelMeans(), "fid", bogus=1), r"GanbenchMetric: .*bogus"),
])
def test_misuse_is_a_ganbench_error_in_one_line(make, pattern):
    # AttributeError / TypeError from deep inside, and real="no" was taken as real
    from ganbench.errors import GanbenchError

    with pytest.raises(GanbenchError, match=pattern):
        make()
