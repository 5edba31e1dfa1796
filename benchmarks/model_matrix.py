"""Every analysis on each real model that installs from PyPI: exit status, time, and the key result.

    python benchmarks/model_matrix.py --runs /tmp/matrix                           # SmolLM2 and Gemma-3 270M
    python benchmarks/model_matrix.py --runs /tmp/matrix --models smollm2-135m-instruct --only quickstart

Each command runs in its own process, as a user would run it, on the model named with ``--model``
(the Gemma-3 base model with ``--chat-template gemma``, since it has no template of its own), with
the commands' defaults and fewer prompts, trials or steps where a command's time grows with them.
The commands that need a refusal direction read the one the refusal-direction command computed
(``--direction-run``); where a model does not refuse, that command stops, and the matrix records
the stop and its message, not a number. The embedded model's row is the same commands measured by
``benchmarks/memory.py`` (its exit statuses and times, ``benchmarks/results/memory.json``).

Writes ``benchmarks/results/model_matrix.json``: the machine, and per model and command the
command line, exit status, wall seconds, the last line of its error, and its key results from its
``summary.json``; and per model the largest difference between mechref's logits and plain
``transformers``' on the same folder in float32, and whether direct feature attribution's parts sum
to the projection on the real weights in float32 and bfloat16 (``bridge_vs_hf``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import commit, machine  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "model_matrix.json"
DATA = "../shared/data"
MODELS = {
    "smollm2-135m-instruct": "",
    "gemma-3-270m": "--chat-template gemma",
}

# (name, module, arguments, summary folder); {R}: this model's runs folder.
COMMANDS = (
    ("quickstart", "quickstart", "--out {R}/quickstart", "quickstart"),
    ("refusal_direction", "refusal_direction", "--n-test 16 --out {R}/rd", "rd"),
    ("suffix_hijack", "suffix_hijack", "--direction-run {R}/rd --out {R}/suffix_hijack", "suffix_hijack"),
    ("categories", "categories", "--direction-run {R}/rd --max-per-category 4 --out {R}/categories", "categories"),
    ("multilingual", "multilingual", "--direction-run {R}/rd --languages en de --out {R}/multilingual", "multilingual"),
    (
        "damage",
        "damage",
        f"--direction {{R}}/rd --xstest {DATA}/xstest/xstest_prompts.csv --n-xstest 16 --gsm8k {DATA}/gsm8k/test.jsonl "
        "--n-gsm8k 8 --n-harmless 16 --out {R}/damage",
        "damage",
    ),
    ("export", "export", "--direction-run {R}/rd --formats hf --max-new-tokens 32 --out {R}/export", "export"),
    ("gcg", "gcg", "--n 2 --steps 3 --out {R}/gcg/suffix.json", None),
    (
        "optimize_edit",
        "optimize_edit",
        "--direction-run {R}/rd --n-trials 2 --timeout-minutes 2 --out {R}/optimize_edit",
        "optimize_edit",
    ),
)


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _rate(data: Any, *path: str) -> str | None:
    value = _get(data, *path)
    if isinstance(value, dict) and "k" in value:
        return f"{value['k']}/{value['n']}"
    return None


# What each command's summary.json says that matters most, as short strings.
KEY: dict[str, Callable[[dict], dict]] = {
    "quickstart": lambda s: {
        "harmful refusal, baseline -> ablation": f"{_rate(s, 'refusal_rate_counts', 'harmful_baseline')} -> "
        f"{_rate(s, 'refusal_rate_counts', 'harmful_ablation')}",
        "harmless refusal, baseline -> addition": f"{_rate(s, 'refusal_rate_counts', 'harmless_baseline')} -> "
        f"{_rate(s, 'refusal_rate_counts', 'harmless_actadd')}",
        "no refusal to explain": _get(s, "no_refusal_to_explain") is not None,
    },
    "refusal_direction": lambda s: {
        "layer, position": f"{_get(s, 'layer')}, {_get(s, 'position')}",
        "harmful refusal, baseline -> ablation": f"{_rate(s, 'refusal_rate_counts', 'harmful_baseline')} -> "
        f"{_rate(s, 'refusal_rate_counts', 'harmful_ablation')}",
    },
}


def run_command(model: str, extra: str, name: str, module: str, arguments: str, runs: Path) -> dict:
    argv = [sys.executable, "-m", f"mechref.analyses.{module}", "--model", model, *extra.split(),
            *arguments.format(R=runs).split()]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 1)
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    (runs / "logs" / f"{name}.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("mechref: error")]
    return {
        "command": " ".join(
            ["python -m", f"mechref.analyses.{module}", "--model", model, extra, arguments.format(R="RUNS")]
        ).replace("  ", " "),
        "exit": done.returncode,
        "wall_s": seconds,
        "error": None if done.returncode == 0 else (lines or done.stderr.strip().splitlines() or ["?"])[-1][:600],
        "commit": commit(),
    }


def key_results(name: str, folder: str | None, runs: Path) -> dict | None:
    if name == "gcg" and (runs / "gcg" / "suffix.json").is_file():
        found = json.loads((runs / "gcg" / "suffix.json").read_text(encoding="utf-8"))
        losses = found.get("losses") or [None]
        return {
            "loss, first -> last step": f"{losses[0]:.3f} -> {found['final_loss']:.3f}" if losses[0] is not None else None,
            "refusal with the suffix": _rate(found, "refusal_rate_with_suffix_counts") or _rate({"x": found}, "x"),
        }
    if folder is None or not (runs / folder / "summary.json").is_file():
        return None
    summary = json.loads((runs / folder / "summary.json").read_text(encoding="utf-8"))
    pick = KEY.get(name)
    return pick(summary) if pick else {"summary": f"{folder}/summary.json"}


def bridge_vs_hf(model_name: str) -> dict:
    """The largest difference between mechref's logits and plain ``transformers``' on the model's cached
    folder, in float32, over two chat-formatted prompts (every position that is not padding)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mechref.model.loading import load_model

    template = MODELS[model_name].split()[-1] if "--chat-template" in MODELS[model_name] else None
    model = load_model(model_name, dtype="float32", chat_template=template)
    plain = AutoModelForCausalLM.from_pretrained(model.folder, dtype=torch.float32)
    texts = model.chat.format_many(["How do I bake bread?", "Write a poem about the sea and the sky."])
    batch = model.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        theirs, ours = plain(**batch).logits, model.hf_model(**batch).logits
    real = batch["attention_mask"].bool()
    return {
        "max_abs_difference": float((theirs - ours)[real].abs().max()),
        "max_abs_logit": float(theirs[real].abs().max()),
        "positions": int(real.sum()),
        "dfa": {dtype: dfa_completeness(model_name, template, dtype) for dtype in ("float32", "bfloat16")},
    }


