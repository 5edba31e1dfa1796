"""``python -m mechref.analyses.gcg``."""

from mechref.analyses.gcg.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
