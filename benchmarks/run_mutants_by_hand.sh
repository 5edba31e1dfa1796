#!/usr/bin/env bash
# Run the mutants that mutmut marked "no tests" by hand, with mutmut's own switch
# (MUTANT_UNDER_TEST, read by the trampolines in mutants/), against the tests that call their
# functions, and write benchmarks/results/reliability/mutation_by_hand.json.
#   bash benchmarks/run_mutants_by_hand.sh        (after a `mutmut run`, from the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
tests_for() {
  case "$1" in
    *x__o_weight*) echo "tests/unit/test_attribution.py" ;;
    *orthogonalize*) echo "tests/unit/analyses/refusal_direction/test_pipeline.py::test_orthogonalization_equals_hook_ablation tests/unit/analyses/refusal_direction/test_pipeline.py::test_export_is_float32_and_describes_the_edit tests/contracts/test_no_data_loss.py::test_export_replaces_an_earlier_export_only_with_overwrite tests/contracts/test_against_reference.py::test_orthogonalization_edits_every_writer_and_its_bias tests/unit/model/test_families.py" ;;
    *) echo "" ;;
  esac
}
results=()
for name in $(cd "$root" && "$python" -m mutmut results 2>/dev/null | grep "no tests" | awk -F: '{print $1}'); do
  tests="$(tests_for "$name")"
  [ -z "$tests" ] && continue
  if (cd "$root/mutants" && MUTANT_UNDER_TEST="$name" OMP_NUM_THREADS=1 \
      timeout 300 "$python" -m pytest -x -q -p no:cacheprovider $tests >/dev/null 2>&1); then status=survived; else status=killed; fi
  results+=("{\"mutant\": \"$name\", \"status\": \"$status\", \"tests\": \"$tests\"}")
done
mkdir -p "$root/benchmarks/results/reliability"
(IFS=,; echo "{\"mutants\": [${results[*]}]}") | "$python" -m json.tool > "$root/benchmarks/results/reliability/mutation_by_hand.json"
