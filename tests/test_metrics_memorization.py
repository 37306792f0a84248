"""Memorization metrics from data whose answer is known: exact copies of the training set, held-out draws of the
same distribution, noise and a collapsed generator; the definitions checked against brute force and scipy, MiFID
against torchmetrics on the same features, and the evaluate wiring (training reference, held-out set, options)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganbench.errors import ConfigError, MetricError
from ganbench.features.extract import FeatureSet
from ganbench.metric_values import metric_options, metrics_from_features
from ganbench.metrics.memorization import (
    authenticity,
    data_copying_ct,
    kmeans,
    mann_whitney_z,
    mifid,
    nearest_neighbours,
)


def gaussian(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def circle(n: int, seed: int) -> np.ndarray:
    """Points on a unit circle embedded in 8-d: a low-dimensional data manifold whose mean lies off it."""
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    x = np.zeros((n, 8))
    x[:, 0], x[:, 1] = np.cos(angle), np.sin(angle)
    return x


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_neighbours_equal_brute_force_across_blocks(metric, exclude_self):
    rng = np.random.default_rng(1)
    points = rng.standard_normal((300, 12)).astype(np.float32)
    queries = points if exclude_self else rng.standard_normal((250, 12)).astype(np.float32)
    q, p = torch.tensor(queries, dtype=torch.float64), torch.tensor(points, dtype=torch.float64)
    if metric == "cosine":
        full = 1 - (q / q.norm(dim=1, keepdim=True) @ (p / p.norm(dim=1, keepdim=True)).T).abs()
    else:
        full = torch.cdist(q, p)
    if exclude_self:
        full.fill_diagonal_(math.inf)
    distance, index = nearest_neighbours(queries, points, metric=metric, exclude_self=exclude_self, block=64)
    assert distance.dtype == torch.float64 and torch.equal(index, full.argmin(dim=1))
    torch.testing.assert_close(distance, full.min(dim=1).values, rtol=0, atol=1e-12)


def test_exact_copies_are_at_distance_zero_and_a_duplicate_is_a_neighbour_but_self_is_not():
    train = gaussian(50) * 1000  # large values: the float32 ranking's expansion would not give 0 itself
    train[7] = train[3]
    distance, index = nearest_neighbours(train[[3, 10]], train)
    assert distance.tolist() == [0.0, 0.0] and index[0] in (3, 7) and index[1] == 10
    distance, index = nearest_neighbours(train, train, exclude_self=True)
    assert (distance[3], index[3], index[7]) == (0.0, 7, 3) and bool((distance[[0, 1, 2]] > 0).all())


def test_authenticity_equals_its_definition_by_brute_force():
    train, fake = gaussian(200, seed=2), gaussian(150, seed=3) * 1.1
    t, f = torch.tensor(train), torch.tensor(fake)
    own = torch.cdist(t, t).fill_diagonal_(math.inf).min(dim=1).values
    to_train = torch.cdist(f, t).min(dim=1)
    expected = float((to_train.values > own[to_train.indices]).double().mean())  # dgm-eval: strictly farther
    assert authenticity(train, fake) == expected


def test_authenticity_of_copies_is_zero_of_held_out_data_about_60_percent_and_of_noise_one():
    train = gaussian(3000, seed=4)
    assert authenticity(train, train[:1000]) == 0.0
    assert 0.45 < authenticity(train, gaussian(1000, seed=5)) < 0.7  # a new sample of the same distribution
    assert authenticity(train, 4 * gaussian(1000, seed=6)) > 0.95


def test_mann_whitney_z_matches_scipy_u_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(7)
    g, t = rng.integers(0, 20, 60).astype(float), rng.integers(0, 20, 80).astype(float)  # many ties
    u = mannwhitneyu(g, t, alternative="two-sided").statistic  # U of the first sample, ties counted 1/2
    assert mann_whitney_z(g, t) == pytest.approx((u - 60 * 80 / 2) / math.sqrt(60 * 80 * 141 / 12), rel=1e-12)
    assert mann_whitney_z(t[:5], t[:5]) == 0.0


def test_ct_with_one_cell_is_the_z_of_nearest_training_distances():
    train, test, fake = gaussian(400, seed=8), gaussian(300, seed=9), gaussian(200, seed=10) * 0.8
    expected = mann_whitney_z(nearest_neighbours(fake, train)[0].numpy(), nearest_neighbours(test, train)[0].numpy())
    out = data_copying_ct(train, test, fake, cells=1)
    assert out == {"data_copying_ct": pytest.approx(expected, rel=1e-12), "cells_kept": 1, "generated_kept": 1.0}


def test_ct_is_strongly_negative_for_copies_near_zero_for_held_out_data_positive_for_noise():
    train, test = gaussian(3000, seed=11), gaussian(1000, seed=12)
    copies = train[:2000] + 1e-3 * gaussian(2000, seed=13)
    assert data_copying_ct(train, test, copies, cells=10)["data_copying_ct"] < -10
    assert abs(data_copying_ct(train, test, gaussian(2000, seed=14), cells=10)["data_copying_ct"]) < 2.5
    assert data_copying_ct(train, test, 1.5 * gaussian(2000, seed=15), cells=10)["data_copying_ct"] > 5


def test_ct_is_positive_for_a_collapsed_generator():
    # Training data on a circle; the generator collapsed onto one blurry average (a point inside the circle,
    # off the data manifold), jittered: far from the training set compared with held-out draws.
    train, test = circle(2000, 16), circle(1000, 17)
    collapsed = np.array([0.3, 0.2, 0, 0, 0, 0, 0, 0]) + 0.01 * gaussian(500, seed=18)
    out = data_copying_ct(train, test, collapsed, cells=10)
    assert out["data_copying_ct"] > 5 and out["cells_kept"] >= 1


def test_ct_leaves_out_cells_with_too_few_generated_samples_and_says_when_none_is_left():
    train, test = gaussian(1000, seed=19), gaussian(500, seed=20)
    fake = gaussian(300, seed=21)
    kept = data_copying_ct(train, test, fake, cells=10, min_generated=40)
    assert kept["cells_kept"] < 10 and kept["generated_kept"] < 1
    with pytest.raises(MetricError, match=r"data_copying_ct: no cell of 10 holds 301 or more generated samples and a "
                                          r"test sample \(300 generated\); use fewer cells or more samples"):
        data_copying_ct(train, test, fake, cells=10, min_generated=301)


def test_kmeans_is_seeded_and_leaves_the_global_rng_alone():
    x = gaussian(500, seed=22)
    state = torch.get_rng_state()
    a, b, c = kmeans(x, 7, seed=1), kmeans(x, 7, seed=1), kmeans(x, 7, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(state, torch.get_rng_state())
    with pytest.raises(MetricError, match="cells: received 600, more than the 500 training samples; lower the number of cells"):
        kmeans(x, 600)


@pytest.mark.parametrize("case", ["near copies: penalty active", "new data: no penalty"])
def test_mifid_equals_torchmetrics_with_the_generated_set_as_its_first_argument(case):
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

    train = np.abs(gaussian(400, d=16, seed=23)) + 0.1
    fake = train[:300] * 1.01 + 0.001 if case.startswith("near") else gaussian(300, d=16, seed=24)
    ours = mifid(train, fake)
    assert (ours["penalty"] < 1) == case.startswith("near")
    reference = MemorizationInformedFrechetInceptionDistance(feature=torch.nn.Identity())
    # torchmetrics averages the cosine distance over its first ("real") set: Bai et al. average over generated
    # samples, and FID is symmetric, so the generated features go first.
    reference.update(torch.tensor(fake), real=True)
    reference.update(torch.tensor(train), real=False)
    assert ours["mifid"] == pytest.approx(float(reference.compute()), rel=1e-6)


def test_mifid_of_copies_is_huge_and_bad_inputs_are_one_line():
    train = gaussian(200, seed=25)
    out = mifid(train, train[:100] + 0.0)
    assert out["distance"] < 1e-12 and out["mifid"] > 1e6 * out["fid"]
    with pytest.raises(MetricError, match=r"eps: expected a number in \(0, 1\], received 2"):
        mifid(train, train, eps=2)
    with pytest.raises(MetricError, match="feature dimensions differ: real has D=8, fake has D=4"):
        authenticity(train, gaussian(10, d=4))
    with pytest.raises(MetricError, match="metric: received 'manhattan'; expected 'euclidean' or 'cosine'"):
        nearest_neighbours(train, train, metric="manhattan")


def test_pixel_space_images_are_flattened():
    images = torch.randint(0, 256, (40, 1, 6, 6), dtype=torch.uint8)
    assert authenticity(images, images[:10]) == 0.0
    distance, index = nearest_neighbours(images[:3], images)
    assert distance.tolist() == [0.0, 0.0, 0.0] and index.tolist() == [0, 1, 2]


# -- the evaluate wiring ---------------------------------------------------------------------------------------------

PROTOCOL = {"extractor": "test", "preprocessing": "none"}


def features(x: np.ndarray, split: str | None = None) -> FeatureSet:
    return FeatureSet(x.astype(np.float32), None, dict(PROTOCOL), {"dataset": "fashion-mnist", "split": split} if split else {})


def test_memorization_metrics_are_computed_against_a_training_reference_and_ct_with_held_out_data():
    train, test = features(gaussian(3000, seed=26), "train"), features(gaussian(1000, seed=27), "test")
    fake = features(gaussian(400, seed=28))
    against_test = metrics_from_features(test, fake)
    assert not {"authenticity", "mifid", "data_copying_ct"} & set(against_test)
    against_train = metrics_from_features(train, fake)
    assert {"authenticity", "mifid"} <= set(against_train) and "data_copying_ct" not in against_train
    assert against_train["mifid"].options == {"cosine_eps": 0.1} == metric_options("mifid", 3000, 400)
    with_heldout = metrics_from_features(train, features(train.features[:2000]), ["authenticity", "data_copying_ct"],
                                         heldout=test)
    assert with_heldout["authenticity"].value == 0.0 and with_heldout["data_copying_ct"].value < -5
    assert with_heldout["data_copying_ct"].options == {"cells": 50, "min_generated": 20, "kmeans_seed": 0,
                                                       "heldout": "fashion-mnist:test"}
    with pytest.raises(ConfigError, match=r"data_copying_ct needs held-out data beside the training reference; pass a "
                                          r"training-split reference and the test split of the same dataset \(--reference "
                                          r"DATASET:train\[:N\] --reference DATASET:test\), or leave it out of --metrics"):
        metrics_from_features(train, fake, ["fid", "data_copying_ct"])
