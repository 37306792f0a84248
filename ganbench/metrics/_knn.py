"""Chunked k-nearest-neighbour ball tests with exact decisions, the engine behind `prdc.py`.

prdc (via scikit-learn) decides "d(a, b) < radius" on float32 distances sqrt32(round32(d2)), with
d2 = |a|^2 + |b|^2 - 2 a.b computed in float64. We reproduce those decisions without an N x N matrix
and at float32 speed, on the features' device:

1. Products in float32, on blocks of `chunk` x `chunk` pairs; real-real and fake-fake pairs once
   each (blocks on and above the diagonal; a block updates the rows of both its chunks). Features
   are first centred on the real mean: distances do not change, float32 errors shrink with |x|.
2. A bound on the float32 error of each approximate d2, |approx - d2| <= beta (|a|^2 + |b|^2),
   marks the pairs whose decision could depend on rounding: those near the k-th neighbour radius or
   near a ball's radius. Worst case (rigorous), beta = (D + 10) u (Higham 2002, eq. 3.5). By default
   the probabilistic bound of Higham & Mary (2019, Thm 2.4) is used instead, beta = (13 sqrt(D) + 10) u:
   it fails only if float32 rounding errors conspire with probability below 2 D exp(-13^2 / 2) ~ 1e-33
   per pair, and it marks ~sqrt(D) times fewer pairs (measured errors are ~50 times below it).
3. Marked pairs are recomputed in float64 from the original coordinates, sum((a - b)^2) in one fixed
   order, and quantised as prdc's distances are (float32 features: numpy's correctly rounded float32 sqrt
   of the float32-rounded d2, which torch's sqrt kernels are not on every CPU): the same bits on every
   device, so CPU and GPU counts are equal even with 10^5 pairs a float32 ulp from a radius. One pass over
   each set's own pairs gives every point's nearest neighbours for the largest k asked for; the radii
   for each k are made exact from them (only the few neighbours whose order is uncertain are recomputed).
4. One pass over the real-fake pairs tests every ball at once (precision's, recall's, density's),
   deciding each block's marked pairs before the next block: memory never grows with their number.
   A block where the float32 bound marks more than `_FLOAT64_BLOCK` of the pairs (concentrated
   high-dimensional features) is recomputed with float64 products, whose bound is 2^29 times tighter.

Memory beyond the inputs: O(chunk x D + chunk^2 + N k) on every input; centred blocks are made as they
are used. Where torch may run float32 products at reduced precision (TF32 on CUDA,
float32_matmul_precision != "highest"), the products run in float64 so the bound stays valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

_BAND = 1e-5  # relative slack around a threshold for float32 rounding of d2 and of its square root
_LAMBDA = 13.0  # probabilistic bound: failure probability ~ 2 D exp(-LAMBDA^2 / 2) per pair
_EXACT_ELEMENTS = 1 << 20  # pairs x D recomputed in float64 at a time (an 8 MB temporary: 4x faster than 32 MB)
_FLOAT64_BLOCK = 1 / 16  # fraction of a block's pairs marked uncertain above which it is recomputed in float64


def _beta(d: int, unit: float, worst_case: bool) -> float:
    # gamma bounds the relative error of a length-D dot product (for the norms, of a sum of squares).
    # In d2 = |a|^2 - 2 a.b + |b|^2 the norms and 2 a.b each err by <= gamma (|a|^2 + |b|^2) in total;
    # the two additions and the rounding of the centred coordinates add < 10 u (|a|^2 + |b|^2)
    gamma = d * unit if worst_case else math.expm1(_LAMBDA * math.sqrt(d) * unit + d * unit * unit)
    return 2 * gamma + 10 * unit


@dataclass(frozen=True)
class Points:
    """One feature set prepared for blocked products."""

    exact: torch.Tensor  # (N, D) float32 or float64, as given: the precision of the final decisions
    centre: torch.Tensor  # (D,) in the work dtype: float32 (float64 under reduced-precision matmul)
    sq_norms: torch.Tensor  # (N,) float64 squared norms of the centred rows, as rounded to the work dtype
    beta: float  # |approx d2 - d2| <= beta (sq_norms[a] + sq_norms[b])
    beta64: float  # the same bound for products of float64 centred rows

    def block(self, rows: slice, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Centred rows in the work dtype (or `dtype`); made per block, so no centred copy of the whole set is kept."""
        dtype = dtype or self.centre.dtype
        return self.exact[rows].to(dtype) - self.centre.to(dtype)


