"""``python -m mechref.analyses.optimize_edit``."""

from mechref.analyses.optimize_edit.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
