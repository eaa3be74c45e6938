"""``python -m data_tools`` runs the ``retail-data`` command line."""

import sys

from detect.verbs.retail_data import main

if __name__ == "__main__":
    sys.exit(main())
