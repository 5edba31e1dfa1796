"""Build mechref/data/multilingual/<lang>.json from the hand-written lists in tools/multilingual/.

Each tools/multilingual/<lang>.txt holds 64 harmful then 64 harmless instructions (after the
lines "# harmful" and "# harmless"), line i of every language saying the same thing, so the sets
are aligned by index. Every fourth prompt (index % 4 == 3) is held out for testing: 48 train and
16 test per class and language, the same indices in every language.   python tools/build_multilingual.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "en": "English",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "zh": "Chinese",
    "ja": "Japanese",
    "ru": "Russian",
    "yo": "Yoruba",
}
PER_CLASS = 64


def read(path: Path) -> dict[str, list[str]]:
    sections, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("# "):
            current = line[2:]
            sections[current] = []
        elif line:
            sections[current].append(line)
    for label in ("harmful", "harmless"):
        if len(sections.get(label, [])) != PER_CLASS:
            raise SystemExit(f"{path}: {label} has {len(sections.get(label, []))} lines, expected {PER_CLASS}")
    return sections


def split(lines: list[str]) -> dict[str, list[dict]]:
    rows = [{"instruction": text, "id": i} for i, text in enumerate(lines)]
    return {"train": [r for r in rows if r["id"] % 4 != 3], "test": [r for r in rows if r["id"] % 4 == 3]}


if __name__ == "__main__":
    out_dir = ROOT / "mechref" / "data" / "multilingual"
    out_dir.mkdir(exist_ok=True)
    for lang, name in NAMES.items():
        sections = read(ROOT / "tools" / "multilingual" / f"{lang}.txt")
        data = {
            "language": lang,
            "language_name": name,
            "note": "Written for mechref (English originals and their translations), aligned by id across languages; "
            "not drawn from any public dataset. Translations were not reviewed by native speakers.",
            "harmful": split(sections["harmful"]),
            "harmless": split(sections["harmless"]),
        }
        (out_dir / f"{lang}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", ", ".join(NAMES), "to", out_dir)
