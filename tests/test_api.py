"""`ganbench.evaluate`: the values, protocol keys and store rows of `ganbench eval` for the same checkpoint; in-memory
sources (generator modules, callables, tensors) giving the same numbers as the checkpoint they come from; the result's
table and pandas forms; the README example; bad input raising the CLI's one-line messages.

One tiny baseline run (1 epoch on 128 random images) is trained once per module; sources are scored with the shipped
lenet-fashion-mnist extractor against the tiny 64-image test split, well under a second each on a CPU.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_split, readme_python_block

from ganbench.api import evaluate
from ganbench.cli import main
from ganbench.errors import CheckpointError, ConfigError, GanbenchError, MetricError, SampleError
from ganbench.results import ResultsStore

EXTRACTOR = "lenet-fashion-mnist"
ALL_METRICS = ("fid", "is", "kid", "precision", "recall", "density", "coverage", "classes_covered", "class_kl")
N = 64  # generated images, and images in the tiny test split
CHECKPOINT = "checkpoints/baseline/fashion-mnist/seed0/epoch_0001.pt"  # the README example's path, under `base`

README_EXAMPLE = readme_python_block("result = ganbench.evaluate(")  # the README's text: they cannot drift apart


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder with data/ (tiny IDX splits), cache/ and the README's checkpoint path, from a 1-epoch run."""
    base = tmp_path_factory.mktemp("api")
    (base / "data").mkdir()
    make_idx_split(base / "data", "train", 256, seed=1)
    make_idx_split(base / "data", "test", N, seed=2)
    assert main(["train", "baseline", "--dataset", "fashion-mnist", "--data-root", str(base / "data"),
                 "--out", str(base / "checkpoints"), "--max-train-images", "128", "--epochs", "1", "--quiet"]) == 0
    assert (base / CHECKPOINT).is_file()
    return base


def run(base: Path, source, **options):
    """evaluate() with the tests' protocol: lenet, the tiny test split, N samples, CPU, the module's cache."""
    options = {"extractor": EXTRACTOR, "num_samples": N, "device": "cpu", "data_root": base / "data",
               "cache_dir": base / "cache", **options}
    return evaluate(source, options.pop("reference", "fashion-mnist:test"), **options)


def cli(base: Path, results: Path, *paths, extra: tuple[str, ...] = ()) -> int:
    return main(["eval", *map(str, paths), "--extractor", EXTRACTOR, "--num-samples", str(N), "--reference",
                 "fashion-mnist:test", "--data-root", str(base / "data"), "--cache-dir", str(base / "cache"),
                 "--results", str(results), "--quiet", "--device", "cpu", *extra])


def stored(results: Path) -> dict[str, dict]:
    with ResultsStore(results, create=False) as store:
        return {row["metric"]: row for row in store.rows()}


# -- the numbers of `ganbench eval` --------------------------------------------------------------------------------------


def test_a_checkpoint_gives_the_values_protocol_keys_and_rows_of_ganbench_eval(base, tmp_path):
    checkpoint = base / CHECKPOINT
    assert cli(base, tmp_path / "cli.sqlite", checkpoint) == 0
    expected = stored(tmp_path / "cli.sqlite")
    result = run(base, checkpoint, store=tmp_path / "api.sqlite")
    assert set(result.values) == set(ALL_METRICS) == set(expected)
    written = stored(tmp_path / "api.sqlite")
    for score in result.scores:
        row = expected[score.metric]
        assert score.value == row["value"] and score.std == row["std"], score.metric  # exactly: the same code path
        assert score.protocol.key == row["protocol_key"] == written[score.metric]["protocol_key"], score.metric
        assert written[score.metric]["value"] == row["value"]
        assert written[score.metric]["source_sha256"] == row["source_sha256"] == result.source_sha256
        assert (written[score.metric]["run_epoch"], written[score.metric]["run_dataset"]) == (1, "fashion-mnist")
    other_seed = run(base, checkpoint, seed=1, metrics="fid")
    assert other_seed["fid"] != result["fid"] and other_seed.scores[0].protocol.seed == 1