def _reduced_precision_matmul(device: torch.device) -> bool:
    if torch.get_float32_matmul_precision() != "highest":
        return True
    return device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)


def prepare(real: torch.Tensor, fake: torch.Tensor, chunk: int, worst_case: bool = False) -> tuple[Points, Points]:
    """real (N, D), fake (M, D): tensors of one float dtype on one device."""
    work_dtype = torch.float64 if _reduced_precision_matmul(real.device) else torch.float32
    unit = 2.0**-53 if work_dtype == torch.float64 else 2.0**-24
    d = real.shape[1]
    beta, beta64 = _beta(d, unit, worst_case), _beta(d, 2.0**-53, worst_case)
    # any centre gives the same distances; one in the work dtype makes x - centre a single rounding
    centre = _mean(real, chunk).to(work_dtype)
    return _centred(real, centre, beta, beta64, chunk), _centred(fake, centre, beta, beta64, chunk)


def _mean(x: torch.Tensor, chunk: int) -> torch.Tensor:
    return sum(c.sum(dim=0, dtype=torch.float64) for c in x.split(chunk)) / x.shape[0]


def _own_centred(p: Points, chunk: int) -> Points:
    """The set centred on its own mean, for the pass over its own pairs. The bound grows with the squared norms, so
    a set far from the other set's mean (a collapsed generator's samples, all near one point) would have every
    neighbour order uncertain; about its own mean the norms are the set's own spread."""
    return _centred(p.exact, _mean(p.exact, chunk).to(p.centre.dtype), p.beta, p.beta64, chunk)


def _centred(x: torch.Tensor, centre: torch.Tensor, beta: float, beta64: float, chunk: int) -> Points:
    p = Points(exact=x, centre=centre, sq_norms=torch.empty(0), beta=beta, beta64=beta64)
    sq = [torch.linalg.vecdot(w, w) for w in (p.block(slice(s, s + chunk)) for s in range(0, x.shape[0], chunk))]
    return Points(exact=x, centre=centre, sq_norms=torch.cat(sq).to(torch.float64), beta=beta, beta64=beta64)


def _approx_d2(a: Points, wa: torch.Tensor, rows: slice, b: Points, wb: torch.Tensor, cols: slice) -> torch.Tensor:
    """(rows, cols) approximate squared distances |a|^2 - 2 a.b + |b|^2 from centred blocks wa, wb."""
    d2 = torch.addmm(a.sq_norms[rows].to(wa.dtype)[:, None], wa, wb.T, alpha=-2.0)
    return d2.add_(b.sq_norms[cols].to(wa.dtype)[None, :])


