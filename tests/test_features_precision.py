"""`--precision bf16`: features close to fp32 ones, but a protocol of its own (cache entries, stored results)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganbench.cli import main
from ganbench.config import EvalConfig
from ganbench.errors import ConfigError, GanbenchWarning
from ganbench.features import base, cache
from ganbench.features.extract import extract_features
from ganbench.features.registry import build_extractor
from ganbench.metrics.fid import fid_from_features
from ganbench.reference import reference_features
from ganbench.results import ResultsStore

EXTRACTOR = "lenet-fashion-mnist"


@pytest.fixture(autouse=True)
def bf16_cpu(monkeypatch):
    """These tests check what bf16 computes, on any CPU: the warning about emulated bf16 is pinned on its own below."""
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_bf16_features_differ_from_fp32_only_slightly(images):
    fp32 = extract_features(build_extractor(EXTRACTOR), images, 32)
    bf16 = extract_features(build_extractor(EXTRACTOR, precision="bf16"), images, 32)
    assert bf16.features.dtype == np.float32 and bf16.logits.dtype == np.float32  # autocast output is cast back
    assert not np.array_equal(bf16.features, fp32.features)  # bf16 really ran
    scale = np.abs(fp32.features).max()
    assert np.abs(bf16.features - fp32.features).max() < 2e-2 * scale
    assert (bf16.predicted_classes == fp32.predicted_classes).mean() >= 0.9
    # FID between the two halves moves by well under 1 %.
    fid32 = fid_from_features(fp32.features[:32], fp32.features[32:])
    fid16 = fid_from_features(bf16.features[:32], bf16.features[32:])
    assert math.isclose(fid16, fid32, rel_tol=1e-2)


def test_bf16_is_its_own_protocol_and_cache_entry(tiny_data_root, tmp_path):
    fp32, bf16 = build_extractor(EXTRACTOR), build_extractor(EXTRACTOR, precision="bf16")
    assert fp32.protocol["preprocessing"] == "lenet-28-gray-unit"  # fp32 protocols (and old caches) are unchanged
    assert bf16.protocol == {**fp32.protocol, "preprocessing": "lenet-28-gray-unit+bf16"}
    assert cache.cache_key(bf16.protocol) != cache.cache_key(fp32.protocol)
    for extractor in (fp32, bf16):
        reference_features(extractor, "fashion-mnist", "test", data_root=tiny_data_root, cache_dir=tmp_path, progress=False)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 2


def test_eval_stores_bf16_results_under_their_own_protocol(tiny_data_root, tmp_path):
    npz = tmp_path / "images.npz"
    np.savez(npz, images=np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8))
    results = tmp_path / "r.sqlite"
    base = ["eval", str(npz), "--extractor", EXTRACTOR, "--reference", "fashion-mnist:test", "--metrics", "fid",
            "--data-root", str(tiny_data_root), "--cache-dir", str(tmp_path / "cache"), "--results", str(results),
            "--device", "cpu", "--quiet", "--format", "json"]
    assert main(base) == 0
    assert main([*base, "--precision", "bf16"]) == 0  # not skipped: another protocol
    with ResultsStore(results, create=False) as store:
        rows = {r["preprocessing"]: r for r in store.rows()}
    assert rows.keys() == {"lenet-28-gray-unit", "lenet-28-gray-unit+bf16"}
    fp32, bf16 = rows["lenet-28-gray-unit"], rows["lenet-28-gray-unit+bf16"]
    assert fp32["protocol_key"] != bf16["protocol_key"]
    assert math.isclose(bf16["value"], fp32["value"], rel_tol=1e-2)


def test_unknown_precision_names_the_flag():
    with pytest.raises(ConfigError, match=r"unknown precision 'fp16'; expected one of fp32, tf32, bf16 \(--precision\)"):
        EvalConfig(paths=("x",), precision="fp16")
    with pytest.raises(ConfigError, match=r"\(--precision\)"):
        build_extractor(EXTRACTOR, precision="fp16")


def test_tf32_is_refused_off_cuda_with_the_fix():
    with pytest.raises(ConfigError, match=r"--precision tf32 is a CUDA tensor-core format and this extractor runs on "
                                          r"cpu; use --precision fp32 or bf16, or --device cuda"):
        build_extractor(EXTRACTOR, precision="tf32", device="cpu")


def test_bf16_on_a_cpu_without_bf16_instructions_warns_that_it_is_slower(monkeypatch):
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: False)
    with pytest.warns(GanbenchWarning, match=r"--precision bf16: this CPU has no bf16 instructions .* slower than fp32, "
                                             r"not faster .* use --precision fp32 here"):
        extractor = build_extractor(EXTRACTOR, precision="bf16", device="cpu")
    assert extractor.precision == "bf16"  # still computed as asked: the numbers are right, only slow
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)
    build_extractor(EXTRACTOR, precision="bf16", device="cpu")  # no warning (pytest turns warnings into errors)


def test_the_cpu_bf16_probe_answers_on_this_machine():
    assert isinstance(torch.ops.mkldnn._is_mkldnn_bf16_supported(), bool)  # the private op the probe relies on exists


def test_a_callers_autocast_does_not_change_fp32_features(images):
    # The extractor ran inside whatever autocast the caller had open: bf16 features labelled fp32, stored and cached
    # under the fp32 protocol (GanbenchMetric.update or ganbench.evaluate inside a mixed-precision training loop).
    extractor = build_extractor(EXTRACTOR)
    plain = extract_features(extractor, images, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = extract_features(extractor, images, 32)
    np.testing.assert_array_equal(inside.features, plain.features)
    np.testing.assert_array_equal(inside.logits, plain.logits)
    bf16 = build_extractor(EXTRACTOR, precision="bf16")
    with torch.autocast("cpu", dtype=torch.float16):  # asked-for bf16 is bf16 whatever the caller's autocast
        np.testing.assert_array_equal(extract_features(bf16, images, 32).features,
                                      extract_features(build_extractor(EXTRACTOR, precision="bf16"), images, 32).features)


def test_float64_as_the_default_dtype_gives_the_same_features(images):
    # torch.set_default_dtype(torch.float64), common in scientific code, made the extractor's weights float64 and
    # its float32 input a raw "Input type (float) and bias type (double) should be the same".
    plain = extract_features(build_extractor(EXTRACTOR), images, 32)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        features = extract_features(build_extractor(EXTRACTOR), images, 32)
    finally:
        torch.set_default_dtype(saved)
    np.testing.assert_array_equal(features.features, plain.features)
