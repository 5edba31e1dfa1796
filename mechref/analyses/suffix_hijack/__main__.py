"""``python -m mechref.analyses.suffix_hijack``."""

from mechref.analyses.suffix_hijack.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