def test_generator_module_callable_and_tensor_give_the_checkpoints_numbers(base):
    from ganbench.samples import generate, load_baseline_generator

    checkpoint = run(base, base / CHECKPOINT, metrics=["fid", "kid", "precision"])
    module, latent_dim, _ = load_baseline_generator(base / CHECKPOINT)
    module.train()
    images = generate(module, latent_dim, N, seed=0, batch_size=250)
    module.train()
    from_module = run(base, (module, latent_dim), metrics=["fid", "kid", "precision"])
    assert module.training, "the caller's module comes back in the mode it was in"
    module.latent_dim = latent_dim
    from_attribute = run(base, module, metrics=["fid", "kid", "precision"])
    asked = []
    from_callable = run(base, lambda n: asked.append(n) or images, metrics=["fid", "kid", "precision"])
    from_tensor = run(base, images, metrics=["fid", "kid", "precision"])
    assert asked == [N]
    for result in (from_module, from_attribute, from_callable, from_tensor):
        assert result.values == checkpoint.values, result.source
        assert [s.protocol.key for s in result.scores] == [s.protocol.key for s in checkpoint.scores]
    # in memory, a source is keyed by the samples it gave: the same images, the same key
    assert from_module.source_sha256 == from_callable.source_sha256 == from_tensor.source_sha256
    assert from_module.source.startswith("<generator ") and from_tensor.source == "<Tensor torch.uint8 64x1x28x28>"


def test_the_callers_module_comes_back_on_the_device_it_was_on():
    # Generation moves the module to the evaluation device. Restoring it read the device of a parameter captured
    # before the move, but Module.to moves a parameter in place, so that parameter was already on the evaluation
    # device: a CPU generator evaluated with device="cuda" stayed on the GPU. "meta" stands in for the GPU here,
    # each parameter moved in place as CPU -> CUDA moves it (tests/test_cuda.py checks the real thing); nothing can
    # be copied back from "meta", so the move back is only recorded.
    from ganbench.api import _borrowed

    module = torch.nn.Linear(2, 2)
    moves = []

    def to(device):
        moves.append(torch.device(device))
        if moves[-1].type == "meta":
            for parameter in module.parameters():
                torch.utils.swap_tensors(parameter, torch.nn.Parameter(parameter.detach().to("meta")))
        return module

    module.to = to
    with _borrowed(module):
        module.to("meta")
    assert moves == [torch.device("meta"), torch.device("cpu")]


def test_every_submodule_of_the_callers_generator_comes_back_in_its_own_mode(base):
    # Only the top module's flag was restored: a generator in training mode with a frozen BatchNorm came back with
    # that BatchNorm unfrozen (module.train(True) sets every submodule).
    module = torch.nn.Sequential(torch.nn.Linear(8, 784), torch.nn.BatchNorm1d(784), torch.nn.Tanh())
    module.train()
    module[1].eval()
    run(base, (module, 8), metrics=["fid"])
    assert [m.training for m in module.modules()] == [True, True, False, True]


def test_evaluate_and_the_metric_leave_the_callers_random_stream_and_dtype_alone(base):
    # Building the extractor and the checkpoint's generator ran PyTorch's default initialisation (before the saved
    # weights replaced it), which drew from the caller's global random stream: a seeded training loop that scores
    # itself went on with other random numbers than without the score.
    from ganbench import GanbenchMetric

    torch.manual_seed(0)
    expected = torch.rand(3)
    for act in (lambda: run(base, base / CHECKPOINT, metrics=["fid"]), lambda: GanbenchMetric(EXTRACTOR, ["fid"])):
        torch.manual_seed(0)
        act()
        assert torch.equal(torch.rand(3), expected)
    # float64 as the default dtype (scientific code sets it) gave "Input type (float) and bias type (double)"
    plain = run(base, base / CHECKPOINT, metrics=["fid", "kid"])
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert run(base, base / CHECKPOINT, metrics=["fid", "kid"]).values == plain.values
    finally:
        torch.set_default_dtype(saved)


