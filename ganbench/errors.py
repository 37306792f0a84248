"""The one family of errors ganbench raises for problems a user can fix.

Every message says what was received, what was expected and which flag or file fixes it.
The CLI turns any `GanbenchError` into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""


class GanbenchError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class ConfigError(GanbenchError):
    """An option value that is out of range or inconsistent with another option."""


class DataUnavailableError(GanbenchError):
    """A dataset (or weights file) that cannot be found locally and cannot be downloaded."""


class CheckpointError(GanbenchError):
    """A checkpoint that is missing, corrupt, unsafe to load or incompatible with the request."""


class MetricError(GanbenchError):
    """Inputs a metric cannot be computed on (too few samples, NaN features, k >= N, ...), or a
    result that is numerically unsound (a large imaginary part in the Frechet distance)."""


class SampleError(GanbenchError):
    """A source whose samples cannot be used (NaN or out-of-range generator output, unreadable images)."""


class ResultsStoreError(GanbenchError):
    """A results file that cannot be opened, read or written (wrong format, newer schema, locked too long)."""


def one_line(exc: BaseException, limit: int | None = 160) -> str:
    """How a one-line error quotes another error: its message with all whitespace collapsed (load_state_dict's
    reasons sit on the lines after a bare heading), cut to `limit` characters, or its type name when it has none."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def single_line(text: str) -> str:
    """`text` on one line as printed: line breaks (a path may hold one) written as \\n and \\r."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def counted(n: int, noun: str) -> str:
    """'1 image', '3 images': a count in a message ('1 images' read like a typo)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class GanbenchWarning(UserWarning):
    """Something was wrong but ganbench recovered (a corrupt cache entry recomputed, for example)."""
