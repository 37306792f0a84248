"""Chunked k-nearest-neighbour ball tests with exact decisions, the engine behind `prdc.py`.

prdc (via scikit-learn) decides "d(a, b) < radius" on float32 distances sqrt32(round32(d2)), with
d2 = |a|^2 + |b|^2 - 2 a.b computed in float64. We reproduce those decisions without an N x N matrix
and at float32 speed:

1. Products in float32, on blocks of `chunk` x `chunk` pairs; real-real and fake-fake pairs once
   each (blocks on and above the diagonal; a block updates the rows of both its chunks). Features
   are first centred on the real mean: distances do not change, float32 errors shrink with |x|.
2. A bound on the float32 error of each approximate d2, |approx - d2| <= beta (|a|^2 + |b|^2),
   marks the pairs whose decision could depend on rounding: those near the k-th neighbour radius or
   near a ball's radius. Worst case (rigorous), beta = (D + 10) u (Higham 2002, eq. 3.5). By default
   the probabilistic bound of Higham & Mary (2019, Thm 2.4) is used instead, beta = (13 sqrt(D) + 10) u:
   it fails only if float32 rounding errors conspire with probability below 2 D exp(-13^2 / 2) ~ 1e-33
   per pair, and it marks ~sqrt(D) times fewer pairs (measured errors are ~50 times below it).
3. Only marked pairs are recomputed in float64 from the original coordinates, sum((a - b)^2), and
   quantised as prdc's distances are (float32 features: sqrt of the float32-rounded d2). Radii are
   carried as approximate values with an error bound; a radius is made exact (from the few tracked
   neighbours whose order is uncertain) only for the points a marked pair needs.

Memory beyond the inputs: O(chunk x D + chunk^2 + N k); centred blocks are made as they are used. Where torch
may run float32 products at reduced precision (TF32 on CUDA, float32_matmul_precision != "highest"),
the products run in float64 so the bound stays valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_BAND = 1e-5  # relative slack around a threshold for float32 rounding of d2 and of its square root
_LAMBDA = 13.0  # probabilistic bound: failure probability ~ 2 D exp(-LAMBDA^2 / 2) per pair
_EXACT_BATCH = 512  # pairs recomputed in float64 at a time (batch x D float64 temporaries)


@dataclass(frozen=True)
class Points:
    """One feature set prepared for blocked products."""

    exact: torch.Tensor  # (N, D) float32 or float64, as given: the precision of the final decisions
    centre: torch.Tensor  # (D,) in the work dtype: float32 (float64 under reduced-precision matmul)
    sq_norms: torch.Tensor  # (N,) float64 squared norms of the centred rows, as rounded to the work dtype
    beta: float  # |approx d2 - d2| <= beta (sq_norms[a] + sq_norms[b])

    def block(self, rows: slice) -> torch.Tensor:
        """Centred rows in the work dtype; made per block, so no centred copy of the whole set is kept."""
        return self.exact[rows].to(self.centre.dtype) - self.centre


def _reduced_precision_matmul(device: torch.device) -> bool:
    if torch.get_float32_matmul_precision() != "highest":
        return True
    return device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)


def prepare(real: torch.Tensor, fake: torch.Tensor, chunk: int, worst_case: bool = False) -> tuple[Points, Points]:
    """real (N, D), fake (M, D): tensors of one float dtype on one device."""
    work_dtype = torch.float64 if _reduced_precision_matmul(real.device) else torch.float32
    unit = 2.0**-53 if work_dtype == torch.float64 else 2.0**-24
    d = real.shape[1]
    # gamma bounds the relative error of a length-D dot product (for the norms, of a sum of squares).
    # In d2 = |a|^2 - 2 a.b + |b|^2 the norms and 2 a.b each err by <= gamma (|a|^2 + |b|^2) in total;
    # the two additions and the rounding of the centred coordinates add < 10 u (|a|^2 + |b|^2)
    gamma = d * unit if worst_case else math.expm1(_LAMBDA * math.sqrt(d) * unit + d * unit * unit)
    beta = 2 * gamma + 10 * unit
    # any centre gives the same distances; one in the work dtype makes x - centre a single rounding
    centre = (sum(c.sum(dim=0, dtype=torch.float64) for c in real.split(chunk)) / real.shape[0]).to(work_dtype)
    return _centred(real, centre, beta, chunk), _centred(fake, centre, beta, chunk)


def _centred(x: torch.Tensor, centre: torch.Tensor, beta: float, chunk: int) -> Points:
    p = Points(exact=x, centre=centre, sq_norms=torch.empty(0), beta=beta)
    sq = [torch.linalg.vecdot(w, w) for w in (p.block(slice(s, s + chunk)) for s in range(0, x.shape[0], chunk))]
    return Points(exact=x, centre=centre, sq_norms=torch.cat(sq).to(torch.float64), beta=beta)


def _approx_d2(a: Points, wa: torch.Tensor, rows: slice, b: Points, wb: torch.Tensor, cols: slice) -> torch.Tensor:
    """(rows, cols) approximate squared distances |a|^2 - 2 a.b + |b|^2 from centred blocks wa, wb."""
    d2 = torch.addmm(a.sq_norms[rows].to(wa.dtype)[:, None], wa, wb.T, alpha=-2.0)
    return d2.add_(b.sq_norms[cols].to(wa.dtype)[None, :])


def exact_distances(a: Points, ia: torch.Tensor, b: Points, ib: torch.Tensor) -> torch.Tensor:
    """Distances for the pairs (a[ia[t]], b[ib[t]]) from float64 differences, quantised like prdc's:
    float32 features give sqrt32(round32(d2)), float64 features sqrt(d2)."""
    out = []
    for start in range(0, ia.numel(), _EXACT_BATCH):
        sl = slice(start, start + _EXACT_BATCH)
        diff = a.exact[ia[sl]].to(torch.float64).sub_(b.exact[ib[sl]])
        out.append(torch.linalg.vecdot(diff, diff))
    d2 = torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=a.exact.device)
    return d2.to(a.exact.dtype).sqrt_()


def _merge(best_vals, best_idx, rows: slice, vals, idx, m: int) -> None:
    cat_vals = torch.cat([best_vals[rows], vals], dim=1)
    cat_idx = torch.cat([best_idx[rows], idx], dim=1)
    top_vals, pos = torch.topk(cat_vals, m, dim=1, largest=False, sorted=False)
    best_vals[rows] = top_vals
    best_idx[rows] = torch.gather(cat_idx, 1, pos)


def _approx_neighbours(p: Points, m: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, m) smallest approximate d2 per row (self included, as 0) and their indices, sorted."""
    n, device = p.exact.shape[0], p.exact.device
    best_vals = torch.full((n, m), float("inf"), dtype=p.centre.dtype, device=device)
    best_idx = torch.zeros((n, m), dtype=torch.int64, device=device)
    for i in range(0, n, chunk):
        rows = slice(i, min(i + chunk, n))
        wa = p.block(rows)
        for j in range(i, n, chunk):  # blocks below the diagonal are the transposes of these
            cols = slice(j, min(j + chunk, n))
            d2 = _approx_d2(p, wa, rows, p, wa if i == j else p.block(cols), cols)
            if i == j:
                d2.fill_diagonal_(0.0)  # prdc zeroes the diagonal too
            vals, idx = torch.topk(d2, min(m, d2.shape[1]), dim=1, largest=False, sorted=False)
            _merge(best_vals, best_idx, rows, vals, idx + j, m)
            if i != j:
                # a contiguous transpose: topk on the strided view allocates far more per thread
                vals, idx = torch.topk(d2.T.contiguous(), min(m, d2.shape[0]), dim=1, largest=False, sorted=False)
                _merge(best_vals, best_idx, cols, vals, idx + i, m)
    best_vals, order = best_vals.sort(dim=1)
    return best_vals, torch.gather(best_idx, 1, order)


