"""``python -m mechref.analyses.quickstart``."""

from mechref.analyses.quickstart.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
