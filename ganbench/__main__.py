"""`python -m ganbench` is the `ganbench` console script."""

import sys

from ganbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