def test_an_npz_and_a_folder_of_the_images_give_the_tensors_numbers(base, tmp_path):
    from PIL import Image

    from ganbench.samples import file_sha256

    pixels = np.random.default_rng(7).integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=pixels)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(tmp_path / "pngs" / f"{i:03d}.png")
    tensor = run(base, torch.from_numpy(pixels)[:, None], metrics="fid,kid,density")
    for path in (tmp_path / "images.npz", tmp_path / "pngs"):
        result = run(base, path, metrics="fid,kid,density")
        assert result.values == tensor.values and result.source == str(path)
    assert run(base, tmp_path / "images.npz", metrics="fid").source_sha256 == file_sha256(tmp_path / "images.npz")


def test_a_statistics_reference_gives_fid_and_refuses_metrics_that_need_images(base, tmp_path):
    from ganbench.features.registry import build_extractor
    from ganbench.metrics.fid import feature_statistics
    from ganbench.reference import reference_features

    real = reference_features(build_extractor(EXTRACTOR, device="cpu"), "fashion-mnist", "test",
                              data_root=base / "data", cache_dir=base / "cache", progress=False)
    mu, sigma = feature_statistics(real.features)
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=mu, sigma=sigma)
    by_stats = run(base, base / CHECKPOINT, reference=stats, metrics=["fid"])
    by_images = run(base, base / CHECKPOINT, metrics=["fid"])
    assert by_stats["fid"] == pytest.approx(by_images["fid"], rel=1e-9)
    assert "reference_sha256" in by_stats.scores[0].protocol.options
    with pytest.raises(ConfigError, match=r"holds statistics \(mu, sigma\), not images, so kid cannot use it"):
        run(base, base / CHECKPOINT, reference=stats, metrics=["fid", "kid"])
    # wavelet's fwd needs the reference's features: it said "no metric can be computed from 64 sample(s)"
    with pytest.raises(ConfigError, match=r"holds statistics \(mu, sigma\), which serve fid only; the wavelet "
                                          r"extractor's metrics \(fwd\) need the reference's features"):
        run(base, base / CHECKPOINT, reference=stats, extractor="wavelet")


def test_ganbench_evaluate_is_the_function_even_after_the_cli_modules_are_imported():
    import ganbench.scoring  # noqa: F401  imports every module of the eval path
    import ganbench.sweep  # noqa: F401

    assert ganbench.evaluate is evaluate, "a submodule named evaluate would shadow the function once imported"


def test_the_readmes_public_names_import_from_ganbench_and_are_listed():
    import ganbench
    from ganbench.errors import GanbenchError as Defined

    assert ganbench.GanbenchError is Defined  # what every bad option raises: catchable without knowing ganbench.errors
    assert {"evaluate", "Evaluation", "GanbenchMetric", "GanbenchError"} <= set(dir(ganbench))


# -- the result ------------------------------------------------------------------------------------------------------------


