"""Plant known bugs in the core pipeline, one at a time, and check that the unit suite fails.

    python benchmarks/planted_bugs.py            # writes benchmarks/results/reliability/planted_bugs.json

Each plant is a one-line change a reviewer could miss (an argument order, a sign, a comparison);
the file is restored after each run, even if the run is interrupted.
"""

import json
import pathlib
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parents[1]
plants = [
    (
        "KL reversed",
        "mechref/analyses/refusal_direction/selection.py",
        "kl_divergence(baseline_logits, scorer.logits(harmless_val))",
        "kl_divergence(scorer.logits(harmless_val), baseline_logits)",
    ),
    (
        "induce under ablation",
        "mechref/analyses/refusal_direction/selection.py",
        "with activation_addition(model, direction, entry.layer, 1.0):",
        "with directional_ablation(model, direction):",
    ),
    ("harmful actadd sign", "mechref/analyses/refusal_direction/evaluation.py", '-1.0 if label == "harmful" else 1.0', "1.0"),
    (
        "refusal-score filter inverted",
        "mechref/scoring.py",
        "mask = (scores > 0) if want_refusal else (scores < 0)",
        "mask = (scores < 0) if want_refusal else (scores > 0)",
    ),
    (
        "induce filter inverted",
        "mechref/analyses/refusal_direction/selection.py",
        "if entry.induce is not None and not entry.induce > settings.induce_threshold:",
        "if entry.induce is not None and entry.induce > settings.induce_threshold:",
    ),
    (
        "addition matrix with ablation",
        "mechref/analyses/multilingual/pipeline.py",
        '                mode="addition",',
        '                mode="ablation",',
    ),
    (
        "closer inverted",
        "mechref/analyses/suffix_hijack/report.py",
        'return "harmless" if to_harmless < to_harmful else "harmful"',
        'return "harmful" if to_harmless < to_harmful else "harmless"',
    ),
    (
        "biases left out",
        "mechref/edits/orthogonalize.py",
        "            linear.bias.copy_(_remove(linear.bias.double(), r, strength, norm_preserving, dim=-1)"
        ".to(linear.bias.dtype))",
        "            pass",
    ),
    ("GCG gradient noise", "mechref/attacks/gcg.py", "    return total.float()", "    return torch.randn_like(total).float()"),
]
results = []
for name, path, old, new in plants:
    p = root / path
    src = p.read_text()
    assert old in src, name
    p.write_text(src.replace(old, new, 1))
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-x",
                "-p",
                "no:cacheprovider",
                "tests/",
                "-m",
                "not integration and not browser",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        )
        last = [l for l in r.stdout.splitlines() if "FAILED" in l][:1] or r.stdout.strip().splitlines()[-1:]
        print(f"{name:32s} {'CAUGHT' if r.returncode else 'MISSED'}  {last}", flush=True)
        results.append({"bug": name, "file": path, "caught": r.returncode != 0, "first_failure": last[0] if last else None})
    finally:
        p.write_text(src)

out = root / "benchmarks" / "results" / "reliability" / "planted_bugs.json"
out.write_text(
    json.dumps(
        {
            "command": "python benchmarks/planted_bugs.py",
            "caught": sum(r["caught"] for r in results),
            "planted": len(results),
            "plants": results,
        },
        indent=2,
    )
    + "\n"
)
print(f"{sum(r['caught'] for r in results)}/{len(results)} planted bugs caught; wrote {out}")
