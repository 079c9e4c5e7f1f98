"""`python -m parasal.indexer ...` (what torchrun runs): the same as `parasal index ...`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