def test_the_result_prints_as_a_table_and_converts_to_pandas(base):
    result = run(base, base / CHECKPOINT, metrics=["fid", "kid", "is"])
    text = str(result)
    assert text.splitlines()[0] == f"{base / CHECKPOINT} vs fashion-mnist:test"
    assert re.search(r"lenet-fashion-mnist \(lenet-28-gray-unit, weights [0-9a-f]{12}\), 64 generated, 64 reference, "
                     r"seed 0", text)
    assert re.search(r"^  fid +\d", text, re.M) and re.search(r'^  kid +[-\d.e]+ {13}\{"degree":3', text, re.M)
    assert re.search(r'^  is +[\d.]+ +[\d.e-]+  \{"seed":2020,"splits":10\}$', text, re.M)
    assert repr(result).startswith("Evaluation(") and "fid=" in repr(result)
    row = result.to_dict()
    # as many generated as reference images: every KID subset is both whole sets, so it has no spread to report
    assert row["fid"] == result["fid"] and result.scores[1].std is None and "kid_std" not in row
    assert row["is_std"] == result.scores[2].std > 0
    assert (row["extractor"], row["reference"], row["num_samples"], row["seed"]) == (EXTRACTOR, "fashion-mnist:test", N, 0)
    frame = result.to_frame()
    assert list(frame["metric"]) == ["fid", "kid", "is"] and list(frame["value"]) == list(result.values.values())
    assert list(frame["protocol_key"]) == [s.protocol.key for s in result.scores]
    assert '"subset_size":64' in frame["options"][1]
    with pytest.raises(KeyError, match="'precision' was not computed; this evaluation holds fid, kid, is"):
        result["precision"]
    with pytest.raises(AttributeError):
        result.source = "other"  # frozen


