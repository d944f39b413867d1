"""The single executable's entry point: the ``simpleproxy`` command, frozen by PyInstaller."""

import multiprocessing
import sys

from simpleproxy.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # harmless where unused; needed if anything ever spawns on Windows
    sys.exit(main())
