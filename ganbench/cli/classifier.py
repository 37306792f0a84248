"""`ganbench train classifier`: the small domain classifier behind the lenet-* extractors (stub)."""


def add_parser(kinds) -> None:
    """Register `train classifier` under `ganbench train`."""