@dataclass(frozen=True)
class Radii:
    """k-th neighbour radii of one set: approximate for all points, exact on demand.

    The exact squared radius t of point i lies in [approx[i] - err[i], approx[i] + err[i]]; most
    decisions need no more. `exact(rows)` gives the radii as prdc holds them (the (k+1)-th smallest
    distance including the point itself, quantised like prdc's distances) for the rows that do.
    """

    points: Points
    k: int
    vals: torch.Tensor  # (N, m) float64 smallest approximate d2 per row, sorted
    idx: torch.Tensor  # (N, m) their indices
    approx: torch.Tensor  # (N,) float64 approximate squared radius, vals[:, k]
    err: torch.Tensor  # (N,) float64 error bound of any approximate d2 in the row

    def exact(self, rows: torch.Tensor) -> torch.Tensor:
        p, k, device = self.points, self.k, self.points.exact.device
        vals, idx, a_k, err = self.vals[rows], self.idx[rows], self.approx[rows], self.err[rows]
        n, m = p.exact.shape[0], vals.shape[1]
        # points below a_(k+1) - 2 err are surely nearer than the (k+1)-th exact value, points above
        # a_(k+1) + 2 err surely farther: only the band between needs exact distances
        below = (vals < (a_k - 2 * err)[:, None]).sum(dim=1)
        band = (vals >= (a_k - 2 * err)[:, None]) & (vals <= (a_k + 2 * err)[:, None])
        complete = (vals[:, -1] > a_k + 2 * err) | (m == n)  # else untracked points may be in the band
        radii = torch.empty(rows.numel(), dtype=p.exact.dtype, device=device)
        ok = torch.nonzero(complete).squeeze(1)
        r_pos, c_pos = torch.nonzero(band[ok], as_tuple=True)
        dist = exact_distances(p, rows[ok][r_pos], p, idx[ok][r_pos, c_pos])
        table = torch.full((ok.numel(), m), float("inf"), dtype=dist.dtype, device=device)
        table[r_pos, c_pos] = dist
        rank = k + 1 - below[ok]  # 1-based rank of the radius within the band
        radii[ok] = table.sort(dim=1).values.gather(1, (rank - 1)[:, None]).squeeze(1)
        for pos in torch.nonzero(~complete).squeeze(1).tolist():  # rare: many near-ties
            everyone = torch.arange(n, device=device)
            dist = exact_distances(p, torch.full_like(everyone, int(rows[pos])), p, everyone)
            radii[pos] = dist.kthvalue(k + 1).values
        return radii


