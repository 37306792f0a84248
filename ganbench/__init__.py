"""ganbench: train, evaluate and report GANs with metrics that match the reference implementations.

From Python: `ganbench.evaluate(source, reference, ...)` (see `ganbench.api`) and `ganbench.GanbenchMetric`, a
torchmetrics metric for training loops (see `ganbench.torchmetrics_metric`). Both are imported on first use, so
`import ganbench` (and `ganbench --help`) stays free of torch. `ganbench.GanbenchError` is the one family of errors
every bad input raises, each with a one-line message.
"""

__version__ = "0.1.0"

_LAZY = {"evaluate": "ganbench.api", "Evaluation": "ganbench.api", "GanbenchMetric": "ganbench.torchmetrics_metric",
         "GanbenchError": "ganbench.errors"}
__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganbench' has no attribute {name!r}")
