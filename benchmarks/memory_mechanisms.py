"""The three things that held gigabytes in the export's verification, each measured alone, before and after.

    python benchmarks/memory_mechanisms.py --export RUNS/export/model   # a float32 export of the embedded model

* **loading a float32 export in bfloat16**: ``from_pretrained`` (maps the whole file while it
  converts it) against ``mechref.model.plain.load_plain`` (one tensor at a time);
* **the first token's logits from a strided slice**: torch's CPU ``linear`` with the embedded model's
  unembedding shape (151936 x 1536, bfloat16, no gradient) on the last position of 4 rows, without
  and with ``contiguous_unembedding`` (and whether the logits are equal);
* **freed memory kept by the C allocator**: the resident memory left after the loaded export is
  deleted, before and after ``give_back_freed``.

Each measurement runs in its own process (a fresh high-water mark), reading the kernel's
``VmHWM``/``VmRSS``. Writes ``benchmarks/results/memory_mechanisms.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30

CHILD = r"""
import json, sys, torch
from mechref.framework.memory import MemoryLog, give_back_freed, resident_bytes
kind, export = sys.argv[1], sys.argv[2]
log = MemoryLog()
out = {}
if kind in ("from_pretrained", "load_plain"):
    import transformers
    from mechref.model.plain import load_plain
    start = resident_bytes()
    log.mark("start")
    log.mark("load")
    if kind == "from_pretrained":
        model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.bfloat16)
    else:
        model = load_plain(export, torch.bfloat16)
    log.mark(None)
    out["load_peak_above_start_gib"] = (log.peaks["load"] - log.peaks["start"]) / 2**30
    out["resident_with_model_gib"] = (resident_bytes() - start) / 2**30
    del model
    import gc
    gc.collect()
    out["resident_after_delete_gib"] = (resident_bytes() - start) / 2**30
    give_back_freed()
    out["resident_after_give_back_gib"] = (resident_bytes() - start) / 2**30
else:
    from mechref.model.plain import contiguous_unembedding
    torch.manual_seed(0)
    head = torch.nn.Linear(1536, 151936, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(4, 40, 1536).to(torch.bfloat16)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head
    with torch.no_grad():
        plain = head(hidden[:, -1:, :])
        log.mark("start")
        log.mark("strided")
        head(hidden[:, -1:, :])
        log.mark("between")
        with contiguous_unembedding(model):
            log.mark("contiguous")
            fixed = head(hidden[:, -1:, :])
        log.mark(None)
    out["matrix_gib"] = head.weight.numel() * 2 / 2**30
    out["strided_peak_above_start_gib"] = (log.peaks["strided"] - log.peaks["start"]) / 2**30
    out["contiguous_peak_above_start_gib"] = (log.peaks["contiguous"] - log.peaks["between"]) / 2**30
    out["same_logits"] = bool(torch.equal(plain, fixed))
out["exact"] = log.exact
print(json.dumps(out))
"""


def child(kind: str, export: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, export], cwd=ROOT, capture_output=True, text=True, check=True)
    values = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in values.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="a float32 Hugging Face export of the embedded model")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory_mechanisms.json")
    args = parser.parse_args()
    if not (Path(args.export) / "config.json").is_file() or not list(Path(args.export).glob("*.safetensors")):
        parser.error(f"--export {args.export}: not a Hugging Face model folder (config.json and safetensors weights)")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tier_timings import machine

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {
        "command": "python benchmarks/memory_mechanisms.py --export RUNS/export/model",
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit,
        "load_float32_export_in_bfloat16": {kind: child(kind, args.export) for kind in ("from_pretrained", "load_plain")},
        "unembedding_of_a_strided_slice": child("unembedding", args.export),
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
