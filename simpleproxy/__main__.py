"""``python -m simpleproxy``: the same as the ``simpleproxy`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
