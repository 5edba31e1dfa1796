"""``python -m mechref.analyses.optimize_edit``."""

from mechref.analyses.optimize_edit.command import main

raise SystemExit(main())
