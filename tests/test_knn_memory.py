"""The k-NN metrics' memory stays O(chunk^2 + N k) however many pairs are left for the exact float64 test.

Measured in a fresh process (peak resident memory: torch allocates outside Python's tracemalloc), on
concentrated Gaussian features with the rounding band widened so that ~1.2 million real-fake pairs are
uncertain: the state the 10,000 x 2048 concentrated case reaches (~480,000 pairs) at a size that runs in
seconds. Code that collects those pairs for the whole matrix before testing them adds several hundred MB here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ganbench

CHILD = r"""
import json, sys, threading, time
import numpy as np, torch
from ganbench.metrics import _knn
from ganbench.metrics.manifold import prdc

def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

torch.set_num_threads(1)
rng = np.random.default_rng(0)
real = rng.standard_normal((2500, 64), dtype=np.float32)
fake = 0.9 * rng.standard_normal((2500, 64), dtype=np.float32)
prdc(real[:300], fake[:300], 5, chunk_size=256)  # warm-up: kernels, thread pools, allocator arenas
# every pair whose d2 lies within 30% of a radius^2 goes to the exact test (the decisions stay exact)
_knn._BAND = 0.3
before = status_kb("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    sampler = None
except OSError:  # not permitted: sample RSS every millisecond instead
    peak, stop = [before], threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], status_kb("VmRSS"))
            time.sleep(0.001)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
values = prdc(real, fake, 5, chunk_size=256)
if sampler is None:
    top = status_kb("VmHWM")
else:
    stop.set()
    sampler.join()
    top = peak[0]
print(json.dumps({"added_mb": (top - before) / 1024, "values": values}))
"""


def test_memory_stays_bounded_when_many_pairs_need_the_exact_test():
    import numpy as np
    import prdc as prdc_lib

    root = str(Path(ganbench.__file__).resolve().parent.parent)  # the ganbench under test, in the child too
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120,
                         env={"PYTHONPATH": root, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # blocks of 256 x 256: a block's uncertain pairs, their indices and exact distances are a few MB;
    # the features are 1.3 MB. Collected for the whole matrix they would be ~1.2 million pairs.
    assert result["added_mb"] < 40, result
    # the widened band changes which pairs are decided exactly, never a decision
    rng = np.random.default_rng(0)
    real = rng.standard_normal((2500, 64), dtype=np.float32)
    fake = 0.9 * rng.standard_normal((2500, 64), dtype=np.float32)
    assert result["values"] == {name: float(v) for name, v in prdc_lib.compute_prdc(real, fake, 5).items()}
