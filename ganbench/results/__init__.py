"""Results: every metric value with its full protocol, in one SQLite file (`store.py`), shaped by `schema.py`.

Writers (`ganbench eval`) build `ResultRow`s and call `ResultsStore.write_results`; readers
(`ganbench report`) call `ResultsStore.rows` or `to_dataframe`. Nothing here imports the evaluation code.
"""

from ganbench.results.schema import COLUMNS, SCHEMA_VERSION, STATUSES, Protocol, ResultRow, RunInfo, canonical_json
from ganbench.results.store import DEFAULT_RESULTS_PATH, Batch, ResultsStore, ResultsStoreError

__all__ = [
    "COLUMNS",
    "DEFAULT_RESULTS_PATH",
    "SCHEMA_VERSION",
    "STATUSES",
    "Batch",
    "Protocol",
    "ResultRow",
    "ResultsStore",
    "ResultsStoreError",
    "RunInfo",
    "canonical_json",
]
