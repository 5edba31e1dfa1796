#!/usr/bin/env bash
# The suffix-hijack and multilingual numbers before and after a change of the code's layout: both
# analyses at small settings on the embedded model (float32, one thread), from one direction file,
# run in the checkout BEFORE and in this one, then compared value by value.
#
#   git worktree add /tmp/before 035142b
#   bash benchmarks/layout_compare.sh /tmp/before /tmp/layout_compare
#
# Writes benchmarks/results/layout_refactor_{suffix_hijack,multilingual}.json.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash benchmarks/layout_compare.sh BEFORE_CHECKOUT WORK_FOLDER" >&2; exit 2; }
[ -d "$1/mechref" ] || { echo "layout_compare: $1 is not a mechref checkout (make one: git worktree add $1 035142b)" >&2; exit 2; }
python -c "import mechref, torch" 2>/dev/null || { echo "layout_compare: activate mechref's virtual environment first" >&2; exit 2; }
before=$(cd "$1" && pwd) work=$(mkdir -p "$2" && cd "$2" && pwd)
after=$(cd "$(dirname "$0")/.." && pwd)
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# One direction for both checkouts: difference in means over 8 + 8 train prompts at layer 20.
python - "$work/direction.safetensors" <<'PY'
import sys
import mechref
model = mechref.load_model(dtype="float32")
harmful = list(mechref.prompts("harmful", "train"))[:8]
harmless = list(mechref.prompts("harmless", "train"))[:8]
mechref.diff_in_means(model, harmful, harmless, layer=20).save(sys.argv[1])
PY
small_sh=(--dtype float32 --direction "$work/direction.safetensors" --n 4 --top-k 4 --max-new-tokens 16 --static)
small_ml=(--dtype float32 --direction "$work/direction.safetensors" --languages en de zh --n-train 8 --n-test 4
    --max-new-tokens 16 --static)
for side in before after; do
    root=$before; [ "$side" = after ] && root=$after
    (cd "$root" && PYTHONPATH="$root" python -m mechref.analyses.suffix_hijack "${small_sh[@]}" --out "$work/$side/suffix_hijack")
    (cd "$root" && PYTHONPATH="$root" python -m mechref.analyses.multilingual "${small_ml[@]}" --out "$work/$side/multilingual")
done
status=0
for name in suffix_hijack multilingual; do
    result="$after/benchmarks/results/layout_refactor_$name.json"
    python "$after/benchmarks/compare_summaries.py" "$work/before/$name/summary.json" "$work/after/$name/summary.json" \
        --json "$result" || status=1
    python - "$result" "$name" "$(git -C "$before" rev-parse --short HEAD)" "$(git -C "$after" rev-parse --short HEAD)" <<'PY'
import json, sys
path, name, before, after = sys.argv[1:]
result = json.loads(open(path).read())
header = {
    "what": f"{name} summary.json numbers before ({before}, the flat layout) and after ({after}) on the embedded model",
    "command": f"bash benchmarks/layout_compare.sh BEFORE WORK (small settings: see the script), BEFORE a checkout of {before}",
    "machine": "2-core CPU, one thread per run, float32",
}
open(path, "w").write(json.dumps({**header, **result}, indent=2, ensure_ascii=False) + "\n")
PY
done
exit $status
