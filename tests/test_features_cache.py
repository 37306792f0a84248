"""Reference features: one extraction per protocol, cached atomically, never trusted when corrupt or mismatched."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ganbench.errors import ConfigError, DataUnavailableError, GanbenchWarning
from ganbench.features import cache
from ganbench.features.base import ExtractorOutput, FeatureExtractor
from ganbench.features.extract import FeatureSet, extract_features
from ganbench.reference import load_reference_statistics, reference_features


class CountingExtractor(FeatureExtractor):
    """A fixed random projection of the pixels; counts how many images it has seen."""

    name = "counting"
    feature_dim = 8
    num_classes = 3

    def __init__(self, preprocessing="unit", weights_sha256="w1"):
        super().__init__()
        self.preprocessing, self.weights_sha256 = preprocessing, weights_sha256
        self.proj = torch.randn(28 * 28, 11, generator=torch.Generator().manual_seed(0))
        self.images_seen = 0

    def _forward(self, images):
        self.images_seen += images.shape[0]
        out = images.float().flatten(1) / 255 @ self.proj
        return ExtractorOutput(out[:, :8], out[:, 8:])


def _ref(extractor, root, cache_dir, count=20, split="test"):
    return reference_features(extractor, "fashion-mnist", split, count, data_root=root, cache_dir=cache_dir, progress=False)


def test_features_do_not_depend_on_batch_size():
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = extract_features(CountingExtractor(), images, batch_size=3)
    b = extract_features(CountingExtractor(), images, batch_size=10)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)  # float32 matmul rounding
    assert a.features.shape == (10, 8) and a.logits.shape == (10, 3)
    assert a.protocol == {"extractor": "counting", "preprocessing": "unit", "weights_sha256": "w1"}


def test_reference_features_are_extracted_once_then_read_from_the_cache(tiny_data_root, tmp_path):
    extractor = CountingExtractor()
    first = _ref(extractor, tiny_data_root, tmp_path)
    second = _ref(extractor, tiny_data_root, tmp_path)
    assert extractor.images_seen == 20
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.logits, second.logits)
    assert second.source == {"dataset": "fashion-mnist", "split": "test", "count": 20}
    assert not list(tmp_path.rglob("*.tmp")), "atomic writes leave no temp files"


@pytest.mark.parametrize("change", ["count", "preprocessing", "weights", "split"])
def test_every_field_of_the_protocol_keys_the_cache(tiny_data_root, tmp_path, change):
    base = dict(dataset="fashion-mnist", split="test", count=20)
    reference_features(CountingExtractor(), **base, data_root=tiny_data_root, cache_dir=tmp_path, progress=False)
    extractor = CountingExtractor(
        preprocessing="other" if change == "preprocessing" else "unit", weights_sha256="w2" if change == "weights" else "w1"
    )
    other = dict(base, count=10) if change == "count" else dict(base, split="train") if change == "split" else base
    reference_features(extractor, **other, data_root=tiny_data_root, cache_dir=tmp_path, progress=False)
    assert extractor.images_seen == other["count"], "a different protocol must not reuse the cached features"
    assert len(list((tmp_path / "features").glob("*.npz"))) == 2


def test_metric_protocol_version_keys_the_cache(monkeypatch):
    fields = {"dataset": "mnist", "extractor": "x"}
    before = cache.cache_key(fields)
    monkeypatch.setattr(cache, "METRIC_PROTOCOL_VERSION", cache.METRIC_PROTOCOL_VERSION + 1)
    assert cache.cache_key(fields) != before


def test_corrupt_entry_is_recomputed_with_a_warning(tiny_data_root, tmp_path):
    good = _ref(CountingExtractor(), tiny_data_root, tmp_path)
    (entry,) = (tmp_path / "features").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    extractor = CountingExtractor()
    with pytest.warns(GanbenchWarning, match=r"feature cache entry .* is unreadable .*; recomputing it"):
        again = _ref(extractor, tiny_data_root, tmp_path)
    assert extractor.images_seen == 20
    np.testing.assert_array_equal(good.features, again.features)
    with np.load(entry, allow_pickle=False) as npz:  # the bad entry was replaced by a good one
        assert npz["features"].shape == (20, 8)


def test_entry_whose_stored_key_differs_is_not_trusted(tiny_data_root, tmp_path):
    _ref(CountingExtractor(), tiny_data_root, tmp_path)
    (entry,) = (tmp_path / "features").glob("*.npz")
    impostor = CountingExtractor(weights_sha256="w2")
    fields_w2 = {"dataset": "fashion-mnist", "split": "test", "count": 20}
    # Put the w1 entry where the w2 entry belongs: its stored key no longer matches its name.
    target = cache.entry_path(tmp_path, {**fields_w2, "data_sha256": _fingerprint(tiny_data_root), **impostor.protocol})
    target.write_bytes(entry.read_bytes())
    with pytest.warns(GanbenchWarning, match="its stored key does not match the request"):
        _ref(impostor, tiny_data_root, tmp_path)
    assert impostor.images_seen == 20


def _fingerprint(root):
    from ganbench.data import load_dataset

    return load_dataset("fashion-mnist", "test", root, log=False).head(20).fingerprint()


def test_cache_dir_defaults_to_the_environment_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "env"))
    assert cache.default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("GANBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "ganbench"


def test_too_many_reference_images(tiny_data_root, tmp_path):
    with pytest.raises(ConfigError, match="asked for 100 reference images but fashion-mnist test has 64"):
        reference_features(CountingExtractor(), "fashion-mnist", "test", 100, data_root=tiny_data_root, cache_dir=tmp_path)


def test_external_statistics_carry_their_declared_protocol(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    stats = load_reference_statistics(tmp_path / "stats.npz", {"extractor": "inception", "preprocessing": "tf1"})
    np.testing.assert_array_equal(stats.mu, mu)
    assert stats.protocol["preprocessing"] == "tf1" and len(stats.protocol["statistics_sha256"]) == 64


def test_external_statistics_bad_inputs(tmp_path):
    with pytest.raises(DataUnavailableError, match="do not exist"):
        load_reference_statistics(tmp_path / "none.npz", {"extractor": "inception"})
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(3))
    with pytest.raises(ConfigError, match="need arrays 'mu' and 'sigma'"):
        load_reference_statistics(tmp_path / "wrong.npz", {"extractor": "inception"})
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(ConfigError, match=r"expected mu \(D,\) and sigma \(D, D\)"):
        load_reference_statistics(tmp_path / "shape.npz", {"extractor": "inception"})
    np.savez(tmp_path / "ok.npz", mu=np.zeros(2), sigma=np.eye(2))
    with pytest.raises(ConfigError, match="say which extractor"):
        load_reference_statistics(tmp_path / "ok.npz", {})


def test_fid_against_external_statistics_equals_fid_against_the_features(tmp_path):
    from ganbench.metrics import feature_statistics, fid_from_features, frechet_distance

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 12)), rng.normal(loc=0.2, size=(200, 12))
    mu, sigma = feature_statistics(real)
    np.savez(tmp_path / "ttur.npz", mu=mu, sigma=sigma)  # what pytorch-fid --save-stats / TTUR write
    stats = load_reference_statistics(tmp_path / "ttur.npz", {"extractor": "inception", "preprocessing": "tf1"})
    via_file = frechet_distance(stats.mu, stats.sigma, *feature_statistics(fake))
    assert via_file == pytest.approx(fid_from_features(real, fake), rel=1e-12)


def test_a_seeded_subset_is_fixed_by_its_seed_and_cached_apart_from_the_first_images(tiny_data_root, tmp_path):
    from ganbench.data import load_dataset

    data = load_dataset("fashion-mnist", "train", tiny_data_root, log=False)
    first, again, other = data.subset(100, 0), data.subset(100, 0), data.subset(100, 1)
    assert len(first) == 100 and torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert not torch.equal(first.images, data.head(100).images)
    assert data.subset(10_000, 0) is data  # a split smaller than the subset is used whole
    extractor = CountingExtractor()
    subset = reference_features(extractor, "fashion-mnist", "train", 100, subset_seed=0, data_root=tiny_data_root,
                                cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(subset.features, extract_features(CountingExtractor(), first.images).features, rtol=1e-6)
    _ref(extractor, tiny_data_root, tmp_path, count=100, split="train")  # the first 100: another cache entry
    assert extractor.images_seen == 200
    with pytest.raises(ConfigError, match="a seeded reference subset needs a count"):
        reference_features(extractor, "fashion-mnist", "train", subset_seed=0, data_root=tiny_data_root, cache_dir=tmp_path)


# -- entries that do not fit their key, and caches that cannot be written ---------------------------------------------


def _rewrite_entry(entry, **arrays):
    """Replace arrays of an entry, keeping its stored key: what a buggy or interrupted producer could leave."""
    with np.load(entry, allow_pickle=False) as npz:
        stored = {name: npz[name] for name in npz.files}
    np.savez(entry, **{**stored, **arrays})


def test_entry_with_fewer_rows_than_its_key_says_is_recomputed(tiny_data_root, tmp_path):
    _ref(CountingExtractor(), tiny_data_root, tmp_path)  # key: count 20
    (entry,) = (tmp_path / "features").glob("*.npz")
    with np.load(entry) as npz:
        _rewrite_entry(entry, features=npz["features"][:5], logits=npz["logits"][:5])
    extractor = CountingExtractor()
    with pytest.warns(GanbenchWarning, match=r"is not what its key describes \(5 rows, expected 20\); recomputing it"):
        again = _ref(extractor, tiny_data_root, tmp_path)
    assert extractor.images_seen == 20 and len(again) == 20, "an FID against 5 images instead of 20 would follow"


def _fields(count=4):
    return {"dataset": "d", "split": "test", "count": count, "extractor": "e"}


def _compute(calls, rows=4, dim=3, fill=None):
    def compute():
        calls.append(1)
        features = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) if fill is None else np.full((rows, dim), fill)
        return FeatureSet(features=features, logits=np.zeros((rows, 2), np.float32), protocol={"extractor": "e"})
    return compute


@pytest.mark.parametrize(
    ("arrays", "expect_dim", "reason"),
    [
        ({"features": np.full((4, 3), np.nan, np.float32)}, None, r"features hold NaN or infinite values"),
        ({"logits": np.full((4, 2), np.inf, np.float32)}, None, r"logits hold NaN or infinite values"),
        ({"features": np.zeros((4, 3), np.int64)}, None, r"features of dtype int64, expected float"),
        ({"features": np.zeros((4, 5), np.float32)}, 3, r"5-d features, expected 3-d"),
        ({"logits": np.zeros((3, 2), np.float32)}, None, r"logits of shape \(3, 2\) for 4 feature rows"),
        ({"features": np.zeros(4, np.float32)}, None, r"features of shape \(4,\), expected \(N, D\)"),
    ],
)
def test_entry_that_does_not_fit_its_key_is_recomputed(tmp_path, arrays, expect_dim, reason):
    calls: list[int] = []
    cache.cached_features(_fields(), _compute(calls), tmp_path, expect_dim=expect_dim)
    (entry,) = (tmp_path / "features").glob("*.npz")
    _rewrite_entry(entry, **arrays)
    with pytest.warns(GanbenchWarning, match=rf"is not what its key describes \({reason}\); recomputing it"):
        again = cache.cached_features(_fields(), _compute(calls), tmp_path, expect_dim=expect_dim)
    assert len(calls) == 2 and np.isfinite(again.features).all()
    assert len(cache.cached_features(_fields(), _compute(calls), tmp_path, expect_dim=expect_dim)) == 4
    assert len(calls) == 2, "the recomputed entry replaced the bad one"


def test_expect_rows_overrides_the_count_field(tmp_path):
    calls: list[int] = []
    cache.cached_features(_fields(), _compute(calls), tmp_path)
    with pytest.warns(GanbenchWarning, match=r"4 rows, expected 6"):
        cache.cached_features(_fields(), _compute(calls, rows=6), tmp_path, expect_rows=6)
    assert len(calls) == 2


def test_computed_features_that_do_not_fit_are_returned_but_not_stored(tmp_path):
    calls: list[int] = []
    first = cache.cached_features(_fields(), _compute(calls, fill=np.nan), tmp_path)
    assert np.isnan(first.features).all()  # the metric names the problem; the cache must not keep it
    assert not list((tmp_path / "features").glob("*.npz"))


def test_entry_path_that_is_a_folder_is_a_warning_not_a_traceback(tmp_path):
    calls: list[int] = []
    folder = cache.entry_path(tmp_path, _fields())
    folder.mkdir(parents=True)
    with pytest.warns(GanbenchWarning) as caught:
        features = cache.cached_features(_fields(), _compute(calls), tmp_path)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"feature cache entry .* is not a file; recomputing it", m) for m in messages), messages
    assert any(re.search(r"could not be written \(Is a directory\); continuing without caching it", m) for m in messages)
    assert len(features) == 4 and folder.is_dir()


@pytest.mark.parametrize(
    ("error", "reason"),
    [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")],
)
def test_cache_that_cannot_be_written_still_returns_the_features(tmp_path, monkeypatch, error, reason):
    def refuse(path, write):
        raise OSError(error, os.strerror(error), str(path))

    monkeypatch.setattr(cache, "atomic_write_bytes", refuse)
    calls: list[int] = []
    with pytest.warns(GanbenchWarning, match=rf"^feature cache entry \S+ could not be written \({reason}\); continuing "
                                             r"without caching it \(free space or pass a writable --cache-dir\)$"):
        features = cache.cached_features(_fields(), _compute(calls), tmp_path)
    assert len(features) == 4 and len(calls) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the monkeypatched test covers it")
def test_read_only_cache_dir_still_returns_the_features(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.warns(GanbenchWarning, match=r"could not be written \(Permission denied\)"):
            features = cache.cached_features(_fields(), _compute([]), tmp_path)
    finally:
        tmp_path.chmod(0o700)
    assert len(features) == 4


def test_a_miss_removes_the_leftovers_of_killed_writes_but_not_live_ones(tmp_path):
    from ganbench.atomic import temporary_prefix

    folder = tmp_path / "features"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    killed = folder / temporary_prefix("x.npz").replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-")
    killed = killed.with_name(killed.name + "abcd1234.tmp")
    live = folder / (temporary_prefix("y.npz") + "abcd1234.tmp")
    killed.write_bytes(b"half")
    live.write_bytes(b"half")
    cache.cached_features(_fields(), _compute([]), tmp_path)
    assert not killed.exists() and live.exists()
