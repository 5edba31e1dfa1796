"""``python -m mechref``: the ``mechref`` command line (:mod:`mechref.cli`)."""

import sys

from mechref.cli import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    sys.exit(main())
