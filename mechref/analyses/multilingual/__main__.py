"""``python -m mechref.analyses.multilingual``."""

from mechref.analyses.multilingual.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
