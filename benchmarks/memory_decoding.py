"""The heap a greedy decoding leaves behind, with and without returning freed memory each step.

    python benchmarks/memory_decoding.py --direction RUNS/rd    # a refusal-direction run of the embedded model

The decoding damage runs for XSTest: 32 safe prompts under three hook edits decoded together (96
rows: unedited, directional ablation, activation addition x-1 at the direction's layer), 128
tokens, the embedded model in bfloat16. Each variant runs in its own process: ``trim`` as mechref
decodes (``mechref.framework.memory.trim_heap`` after every step), ``no trim`` with that call made
a no-op. Reported: the peak anonymous memory above the loaded model (sampled every 20 ms), the
high-water mark above it (the kernel's ``VmHWM``, which also counts the weights' file pages read
during the decoding), the seconds of the decoding and of the trims, and whether both variants
wrote the same tokens. Writes ``benchmarks/results/memory_decoding.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import commit, machine  # noqa: E402

CHILD = r"""
import json, sys, threading, time
import mechref.generation as generation
from mechref.analyses.damage.data import read_xstest_safe
from mechref.directions.store import load_direction
from mechref.framework.memory import _malloc_trim, give_back_freed, MemoryLog
from mechref.model.loading import load_model
from mechref.row_interventions import HookEdit, generate_ids_per_edit

variant, direction_path, xstest = sys.argv[1], sys.argv[2], sys.argv[3]
trim = _malloc_trim()
spent = []
def timed_trim():
    start = time.perf_counter()
    if trim is not None:
        trim(0)
    spent.append(time.perf_counter() - start)
    return trim is not None
generation.trim_heap = timed_trim if variant == "trim" else (lambda: False)

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024
peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.02)

model = load_model("qwen2.5-coder-1.5b-instruct", dtype="bfloat16")
stored = load_direction(direction_path)
prompts = [p.prompt for p in read_xstest_safe(xstest, 32)]
edits = {"original": HookEdit("baseline"), "ablation": HookEdit("ablation"), "actadd": HookEdit("addition", -1.0, stored.layer)}
give_back_freed()
base = anon()
log = MemoryLog()
log.mark("before")
threading.Thread(target=sample, daemon=True).start()
log.mark("decoding")
started = time.perf_counter()
ids = generate_ids_per_edit(model, prompts, stored.direction, edits, max_new_tokens=128, batch_size=128, progress=False)
seconds = time.perf_counter() - started
log.mark(None)
print(json.dumps({
    "anon_peak_above_model_gib": (max(peak[0], anon()) - base) / 2**30,
    "hwm_above_model_gib": (log.peaks["decoding"] - log.peaks["before"]) / 2**30 if log.exact else None,
    "decoding_s": round(seconds, 1),
    "trim_s": round(sum(spent), 2),
    "trims": len(spent),
    "ids": ids,
}))
"""


def child(variant: str, direction: str, xstest: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, variant, direction, xstest], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {variant} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direction", required=True, help="a refusal-direction run folder (or its direction.safetensors)")
    parser.add_argument("--xstest", default=str(ROOT.parent / "shared" / "data" / "xstest" / "xstest_prompts.csv"))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory_decoding.json")
    args = parser.parse_args()
    if not Path(args.direction).exists():
        parser.error(f"--direction {args.direction}: no such run folder or file")
    runs = {variant: child(variant, args.direction, args.xstest) for variant in ("no trim", "trim")}
    same = runs["no trim"].pop("ids") == runs["trim"].pop("ids")
    result = {
        "machine": machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "command": "python benchmarks/memory_decoding.py --direction RUNS/rd",
        "rows": 96,
        "max_new_tokens": 128,
        "variants": runs,
        "same_tokens": same,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
