"""``python -m mechref.analyses.multilingual``."""

from mechref.analyses.multilingual.command import main

raise SystemExit(main())
