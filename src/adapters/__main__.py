"""``python -m adapters``: the command line (`adapters.cli`). The demo stays ``python -m adapters.demo``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