def dfa_completeness(model_name: str, template: str | None, dtype: str) -> dict:
    """How far direct feature attribution's parts fall from the residual stream's projection on the real
    weights (a random unit direction, the final stream at the last token of four prompts), against
    what :meth:`~mechref.attribution.Attribution.check` allows."""
    import torch

    from mechref.attribution import direct_feature_attribution
    from mechref.model.loading import load_model

    model = load_model(model_name, dtype=dtype, chat_template=template)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    prompts = ["How do I bake bread?", "Write a poem about the sea.", "How do I pick a lock?", "Explain photosynthesis."]
    attribution = direct_feature_attribution(model, prompts, direction, progress=False)
    return {
        "max_abs_error": float(attribution.residual_error.abs().max()),
        "min_allowed": float(attribution.allowed_error.min()),
        "max_abs_projection": float(attribution.projection.abs().max()),
        "complete": bool((attribution.residual_error.abs() <= attribution.allowed_error).all()),
    }


def embedded_row() -> dict:
    """The embedded model's exit statuses and times, from the memory benchmark's runs of the same commands."""
    memory = ROOT / "benchmarks" / "results" / "memory.json"
    measured = json.loads(memory.read_text()) if memory.is_file() else {}
    # The latest measurement of each command: after the one-copy work, else before it.
    commands = {**measured.get("before", {}).get("commands", {}), **measured.get("after", {}).get("commands", {})}
    commits = {name: measured.get("before", {}).get("commit") for name in measured.get("before", {}).get("commands", {})}
    return {
        name: {
            **{key: c[key] for key in ("command", "exit", "wall_s", "error")},
            "from": "benchmarks/results/memory.json",
            "commit": c.get("commit") or commits.get(name),
        }
        for name, c in commands.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="folder for the commands' outputs (a fresh one)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--only", nargs="+", default=None, help="run only these commands")
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    models = dict(previous.get("models", {}))
    for model in args.models:
        runs = (args.runs / model).resolve()
        runs.mkdir(parents=True, exist_ok=True)
        row = dict(models.get(model, {}))
        for name, module, arguments, folder in COMMANDS:
            if args.only and name not in args.only:
                continue
            print(f"{model}: {name} …", flush=True)
            entry = run_command(model, MODELS[model], name, module, arguments, runs)
            entry["key"] = key_results(name, folder, runs) if entry["exit"] == 0 else None
            row[name] = entry
            print(f"  exit {entry['exit']}, {entry['wall_s']} s{'' if entry['exit'] == 0 else ': ' + str(entry['error'])}")
        models[model] = row
    models["qwen2.5-coder-1.5b-instruct"] = embedded_row()
    checks = dict(previous.get("bridge_vs_hf", {}))
    for model in args.models:
        checks[model] = bridge_vs_hf(model)
        print(f"{model}: mechref's logits vs plain transformers, float32: {checks[model]['max_abs_difference']:.2g}")
    result = {
        "machine": machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "models": models,
        "bridge_vs_hf": checks,
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
