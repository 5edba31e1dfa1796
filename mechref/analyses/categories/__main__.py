"""``python -m mechref.analyses.categories``."""

from mechref.analyses.categories.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
