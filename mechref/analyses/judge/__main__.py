"""``python -m mechref.analyses.judge``."""

from mechref.analyses.judge.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
