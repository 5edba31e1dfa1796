"""``python -m mechref.analyses.categories``."""

from mechref.analyses.categories.command import main

raise SystemExit(main())
