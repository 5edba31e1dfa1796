"""``python -m mechref.analyses.refusal_direction``."""

from mechref.analyses.refusal_direction.command import main

if __name__ == "__main__":  # importing it (the API reference does) runs nothing
    raise SystemExit(main())
