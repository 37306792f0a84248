"""The metric maths takes tensors as well as numpy arrays and computes where the tensors are: on the CPU the
results equal the numpy path's bit for bit; a mixed-device call is refused. (CUDA: tests/test_cuda.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganbench.errors import MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import metrics_from_features
from ganbench.metrics._checks import check_same_device
from ganbench.metrics.bootstrap import bootstrap_intervals
from ganbench.metrics.fid import feature_statistics, fid_from_features
from ganbench.metrics.kid import kernel_inception_distance
from ganbench.metrics.manifold import knn_metrics


def _sets(n_real=300, n_fake=280, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_real, d), dtype=np.float32),
            (1.2 * rng.standard_normal((n_fake, d)) + 0.2).astype(np.float32))


def test_tensor_inputs_give_the_numpy_path_numbers_exactly():
    real, fake = _sets()
    tr, tf = torch.from_numpy(real), torch.from_numpy(fake)
    assert fid_from_features(tr, tf) == fid_from_features(real, fake)
    assert kernel_inception_distance(tr, tf, 10, 100, seed=1) == kernel_inception_distance(real, fake, 10, 100, seed=1)
    assert knn_metrics(tr, tf) == knn_metrics(real, fake)
    assert bootstrap_intervals(tr, tf, resamples=3, seed=2) == bootstrap_intervals(real, fake, resamples=3, seed=2)
    mu, sigma = feature_statistics(tr)
    assert isinstance(mu, np.ndarray) and sigma.dtype == np.float64
    # a read-only array is viewed, not copied, and raises no torch warning (pytest runs with warnings as errors)
    frozen = real.copy()
    frozen.flags.writeable = False
    assert fid_from_features(frozen, fake) == fid_from_features(real, fake)


def test_metrics_from_features_on_the_cpu_device_equals_the_default():
    protocol = {"extractor": "lenet-fashion-mnist", "preprocessing": "lenet-28-gray-unit", "weights_sha256": "x"}
    real, fake = _sets(seed=3)
    logits = np.random.default_rng(4).standard_normal((2, 300, 10)).astype(np.float32)
    real_set, fake_set = FeatureSet(real, logits[0], protocol), FeatureSet(fake, logits[1, :280], protocol)
    default = metrics_from_features(real_set, fake_set, bootstrap=3, kid_subset_size=100)
    assert metrics_from_features(real_set, fake_set, bootstrap=3, kid_subset_size=100, device="cpu") == default


def test_features_on_two_devices_are_refused():
    with pytest.raises(MetricError, match="real features are on cpu, fake features on meta; expected one device"):
        check_same_device(torch.zeros(3, 2), torch.zeros(3, 2, device="meta"))