def kth_neighbour_radii(p: Points, k: int, chunk: int) -> Radii:
    """Radii of the k-th nearest other point for every point of p; requires 1 <= k < N."""
    n = p.exact.shape[0]
    m = min(n, 2 * (k + 1) + 4)  # tracked neighbours per row: slack for near-ties
    vals, idx = _approx_neighbours(p, m, chunk)
    vals = vals.double()
    err = p.beta * (p.sq_norms + p.sq_norms.max())
    return Radii(points=p, k=k, vals=vals, idx=idx, approx=vals[:, k], err=err)


@dataclass
class BallCounts:
    """Outcome of testing every real-fake pair against the real and (optionally) fake radii."""

    fake_in_real_balls: torch.Tensor  # (M,) int: number of real balls containing each fake point
    real_has_fake_inside: torch.Tensor  # (N,) bool: some fake point inside the real point's own ball
    real_in_fake_balls: torch.Tensor | None  # (N,) bool: the real point lies inside some fake ball


def _bands(radii: Radii, other_sq_max: torch.Tensor, dtype):
    """d2 intervals [lo, hi] outside which `d < radius` is decided by the approximate d2: the radius
    is known to within err (its own approximation) and the pair's d2 to within beta (|a|^2 + |b|^2)."""
    t = radii.approx
    band = _BAND * t.abs() + radii.err + radii.points.beta * (radii.points.sq_norms + other_sq_max)
    return (t - band).to(dtype), (t + band).to(dtype)


def ball_counts(real: Points, fake: Points, real_radii: Radii, fake_radii: Radii | None, chunk: int) -> BallCounts:
    """Tests d(r, f) < real_radii[r] and, if fake_radii is given, d(r, f) < fake_radii[f], for all pairs."""
    n_r, n_f = real.exact.shape[0], fake.exact.shape[0]
    device, wd = real.exact.device, real.centre.dtype
    lo_r, hi_r = _bands(real_radii, fake.sq_norms.max(), wd)
    counts = torch.zeros(n_f, dtype=torch.int32, device=device)
    covered = torch.zeros(n_r, dtype=torch.bool, device=device)
    recalled = None
    if fake_radii is not None:
        lo_f, hi_f = _bands(fake_radii, real.sq_norms.max(), wd)
        width_f = hi_f - lo_f
        recalled = torch.zeros(n_r, dtype=torch.bool, device=device)
    unsure_r, unsure_f = [], []  # (real index, fake index) pairs left for the exact test
    for i in range(0, n_r, chunk):
        rows = slice(i, min(i + chunk, n_r))
        wa = real.block(rows)
        for j in range(0, n_f, chunk):
            cols = slice(j, min(j + chunk, n_f))
            d2 = _approx_d2(real, wa, rows, fake, fake.block(cols), cols)
            sure = d2 < lo_r[rows, None]
            counts[cols] += sure.sum(dim=0, dtype=torch.int32)
            covered[rows] |= d2.amin(dim=1) < lo_r[rows]
            maybe = d2 <= hi_r[rows, None]
            if not torch.equal(sure, maybe):
                r, f = torch.nonzero(maybe & ~sure, as_tuple=True)
                unsure_r.append(torch.stack([r + i, f + j]))
            if recalled is not None:
                # real i is surely inside some fake ball if min_j (d2_ij - lo_j) < 0
                slack = d2.sub_(lo_f[None, cols]).amin(dim=1)
                recalled[rows] |= slack < 0
                open_rows = torch.nonzero((slack >= 0) & (slack <= width_f[cols].max())).squeeze(1)
                if open_rows.numel():
                    r, f = torch.nonzero(d2[open_rows] <= width_f[None, cols], as_tuple=True)
                    unsure_f.append(torch.stack([open_rows[r] + i, f + j]))
    if unsure_r:
        r, f = torch.cat(unsure_r, dim=1)
        rows, where = torch.unique(r, return_inverse=True)
        inside = exact_distances(real, r, fake, f) < real_radii.exact(rows)[where]
        counts.index_add_(0, f[inside], torch.ones_like(f[inside], dtype=counts.dtype))
        covered[r[inside]] = True
    if unsure_f:
        r, f = torch.cat(unsure_f, dim=1)
        rows, where = torch.unique(f, return_inverse=True)
        inside = exact_distances(real, r, fake, f) < fake_radii.exact(rows)[where]
        recalled[r[inside]] = True
    return BallCounts(counts, covered, recalled)
