"""``python -m mechref.analyses.gcg``."""

from mechref.analyses.gcg.command import main

raise SystemExit(main())
