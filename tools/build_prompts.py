"""Build mechref/data/prompts/en.json from the hand-written lists in tools/*.txt.

Splits are fixed once here (seeded shuffle) and stored in the JSON, so every install sees the
same train/val/test prompts.   python tools/build_prompts.py
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": 128, "val": 32}


def read(path: Path) -> list[dict]:
    rows, category = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("# category:"):
            category = line.split(":", 1)[1].strip().removesuffix("_2")
        elif line:
            rows.append({"instruction": line, "category": category})
    return rows


def split(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    rows = rows[:]
    random.Random(seed).shuffle(rows)
    out, start = {}, 0
    for name, size in SPLITS.items():
        out[name] = rows[start : start + size]
        start += size
    out["test"] = rows[start:]
    return out


if __name__ == "__main__":
    data = {
        "language": "en",
        "note": "Written for mechref; not drawn from any public dataset.",
        "harmful": split(read(ROOT / "tools" / "harmful_en.txt"), seed=1),
        "harmless": split(read(ROOT / "tools" / "harmless_en.txt"), seed=2),
    }
    out = ROOT / "mechref" / "data" / "prompts" / "en.json"
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print({k: {s: len(v) for s, v in data[k].items()} for k in ("harmful", "harmless")})
