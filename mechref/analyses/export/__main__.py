"""``python -m mechref.analyses.export``."""

from mechref.analyses.export.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
