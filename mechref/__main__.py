import sys

from mechref.cli import main

sys.exit(main())
