"""torch.distributed for `ganbench eval` under torchrun: launch detection, the process group, and the few collectives.

Everything rank-aware lives here, so the sweep asks a `Group` questions (am I the main rank? which rows are
mine? give me everyone's rows in order) and the maths never sees a rank. A plain `ganbench eval` gets
`SOLO`, whose collectives are the identity; it neither imports nor initialises torch.distributed.

Launch: torchrun (or any launcher) sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. The
backend is gloo on CPU and nccl on CUDA, where each rank takes the GPU of its LOCAL_RANK (so multi-node
works as well: RANK is global, LOCAL_RANK picks the device on the node).

Work is split by whole batches: rank r gets a contiguous range of batches, so every rank runs the
generator and the extractor on exactly the batches a single process would, and the gathered rows are
bit-identical to a single-process run on the same device type.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch

from ganbench.errors import ConfigError

T = TypeVar("T")
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")
# The other ranks wait in a collective while the main rank extracts reference features, which takes hours for
# Inception on a CPU; torch's default (10-30 minutes) would abort them. A rank that dies is torchrun's to handle:
# it stops the others at once, so a long timeout never leaves a hung job behind.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=12)


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """True when a launcher started this process as one of several ranks."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in LAUNCH_VARIABLES) and int(environ["WORLD_SIZE"]) > 1


def batch_range(n: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of `n` owned by `rank`: a contiguous run of whole `batch_size` batches (maybe empty)."""
    batches = -(-n // batch_size)
    first = batches * rank // world_size
    last = batches * (rank + 1) // world_size
    return min(first * batch_size, n), min(last * batch_size, n)


class Group:
    """One process (rank 0 of 1). Subclassed by `ProcessGroup` for real launches; the sweep only uses this API."""

    rank = 0
    world_size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int, batch_size: int) -> tuple[int, int]:
        """This rank's share of `n` rows, in whole batches."""
        return batch_range(n, batch_size, self.rank, self.world_size)

    def all_gather_rows(self, array: np.ndarray) -> np.ndarray:
        """Every rank's rows (N_r, ...) concatenated in rank order, which is sample order under `rows()`."""
        return array

    def all_gather_object(self, obj: T) -> list[T]:
        return [obj]

    def broadcast_object(self, obj: T) -> T:
        """The main rank's `obj` on every rank (the others pass anything)."""
        return obj

    def sum(self, value: int) -> int:
        return value

    def barrier(self) -> None:
        pass

    def main_first(self, work: Callable[[], T]) -> T:
        """Run `work` on the main rank, then on the others: whatever it caches (weights, features) is written once."""
        return work()


SOLO = Group()


class ProcessGroup(Group):
    """The default torch.distributed process group of a torchrun launch."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} CUDA devices on this node; "
                    "lower torchrun's --nproc-per-node"
                )
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        # Tensors in collectives must live where the backend works: CUDA memory for nccl, host memory for gloo.
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size, timeout=COLLECTIVE_TIMEOUT,
                                device_id=self.device if device.type == "cuda" else None)
        self._dist = dist

    def all_gather_rows(self, array: np.ndarray) -> np.ndarray:
        # all_gather needs equal shapes: gather the row counts, pad every part to the longest, trim after.
        rows = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        counts = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        self._dist.all_gather(counts, torch.tensor([rows.shape[0]], dtype=torch.int64, device=self.device))
        counts_host = [int(c.item()) for c in counts]
        longest = max(counts_host)
        padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._dist.all_gather(parts, padded)
        return torch.cat([part[:count] for part, count in zip(parts, counts_host, strict=True)]).cpu().numpy()

    def all_gather_object(self, obj: T) -> list[T]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: T) -> T:
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: int) -> int:
        total = torch.tensor([value], dtype=torch.int64, device=self.device)
        self._dist.all_reduce(total)
        return int(total.item())

    def barrier(self) -> None:
        self._dist.barrier()

    def main_first(self, work: Callable[[], T]) -> T:
        if self.is_main:
            result = work()
            self.barrier()
            return result
        self.barrier()
        return work()

    def close(self) -> None:
        self._dist.destroy_process_group()


@contextmanager
def launch(device: torch.device) -> Iterator[Group]:
    """The process group of a torchrun launch, torn down on exit; `SOLO` for a single process."""
    if not launched_by_torchrun():
        yield SOLO
        return
    group = ProcessGroup(device)
    try:
        yield group
    finally:
        group.close()
