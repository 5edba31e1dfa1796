"""``python -m mechref.analyses.judge``."""

from mechref.analyses.judge.command import main

raise SystemExit(main())
