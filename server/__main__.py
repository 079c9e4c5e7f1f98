"""``python -m parasal.server --bundle DIR ...``: the same as ``parasal serve``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
