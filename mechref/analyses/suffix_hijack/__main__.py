"""``python -m mechref.analyses.suffix_hijack``."""

from mechref.analyses.suffix_hijack.command import main

raise SystemExit(main())
