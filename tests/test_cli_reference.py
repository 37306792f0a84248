"""`ganbench reference`: reference features through the CLI, cached, exported as mu/sigma, and its errors."""

from __future__ import annotations

import errno
import os
import re
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


def test_stats_out_that_is_a_folder_is_refused_before_extracting(tiny_data_root, tmp_path, capsys):
    folder = tmp_path / "stats"
    folder.mkdir()
    assert main(_args(tiny_data_root, tmp_path / "cache", "--count", "20", "--stats-out", str(folder))) == 2
    err = capsys.readouterr().err
    assert err == f"ganbench: error: --stats-out {folder} is a folder; pass a file path such as {folder / 'stats.npz'}\n"
    assert folder.is_dir() and not list(folder.iterdir()) and not (tmp_path / "cache").exists()


def test_stats_out_in_a_folder_that_cannot_be_written_is_refused_before_extracting(tiny_data_root, tmp_path, capsys,
                                                                                   monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):  # root writes into chmod'ed folders, so a read-only file system is simulated
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(_args(tiny_data_root, tmp_path / "cache", "--count", "20", "--stats-out", str(tmp_path / "s.npz"))) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"ganbench: error: --stats-out \S+ is not writable \(\S+: Read-only file system\); "
                        r"choose another --stats-out\n", err), err
    assert not (tmp_path / "cache").exists()


def test_stats_out_on_a_full_disk_is_one_line_naming_the_file(tiny_data_root, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):  # a write to a full disk: errno and strerror, no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert main(_args(tiny_data_root, tmp_path / "cache", "--count", "20")) == 0  # cached: only --stats-out writes next
    monkeypatch.setattr(np, "savez", full)
    stats = tmp_path / "s.npz"
    assert main(_args(tiny_data_root, tmp_path / "cache", "--count", "20", "--stats-out", str(stats))) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"ganbench: error: disk full: No space left on device ({stats}); free some space or write elsewhere " \
                      "(--out, --cache-dir, --results, --stats-out)"
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"], "no temp file left beside --stats-out"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the monkeypatched test covers it")
def test_stats_out_in_a_read_only_folder_is_refused(tiny_data_root, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        assert main(_args(tiny_data_root, tmp_path / "cache", "--stats-out", str(folder / "s.npz"))) == 2
    finally:
        folder.chmod(0o700)
    assert re.search(r"--stats-out \S+ is not writable \(\S+: Permission denied\)", capsys.readouterr().err)


def test_reference_help_names_no_flag_it_does_not_have(capsys):
    # it said "vgg16 when --metrics asks for precision and/or recall only": reference has no --metrics
    with pytest.raises(SystemExit):
        main(["reference", "--help"])
    out = capsys.readouterr().out
    assert "--metrics" not in out and "default: inception" in out
