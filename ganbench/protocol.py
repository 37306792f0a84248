"""Protocol constants shared by every stage that produces or stores numbers."""

# The datasets ganbench trains on and takes references from, and their splits (loaded by ganbench.data).
DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")

# Bump when a change in ganbench alters features or what metrics compute from them, so that old
# feature-cache entries and stored results are never mixed with new ones.
METRIC_PROTOCOL_VERSION = 1

# Feature-extraction precisions. "fp32" is float32 arithmetic throughout, on CUDA too (where cuDNN would otherwise
# run convolutions in TF32). "tf32" (CUDA only) lets cuDNN and cuBLAS use TensorFloat-32, which is what the reference
# implementations get on Ampere and newer GPUs by PyTorch's defaults; "bf16" (autocast) is the fastest. Each reduced
# precision is named in the stored preprocessing ("tf1+tf32", "tf1+bf16"), so its numbers never mix with fp32 ones.
PRECISIONS = ("fp32", "tf32", "bf16")


def precisions_on(device_type: str) -> tuple[str, ...]:
    """The precisions features can be computed in on a device type ("cpu", "cuda"): tf32 exists on CUDA only."""
    return PRECISIONS if device_type == "cuda" else tuple(p for p in PRECISIONS if p != "tf32")


# The two references every checkpoint is scored against by default (see `default_references`):
# the best checkpoint is *selected* on a fixed, seeded subset of the training split and *reported*
# on the held-out test split, so the published number is never the one the choice was made on.
SELECTION_SUBSET_SIZE = 10_000
SELECTION_SUBSET_SEED = 0


def selection_reference(dataset: str) -> str:
    """`DATASET:train:10000`: the seeded 10,000-image training subset that best checkpoints are chosen on."""
    return f"{dataset}:train:{SELECTION_SUBSET_SIZE}"


def reporting_reference(dataset: str) -> str:
    """`DATASET:test`: the held-out split whose numbers leaderboards publish."""
    return f"{dataset}:test"


def default_references(dataset: str) -> tuple[str, str]:
    return selection_reference(dataset), reporting_reference(dataset)
