"""`ganbench reference`: reference features through the CLI, cached, exported as mu/sigma, and its errors."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest

from ganbench.cli import main
from ganbench.data import load_dataset
from ganbench.features.extract import extract_features
from ganbench.features.registry import build_extractor
from ganbench.metrics import feature_statistics


def _args(root, cache, *extra):
    return ["reference", "--dataset", "fashion-mnist", "--split", "test", "--data-root", str(root), "--cache-dir", str(cache),
            "--extractor", "lenet-fashion-mnist", "--device", "cpu", "--quiet", *extra]


def test_reference_features_are_cached_and_exported_as_pytorch_fid_statistics(tiny_data_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(_args(tiny_data_root, cache, "--count", "40", "--stats-out", str(tmp_path / "stats.npz"))) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist:test n=40 dim=128" in out and "extractor=lenet-fashion-mnist" in out
    (entry,) = (cache / "features").glob("*.npz")
    stamp = entry.stat().st_mtime_ns

    images = load_dataset("fashion-mnist", "test", tiny_data_root, log=False).images[:40]
    direct = extract_features(build_extractor("lenet-fashion-mnist"), images)
    mu, sigma = feature_statistics(direct.features)
    with np.load(tmp_path / "stats.npz") as stats:
        np.testing.assert_allclose(stats["mu"], mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats["sigma"], sigma, rtol=1e-4, atol=1e-5)

    assert main(_args(tiny_data_root, cache, "--count", "40")) == 0
    assert entry.stat().st_mtime_ns == stamp, "the second call must read the cache, not rewrite it"


def test_inception_without_weights_offline_is_one_line_naming_the_fixes(tiny_data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GANBENCH_INCEPTION_WEIGHTS", raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(_args(tiny_data_root, tmp_path / "cache", "--extractor", "inception")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganbench: error: the FID Inception weights")
    fixes = ("--inception-weights PATH", "GANBENCH_INCEPTION_WEIGHTS=PATH", "--extractor lenet-fashion-mnist",
             str(tmp_path / "torch"))
    for fix in fixes:
        assert fix in err[0]
    assert not (tmp_path / "cache").exists(), "no reference features from a substitute network"


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--extractor", "vgg"], r"unknown extractor vgg; expected one of inception, lenet-fashion-mnist, lenet-mnist"),
        (["--count", "1"], r"--count must be at least 2"),
        (["--count", "1000"], r"asked for 1000 reference images but fashion-mnist test has 64"),
        (["--extractor", "lenet-fashion-mnist,lenet-mnist", "--stats-out", "x.npz"], r"--stats-out writes one extractor"),
        (["--inception-weights", "/none.pth", "--extractor", "inception"], r"--inception-weights /none.pth: no such file"),
    ],
)
def test_bad_reference_requests(tiny_data_root, tmp_path, capsys, extra, pattern):
    import re

    assert main(_args(tiny_data_root, tmp_path / "cache", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(pattern, err[-1]) and "Traceback" not in "\n".join(err)