def test_nothing_is_written_without_store_and_too_few_images_are_noted(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(base, torch.zeros(5, 1, 28, 28, dtype=torch.uint8))
    assert set(result.values) == {"fid", "kid", "precision", "recall", "classes_covered", "class_kl"}
    assert any("5 images, fewer than num_samples 64; using all" in note for note in result.notes)
    assert any(re.search(r"not computed: is \(needs at least 10 generated samples, got 5\); density", n) for n in result.notes)
    assert "note: " in str(result)
    assert list(tmp_path.iterdir()) == [], "no results store (nor anything else) is written without store="


def test_the_readme_example_runs(base, tmp_path, monkeypatch):
    """The README's example, with 64 samples instead of 10,000, the tiny split as the installed copy and caches here."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.setattr("ganbench.data.DEBIAN_FASHION_MNIST", base / "data")
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path / "nodata"))
    code = README_EXAMPLE.replace("10_000", str(N))
    assert code.count(str(N)) == 2
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert set(namespace["row"]) >= {"source", "extractor", "reference", "num_samples", *ALL_METRICS}
    assert set(namespace["noise"].values) == {"fid", "kid"} and namespace["fid"] == namespace["result"]["fid"]
    assert (tmp_path / "results" / "ganbench.sqlite").is_file()
    assert set(stored(tmp_path / "results" / "ganbench.sqlite")) == {"fid", "kid"}


# -- bad input: the CLI's one-line messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"extractor": "bogus"}, ConfigError, r"^unknown extractor bogus; expected one of inception, lenet-fashion-mnist, "),
        ({"metrics": "fid,bogus"}, ConfigError, r"^unknown metric bogus; expected some of fid, is, .* \(--metrics\)$"),
        ({"num_samples": 5, "metrics": ["is"]}, ConfigError, r"^--num-samples 5 is too few for is, which needs at least 10"),
        ({"reference": "fashion-mnist:val"}, ConfigError, r"^--reference fashion-mnist:val: unknown split 'val'"),
        ({"reference": "nowhere/at/all"}, ConfigError, r"^--reference nowhere/at/all: expected DATASET:SPLIT"),
        ({"metrics": ["is"], "source": torch.zeros(5, 1, 28, 28, dtype=torch.uint8)}, MetricError,
         r"^<Tensor torch.uint8 5x1x28x28> vs fashion-mnist:test: not computed: is \(needs at least 10 generated"),
        ({"metrics": ["fid", "authenticity"]}, MetricError,
         r"vs fashion-mnist:test: authenticity not computed: the memorization metrics need a DATASET:train\[:N\] reference"),
        ({"source": torch.zeros(8, 28, 28)}, GanbenchError, r"gave torch.float32 \(8, 28, 28\); expected uint8 NCHW images"),
        ({"source": 3}, ConfigError, r"^cannot evaluate a int; expected a checkpoint, folder or \.npz path"),
        # wrong types: TypeErrors from deep inside, or silently accepted
        ({"metrics": 5}, ConfigError, r"^metrics: expected a name, a list of names or None, got int$"),
        ({"num_samples": "50"}, ConfigError, r"^num_samples: expected an integer, got str '50'$"),
        ({"num_samples": 50.5}, ConfigError, r"^num_samples: expected an integer, got float 50.5$"),
        ({"num_samples": True}, ConfigError, r"^num_samples: expected an integer, got bool True$"),
        ({"seed": "x"}, ConfigError, r"^seed: expected an integer, got str 'x'$"),
        ({"extractor": ["lenet-fashion-mnist"]}, ConfigError, r"^extractor: expected one extractor name, got list"),
        ({"store": 5}, ConfigError, r"^store: expected a path or None, got int$"),
        ({"reference": torch.zeros(2)}, ConfigError, r"^reference: expected DATASET:SPLIT\[:N\], a folder or an \.npz "
                                                     r"path, got Tensor$"),
        # Inception's preprocessing under another extractor: the CLI refuses it (a choice), the API took it silently
        ({"preprocessing": "x"}, ConfigError, r"^unknown Inception preprocessing 'x'; expected one of: tf1, "),
        # a callable's failure was a raw ZeroDivisionError (a generator's is a SampleError); a callable giving fewer
        # images than asked was refused for a tensor and scored with a note for a numpy array
        ({"source": lambda n: 1 / 0}, SampleError, r"^<callable .*<lambda>> failed: ZeroDivisionError: division by zero$"),
        ({"source": lambda n: np.zeros((10, 1, 28, 28), np.uint8)}, SampleError,
         r"^<callable .*<lambda>> returned 10 images when asked for 64$"),
    ],
)
def test_bad_options_raise_the_clis_one_line_messages(base, options, error, pattern):
    options = dict(options)
    with pytest.raises(error, match=pattern) as raised:
        run(base, options.pop("source", base / CHECKPOINT), **options)
    assert "\n" not in str(raised.value)


def test_numpy_integers_are_integers(base):
    assert run(base, base / CHECKPOINT, metrics=["fid"], num_samples=np.int64(N), seed=np.int32(0)).values == \
        run(base, base / CHECKPOINT, metrics=["fid"]).values


def test_the_same_bad_options_through_the_cli_say_the_same(base, tmp_path, capsys):
    for extra, options in [(("--extractor", "bogus"), {"extractor": "bogus"}),
                           (("--metrics", "fid,bogus"), {"metrics": "fid,bogus"})]:
        assert cli(base, tmp_path / "r.sqlite", base / CHECKPOINT, extra=extra) == 2
        line = capsys.readouterr().err.strip()
        with pytest.raises(GanbenchError) as raised:
            run(base, base / CHECKPOINT, **options)
        assert line == f"ganbench: error: {raised.value}"


def test_a_corrupt_checkpoint_raises_the_error_ganbench_eval_records(base, tmp_path):
    corrupt = tmp_path / "epoch_0001.pt"
    corrupt.write_bytes((base / CHECKPOINT).read_bytes()[:5000])
    assert cli(base, tmp_path / "r.sqlite", corrupt) == 1
    with ResultsStore(tmp_path / "r.sqlite", create=False) as store:
        recorded = {row["error"] for row in store.rows()}
    assert len(recorded) == 1 and "corrupt or truncated" in next(iter(recorded))
    with pytest.raises(CheckpointError) as raised:
        run(base, corrupt, store=tmp_path / "api.sqlite")
    assert str(raised.value) == next(iter(recorded)), "a failed source raises, never returns NaN"
    assert not (tmp_path / "api.sqlite").exists()


def test_a_missing_reference_dataset_raises_as_the_cli_records_it(base, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GanbenchError, match=r"^reference fashion-mnist:test: no fashion-mnist test IDX files in "
                       r"--data-root .*empty"):
        run(base, base / CHECKPOINT, data_root=empty)
