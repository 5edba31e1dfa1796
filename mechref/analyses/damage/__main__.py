"""``python -m mechref.analyses.damage``."""

from mechref.analyses.damage.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
