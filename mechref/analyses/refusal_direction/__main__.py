"""``python -m mechref.analyses.refusal_direction``."""

from mechref.analyses.refusal_direction.command import main

raise SystemExit(main())
