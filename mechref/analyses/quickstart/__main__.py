"""``python -m mechref.analyses.quickstart``."""

from mechref.analyses.quickstart.command import main

raise SystemExit(main())
