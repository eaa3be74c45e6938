"""``python -m data_tools`` runs the ``retail-data`` command line."""

import sys

from data_tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