def exact_distances(a: Points, ia: torch.Tensor, b: Points, ib: torch.Tensor) -> torch.Tensor:
    """Distances for the pairs (a[ia[t]], b[ib[t]]) from float64 differences, quantised like prdc's:
    float32 features give sqrt32(round32(d2)), float64 features sqrt(d2). The same bits on every device."""
    # one preallocated result: a list of small per-batch results between large temporaries fragments the heap
    d2 = torch.empty(ia.numel(), dtype=torch.float64, device=a.exact.device)
    batch = max(1, _EXACT_ELEMENTS // a.exact.shape[1])
    for start in range(0, ia.numel(), batch):
        sl = slice(start, start + batch)
        # index_select and a same-dtype subtraction: advanced indexing and a float64 - float32 sub_ were 4x slower
        diff = torch.index_select(a.exact, 0, ia[sl]).to(torch.float64)
        diff.sub_(torch.index_select(b.exact, 0, ib[sl]).to(torch.float64))
        d2[sl] = _sum_of_squares(diff)
    if a.exact.dtype == torch.float32:
        return _sqrt32(d2.to(torch.float32))
    return d2.sqrt_()


def _sqrt32(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square roots of non-negative float32 x, as IEEE sqrt (and numpy) gives them.

    Some float32 sqrt kernels are not (torch 2.11's AVX-512 CPU kernel gave 61.225384 for sqrt(3748.5479),
    one ulp low, for 0.3% of the radii of a 10,000-point set). The float64 root rounded to float32 is within
    one ulp; it is then moved to the neighbour on the correct side of the midpoints between float32 values,
    whose squares are exact in float64 (25 significant bits, squared: 50 <= 53), as is x.
    """
    root, x64 = x.double().sqrt_().to(torch.float32), x.double()
    for towards, outside in ((0.0, torch.lt), (float("inf"), torch.gt)):
        neighbour = torch.nextafter(root, torch.full_like(root, towards))
        mid = (root.double() + neighbour.double()) / 2  # exact: two adjacent float32 values
        root = torch.where(outside(x64, mid * mid), neighbour, root)  # x is never equal to mid^2 (parity)
    return root


def _sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """Row sums of x^2 (x is overwritten) in one fixed pairwise order, by elementwise operations only.

    A BLAS or reduction kernel sums in an order of its own (per device, per CPU), and near a threshold one
    float64 rounding can move a float32 distance by one ulp: with 10^5 pairs at the boundary (concentrated
    features) CPU and GPU counts then differ. Elementwise IEEE operations give the same bits everywhere.
    """
    x = x.mul_(x)
    width = x.shape[1]
    while width > 1:
        if width % 2:
            x[:, 0].add_(x[:, width - 1])
            width -= 1
        half = width // 2
        x[:, :half].add_(x[:, half:width])
        width = half
    return x[:, 0]


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


def neighbour_radii(p: Points, ks: Iterable[int], chunk: int) -> dict[int, torch.Tensor]:
    """k -> (N,) radii of the k-th nearest other point, as prdc holds them (the (k+1)-th smallest distance
    including the point itself, quantised like prdc's distances), for every k in `ks` (1 <= k < N) from
    one pass over the set's pairs."""
    ks = sorted(set(ks))
    p = _own_centred(p, chunk)
    n = p.exact.shape[0]
    m = min(n, 2 * (ks[-1] + 1) + 4)  # tracked neighbours per row: slack for near-ties
    vals, idx = _approx_neighbours(p, m, chunk)
    vals = vals.double()
    err = p.beta * (p.sq_norms + p.sq_norms.max())  # error bound of any approximate d2 in the row
    return {k: _exact_radii(p, k, vals, idx, err) for k in ks}


def _exact_radii(p: Points, k: int, vals: torch.Tensor, idx: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """The exact squared k-th radius of point i lies within err[i] of its approximation vals[i, k], and so
    does each tracked neighbour's: only the neighbours within 2 err of it need exact distances."""
    n, m, device = vals.shape[0], vals.shape[1], vals.device
    lo, hi = vals[:, k] - 2 * err, vals[:, k] + 2 * err
    below = (vals < lo[:, None]).sum(dim=1)  # surely nearer than the (k+1)-th exact value
    band = (vals >= lo[:, None]) & (vals <= hi[:, None])
    complete = (vals[:, -1] > hi) | (m == n)  # else untracked points may be in the band
    radii = torch.empty(n, dtype=p.exact.dtype, device=device)
    ok = torch.nonzero(complete).squeeze(1)
    r_pos, c_pos = torch.nonzero(band[ok], as_tuple=True)
    dist = exact_distances(p, ok[r_pos], p, idx[ok][r_pos, c_pos])
    table = torch.full((ok.numel(), m), float("inf"), dtype=dist.dtype, device=device)
    table[r_pos, c_pos] = dist
    rank = k + 1 - below[ok]  # 1-based rank of the radius within the band
    radii[ok] = table.sort(dim=1).values.gather(1, (rank - 1)[:, None]).squeeze(1)
    rest = torch.nonzero(~complete).squeeze(1)
    if rest.numel():
        radii[rest] = _tied_radii(p, k, rest, vals[rest], idx[rest], err[rest])
    return radii


def _tied_radii(p: Points, k: int, rows: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, err: torch.Tensor
                ) -> torch.Tensor:
    """Radii of the rows whose band reaches past the tracked neighbours (near-ties: many points about as far).

    The (k+1)-th smallest exact distance r among the m tracked points is the radius unless an untracked point is
    nearer than r. Every untracked point's approximate d2 is at least vals[:, -1], so its exact d2 is at least
    vals[:, -1] - err, and its distance at least that bound quantised (rounding is monotone): when that is not
    below r, r is the radius, ties included (a generator collapsed to one image gives all-equal distances). The
    rows this cannot settle get exact distances to every point, in batches."""
    n, m = p.exact.shape[0], vals.shape[1]
    exact = exact_distances(p, rows.repeat_interleave(m), p, idx.flatten()).view(-1, m)
    r = exact.sort(dim=1).values[:, k]
    floor = (vals[:, -1] - err).clamp_min(0.0)
    floor = _sqrt32(floor.to(torch.float32)) if p.exact.dtype == torch.float32 else floor.sqrt()
    radii = r.clone()
    unsettled = torch.nonzero(floor < r).squeeze(1)
    everyone = torch.arange(n, device=rows.device)
    batch = max(1, 8 * _EXACT_ELEMENTS // (n * p.exact.shape[1]))  # rows of all-pairs distances per batch (64 MB)
    for start in range(0, unsettled.numel(), batch):
        part = unsettled[start:start + batch]
        dist = exact_distances(p, rows[part].repeat_interleave(n), p, everyone.repeat(part.numel())).view(-1, n)
        radii[part] = dist.kthvalue(k + 1, dim=1).values
    return radii


@dataclass
class CrossCounts:
    """Outcome of testing every real-fake pair against the balls asked for (None where not asked)."""

    in_real_ball: torch.Tensor | None  # (M,) bool: the fake point lies inside some real ball (precision's radii)
    in_fake_ball: torch.Tensor | None  # (N,) bool: the real point lies inside some fake ball (recall)
    real_balls_per_fake: torch.Tensor | None  # (M,) int32: real balls containing the fake point (density's radii)
    real_ball_has_fake: torch.Tensor | None  # (N,) bool: some fake point lies inside the real point's ball (coverage)


def _any(mask: torch.Tensor, dim: int) -> torch.Tensor:
    return mask.view(torch.uint8).amax(dim=dim).bool()  # on CPU ~40x faster than bool any(dim)


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """(2, P) indices of the True entries; mostly there are none, and checking is ~50x cheaper than nonzero."""
    if mask.numel() and mask.view(torch.uint8).max():
        return torch.nonzero(mask).T
    return torch.zeros((2, 0), dtype=torch.int64, device=mask.device)


class _BallTest:
    """One family of balls (exact radii around the real or the fake points) tested on each block of pairs.

    A pair's approximate d2 decides `d < radius` unless it lies within `slack` of radius^2: _BAND for the
    quantisation of d2 and of its square root, and the product's error bound beta (|a|^2 + |b|^2), here
    with the largest |b|^2 of the other set so one slack serves a whole row.
    """

    def __init__(self, radii: torch.Tensor, own: Points, other: Points, on_rows: bool, count: bool):
        self.radii, self.on_rows, self.count = radii, on_rows, count
        t = radii.double().square()
        other_max = other.sq_norms.max()
        self.slack = _BAND * t + own.beta * (own.sq_norms + other_max)
        # float64 products: norms rounded to float32 may be below the float64 ones; 2x covers that
        self.slack64 = _BAND * t + 2 * own.beta64 * (own.sq_norms + other_max)
        self.t = t
        n, device = radii.shape[0], radii.device
        n_other = other.exact.shape[0]
        # count: per other point, the number of balls holding it, and per ball whether it holds one;
        # else one flag per point of the other set: inside some ball
        self.counts = torch.zeros(n_other, dtype=torch.int32, device=device) if count else None
        self.flags = torch.zeros(n if count else n_other, dtype=torch.bool, device=device)

    def bounds(self, sl: slice, dtype: torch.dtype, float64: bool) -> tuple[torch.Tensor, torch.Tensor]:
        slack = (self.slack64 if float64 else self.slack)[sl]
        lo, hi = (self.t[sl] - slack).to(dtype), (self.t[sl] + slack).to(dtype)
        return (lo[:, None], hi[:, None]) if self.on_rows else (lo[None, :], hi[None, :])

    def decide(self, d2: torch.Tensor, rows: slice, cols: slice, float64: bool) -> torch.Tensor | None:
        """Records the pairs the block decides; returns the (2, P) block-local (row, col) pairs left
        uncertain, or None, recording nothing, if float32 products leave more than _FLOAT64_BLOCK of the block."""
        lo, hi = self.bounds(rows if self.on_rows else cols, d2.dtype, float64)
        sure = d2 < lo
        if self.count:  # balls on rows (real): counts per column, flags per row
            pairs = _nonzero((d2 <= hi).logical_xor_(sure))  # sure pairs are all below hi
            if not float64 and pairs.shape[1] > _FLOAT64_BLOCK * d2.numel():
                return None
            self.counts[cols] += sure.sum(dim=0, dtype=torch.int32)
            self.flags[rows] |= _any(sure, dim=1)
            return pairs
        # any ball will do: only the points not yet known to be inside one (open lines) have pairs to decide
        lines, axis = (cols, 1) if self.on_rows else (rows, 0)
        done = self.flags[lines] | _any(sure, dim=1 - axis)
        open_ = torch.nonzero(~done).squeeze(1)
        pairs = _nonzero(d2.index_select(axis, open_) <= hi)  # open lines hold no sure pair
        pairs[axis] = open_[pairs[axis]]
        if not float64 and pairs.shape[1] > _FLOAT64_BLOCK * d2.numel():
            return None
        self.flags[lines] = done
        return pairs

    def resolve(self, real: Points, fake: Points, r: torch.Tensor, f: torch.Tensor) -> None:
        """Decides the pairs (real r[t], fake f[t]) on exact distances."""
        inside = exact_distances(real, r, fake, f) < self.radii[r if self.on_rows else f]
        r, f = r[inside], f[inside]
        if self.count:
            self.counts.index_add_(0, f, torch.ones_like(f, dtype=self.counts.dtype))
            self.flags[r] = True
        else:
            self.flags[f if self.on_rows else r] = True


def cross_counts(real: Points, fake: Points, *, precision: torch.Tensor | None, recall: torch.Tensor | None,
                 density: torch.Tensor | None, chunk: int) -> CrossCounts:
    """Tests every real-fake pair in one pass: d(r, f) < precision[r] (real radii), d(r, f) < recall[f]
    (fake radii) and d(r, f) < density[r] (real radii, counted); each test runs only if its radii are given."""
    tests = {}
    if precision is not None:
        tests["precision"] = _BallTest(precision, real, fake, on_rows=True, count=False)
    if recall is not None:
        tests["recall"] = _BallTest(recall, fake, real, on_rows=False, count=False)
    if density is not None:
        tests["density"] = _BallTest(density, real, fake, on_rows=True, count=True)
    n_r, n_f = real.exact.shape[0], fake.exact.shape[0]
    for i in range(0, n_r, chunk):
        rows = slice(i, min(i + chunk, n_r))
        wa = real.block(rows)
        for j in range(0, n_f, chunk):
            cols = slice(j, min(j + chunk, n_f))
            d2 = _approx_d2(real, wa, rows, fake, fake.block(cols), cols)
            d2_64 = None
            for test in tests.values():
                pairs = test.decide(d2, rows, cols, float64=d2.dtype == torch.float64)
                if pairs is None:  # too many uncertain pairs for float32 products: redo the block in float64
                    if d2_64 is None:
                        d2_64 = _float64_d2(real, rows, fake, cols)
                    pairs = test.decide(d2_64, rows, cols, float64=True)
                if pairs.numel():
                    test.resolve(real, fake, pairs[0] + i, pairs[1] + j)
    density_test = tests.get("density")
    return CrossCounts(
        in_real_ball=tests["precision"].flags if "precision" in tests else None,
        in_fake_ball=tests["recall"].flags if "recall" in tests else None,
        real_balls_per_fake=density_test.counts if density_test else None,
        real_ball_has_fake=density_test.flags if density_test else None,
    )


def _float64_d2(a: Points, rows: slice, b: Points, cols: slice) -> torch.Tensor:
    """(rows, cols) d2 from float64 products of the centred rows: error <= beta64 (|a|^2 + |b|^2)."""
    wa, wb = a.block(rows, torch.float64), b.block(cols, torch.float64)
    d2 = torch.addmm(torch.linalg.vecdot(wa, wa)[:, None], wa, wb.T, alpha=-2.0)
    return d2.add_(torch.linalg.vecdot(wb, wb)[None, :])
