"""``python -m mechref.analyses.export``."""

from mechref.analyses.export.command import main

raise SystemExit(main())
