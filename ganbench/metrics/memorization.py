"""Is the generator copying its training set? Authenticity, the C_T data-copying test and MiFID.

- `authenticity(train, fake)`: Alaa et al. 2022, "How Faithful is your Synthetic Data?" (AuthPct as dgm-eval
  computes it): a generated sample is authentic when it is strictly farther from its nearest training sample
  than that training sample is from its own nearest training neighbour. Returns the authentic share in [0, 1]
  (dgm-eval prints it as a percentage). Exact copies score 0; samples as new as held-out data score about 0.6.
- `data_copying_ct(train, test, fake)`: Meehan et al. 2020, "A Non-Parametric Test to Detect Data-Copying in
  Generative Models". The training set is cut into k-means cells; in each cell the Mann-Whitney U statistic
  compares the generated samples' distances to their nearest training sample of that cell with the held-out
  (test) samples' distances, as a z-score, Z_U = (U - mn/2) / sqrt(mn(m+n+1)/12), where U counts the (generated,
  test) pairs whose generated distance is the larger (ties count 1/2). C_T is the average of Z_U over the cells
  holding at least `min_generated` generated samples (the paper's tau = min_generated / m), weighted by the
  test set's share of each cell. Strongly negative: the samples sit closer to the training data than new data
  does (copying); positive: farther (underfitting). The authors' code subtracts a 0.5 continuity correction
  from the mean (Z larger by 0.5 / sd) and keeps cells with more than tau m samples; dgm-eval runs it on 3 cells
  after a 64-d PCA. Here: no PCA, `cells` k-means cells by our own seeded k-means++ and Lloyd iterations.
- `mifid(train, fake)`: Bai et al. 2021 (the Kaggle "Generative Dog Images" metric): FID / penalty, the penalty
  being the mean over generated samples of the cosine distance 1 - |cos| to the nearest training sample when
  that mean is below `eps`, else 1 (no penalty). torchmetrics' `MemorizationInformedFrechetInceptionDistance`
  takes the mean over its *real* set instead; FID being symmetric, this equals torchmetrics with the generated
  features passed as its real set.

Pure maths on (N, D) numpy arrays or tensors of any device (images of any shape are flattened: pixel space).
Nothing is ever N x N: nearest neighbours are found block by block (`BLOCK` x `BLOCK` float32 distances at a time,
keeping `CANDIDATES` per query), and the distances kept are recomputed exactly in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ganbench.errors import MetricError
from ganbench.metrics._checks import as_tensor, check_positive_int, check_same_dim, check_seed

BLOCK = 4096  # rows and columns of one float32 distance block (64 MiB)
CANDIDATES = 8  # float32 nearest candidates per query, re-ranked in float64
CT_CELLS = 50
CT_MIN_GENERATED = 20  # dgm-eval's and the authors' tau = 20 / m
CT_SEED = 0
KMEANS_ITERATIONS = 100
MIFID_EPS = 0.1  # torchmetrics' and the Kaggle competition's cosine-distance threshold


def _matrix(x, name: str, min_samples: int = 1) -> torch.Tensor:
    """(N, ...) array or tensor -> (N, D) float tensor on its own device; images flatten to pixels."""
    if isinstance(x, torch.Tensor | np.ndarray):
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
    return as_tensor(x, name, min_samples=min_samples)


def _same_space(a: torch.Tensor, b: torch.Tensor) -> None:
    check_same_dim(a, b)
    if a.device != b.device:
        raise MetricError(f"inputs are on {a.device} and {b.device}; expected one device")


def nearest_neighbours(queries, points, *, metric: str = "euclidean", exclude_self: bool = False,
                       block: int = BLOCK, candidates: int = CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, its nearest point: (distance float64 (Nq,), index int64 (Nq,)), on the inputs' device.

    metric: "euclidean" (L2) or "cosine" (1 - |cos|, torchmetrics' MiFID distance; a zero vector has no direction:
        it is nobody's neighbour, and as a query gets NaN). exclude_self: queries are the points themselves (same
        order), and a point is not its own neighbour (an identical copy elsewhere in the set still is).
    The search ranks float32 distances block by block; the `candidates` best of each query are recomputed in
    float64 from the inputs and the nearest of those is returned, so exact copies are at distance exactly 0.
    Memory: the points once in float32 plus a `block` x `block` float32 matrix.
    """
    q = _matrix(queries, "queries")
    p = _matrix(points, "points", min_samples=2 if exclude_self else 1)
    _same_space(q, p)
    if metric not in ("euclidean", "cosine"):
        raise MetricError(f"metric: received {metric!r}; expected 'euclidean' or 'cosine'")
    if exclude_self and q.shape[0] != p.shape[0]:
        raise MetricError(f"exclude_self: queries ({q.shape[0]}) must be the points ({p.shape[0]}) themselves")
    keep = min(check_positive_int(candidates, "candidates"), p.shape[0] - int(exclude_self))
    block = check_positive_int(block, "block")

    def exact(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        return x / x.norm(dim=1, keepdim=True) if metric == "cosine" else x  # a zero row becomes NaN

    # float32 copies for the ranking; a zero vector's NaN direction ranks as orthogonal to everything
    p32 = torch.cat([exact(c).to(torch.float32).nan_to_num_(0.0) for c in p.split(block)])
    p_sq = (p32 * p32).sum(1)
    best_d = torch.empty(q.shape[0], dtype=torch.float64, device=q.device)
    best_i = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
    for q0 in range(0, q.shape[0], block):
        qb = exact(q[q0:q0 + block])
        q32 = qb.to(torch.float32).nan_to_num_(0.0)
        rows = torch.arange(q0, q0 + qb.shape[0], device=q.device)
        top_s = torch.empty((qb.shape[0], 0), device=q.device)
        top_i = torch.empty((qb.shape[0], 0), dtype=torch.int64, device=q.device)
        for p0 in range(0, p.shape[0], block):
            pb = p32[p0:p0 + block]
            # Only each query's ranking matters: |p|^2 - 2 q.p orders points as |q - p|^2 does, -|cos| as 1 - |cos|.
            # float32 round-off can swap near-ties; the float64 recomputation of the candidates settles them.
            if metric == "cosine":
                score = (q32 @ pb.T).abs_().neg_()
            else:
                score = torch.addmm(p_sq[p0:p0 + block][None, :], q32, pb.T, alpha=-2)
            if exclude_self:
                mine = ((rows >= p0) & (rows < p0 + pb.shape[0])).nonzero()[:, 0]
                score[mine, rows[mine] - p0] = math.inf
            block_s, where = score.topk(min(keep, score.shape[1]), dim=1, largest=False)
            top_s, pick = torch.cat([top_s, block_s], 1).topk(min(keep, top_s.shape[1] + block_s.shape[1]), dim=1,
                                                               largest=False)
            top_i = torch.cat([top_i, where + p0], 1).gather(1, pick)
        near = exact(p[top_i.reshape(-1)]).reshape(*top_i.shape, -1)
        if metric == "cosine":
            d = 1 - (near * qb[:, None, :]).sum(-1).abs()
        else:
            d = (near - qb[:, None, :]).norm(dim=-1)
        d = torch.nan_to_num(d, nan=math.inf)
        if exclude_self:  # with fewer points than candidates, the (infinite) self column can be among them
            d = torch.where(top_i == rows[:, None], math.inf, d)
        d, j = d.min(dim=1)
        best_d[q0:q0 + qb.shape[0]] = torch.where(torch.isinf(d), math.nan, d)
        best_i[q0:q0 + qb.shape[0]] = top_i.gather(1, j[:, None])[:, 0]
    return best_d, best_i


def authenticity(train, fake) -> float:
    """AuthPct / 100: the share of generated samples farther from their nearest training sample t than t is from
    its own nearest training neighbour. train: (N, D), N >= 2; fake: (M, D); any device. Exact copies give 0."""
    train, fake = _matrix(train, "train features", 2), _matrix(fake, "generated features")
    _same_space(train, fake)
    own, _ = nearest_neighbours(train, train, exclude_self=True)
    to_train, index = nearest_neighbours(fake, train)
    return float((to_train > own[index]).double().mean())


def mifid(train, fake, eps: float = MIFID_EPS) -> dict[str, float]:
    """Memorization-informed FID (Bai et al. 2021) of generated features against training features.

    Returns {"mifid", "fid", "distance": mean over generated samples of the min cosine distance 1 - |cos| to a
    training sample (zero vectors left out, as torchmetrics does), "penalty": distance when below eps, else 1}.
    mifid = fid / (penalty + 1e-14), and 0 when fid <= 1e-8 (torchmetrics' guards).
    """
    from ganbench.metrics.fid import fid_from_features

    if not (isinstance(eps, int | float) and 0 < eps <= 1):
        raise MetricError(f"eps: expected a number in (0, 1], received {eps!r}")
    train, fake = _matrix(train, "train features", 2), _matrix(fake, "generated features", 2)
    _same_space(train, fake)
    fid = fid_from_features(train, fake)
    nonzero = [x[x.sum(dim=1) != 0] for x in (fake, train)]  # torchmetrics' filter: a zero row has no direction
    if min(len(x) for x in nonzero) == 0:
        raise MetricError("mifid: every generated or every training feature vector sums to zero; expected some that do not")
    distance = float(nearest_neighbours(*nonzero, metric="cosine")[0].mean())
    penalty = distance if distance < eps else 1.0
    value = fid / (penalty + 1e-14) if fid > 1e-8 else 0.0
    return {"mifid": value, "fid": fid, "distance": distance, "penalty": penalty}


def kmeans(x, cells: int, *, seed: int = CT_SEED, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """Centroids (cells, D) float64 of a seeded k-means++ start and Lloyd iterations (until no point moves).

    A cell left empty is restarted at the point farthest from its centroid, so every cell holds training points."""
    x = _matrix(x, "train features").to(torch.float64)
    cells = check_positive_int(cells, "cells")
    if cells > x.shape[0]:
        raise MetricError(f"cells: received {cells}, more than the {x.shape[0]} training samples; lower the number of cells")
    generator = torch.Generator().manual_seed(check_seed(seed))
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    centroids = x[first:first + 1]
    closest = _squared_to(x, centroids).min(dim=1).values
    for _ in range(1, cells):  # k-means++: the next centre drawn with probability proportional to D^2
        weights = closest.cpu() if float(closest.sum()) > 0 else torch.ones(x.shape[0], dtype=torch.float64)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        centroids = torch.cat([centroids, x[pick:pick + 1]])
        closest = torch.minimum(closest, _squared_to(x, x[pick:pick + 1])[:, 0])
    labels = None
    for _ in range(iterations):
        d = _squared_to(x, centroids)
        new = d.argmin(dim=1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=cells)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        for empty in (counts == 0).nonzero()[:, 0].tolist():
            far = int(d.gather(1, labels[:, None])[:, 0].argmax())
            centroids[empty] = x[far]
            labels = None  # assignments changed: iterate again
    return centroids


def _squared_to(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, k) squared distances, in float64, by blocks of rows."""
    return torch.cat([torch.cdist(b, centroids).square() for b in x.split(BLOCK)])


def mann_whitney_z(fake_distances, test_distances) -> float:
    """Z_U of Meehan et al.: (U - mn/2) / sqrt(mn(m+n+1)/12), U = #{(g, t): g > t} + #{g == t} / 2 (1-D arrays)."""
    g = np.asarray(fake_distances, dtype=np.float64)
    t = np.sort(np.asarray(test_distances, dtype=np.float64))
    m, n = len(g), len(t)
    below, not_above = np.searchsorted(t, g, side="left"), np.searchsorted(t, g, side="right")
    u = float(below.sum() + 0.5 * (not_above - below).sum())
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def data_copying_ct(train, test, fake, *, cells: int = CT_CELLS, min_generated: int = CT_MIN_GENERATED,
                    seed: int = CT_SEED) -> dict[str, float]:
    """The C_T statistic of Meehan et al. 2020 (see the module docstring) and its bookkeeping.

    train: (L, D) the model's training set (or a subset of it); test: (n, D) held-out samples of the same
    distribution; fake: (m, D) generated. Returns {"data_copying_ct", "cells_kept": cells holding at least
    min_generated generated samples (the rest are left out, as the paper does), "generated_kept": their share
    of the generated samples}. Cells without test samples weigh 0. MetricError when no cell is kept.
    """
    train, test, fake = (_matrix(x, f"{w} features", 2) for x, w in ((train, "train"), (test, "test"), (fake, "generated")))
    _same_space(train, test)
    _same_space(train, fake)
    min_generated = check_positive_int(min_generated, "min_generated")
    centroids = kmeans(train, cells, seed=seed)
    labels = [_squared_to(x.to(torch.float64), centroids).argmin(dim=1) for x in (train, test, fake)]
    weights, scores, kept_fake = [], [], 0
    for cell in range(centroids.shape[0]):
        t_cell, p_cell, q_cell = (x[label == cell] for x, label in zip((train, test, fake), labels, strict=True))
        if len(q_cell) < min_generated or len(p_cell) == 0:
            continue
        # nearest training sample within the cell, as the authors' code does
        fake_d = nearest_neighbours(q_cell, t_cell)[0].cpu().numpy()
        test_d = nearest_neighbours(p_cell, t_cell)[0].cpu().numpy()
        weights.append(len(p_cell) / len(test))
        scores.append(mann_whitney_z(fake_d, test_d))
        kept_fake += len(q_cell)
    if not weights:
        raise MetricError(f"data_copying_ct: no cell of {centroids.shape[0]} holds {min_generated} or more generated samples "
                          f"and a test sample ({len(fake)} generated); use fewer cells or more samples")
    ct = float(np.dot(weights, scores) / np.sum(weights))
    return {"data_copying_ct": ct, "cells_kept": len(weights), "generated_kept": kept_fake / len(fake)}
