"""``python -m mechref.analyses.damage``."""

from mechref.analyses.damage.command import main

raise SystemExit(main())
