#!/usr/bin/env bash
# Run mutants by hand, with mutmut's own switch (MUTANT_UNDER_TEST, read by the trampolines in
# mutants/), and write benchmarks/results/reliability/mutation_by_hand.json:
# * those mutmut marked "no tests" (its record of which test calls which function missed them),
#   against the tests that call their functions (tests_for);
# * the survivors of modules whose tests share module-scoped fixtures, against the whole test
#   files (recheck_for): mutmut credits a fixture's calls to the first test that set it up and
#   runs only that test on a mutant, so a test that checks the fixture's result later never runs.
#   bash benchmarks/run_mutants_by_hand.sh        (after a `mutmut run`, from the repository root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="$root/.venv/bin/python"
tests_for() {
  case "$1" in
    *x__o_weight*) echo "tests/unit/test_attribution.py" ;;
    *orthogonalize*) echo "tests/unit/edits/test_orthogonalize.py tests/unit/analyses/refusal_direction/test_pipeline.py::test_orthogonalization_equals_hook_ablation tests/unit/analyses/refusal_direction/test_pipeline.py::test_export_is_float32_and_describes_the_edit tests/contracts/test_no_data_loss.py::test_export_replaces_an_earlier_export_only_with_overwrite tests/contracts/test_against_reference.py::test_orthogonalization_edits_every_writer_and_its_bias tests/unit/model/test_families.py" ;;
    *subspace_ablation*) echo "tests/unit/analyses/test_categories.py::test_subspace_ablation_matches_the_reference_hooks" ;;
    *) echo "" ;;
  esac
}
recheck_for() {
  case "$1" in
    mechref.analyses.refusal_direction.selection.*) echo "tests/unit/analyses/refusal_direction/test_selection.py tests/unit/analyses/refusal_direction/test_cosmic.py" ;;
    *) echo "" ;;
  esac
}
results=()
controls=()
for line in $(cd "$root" && "$python" -m mutmut results 2>/dev/null | grep -E ": (no tests|survived)$" | tr -d ' ' | tr ':' '='); do
  name="${line%%=*}"
  if [ "${line#*=}" = "notests" ]; then tests="$(tests_for "$name")"; else tests="$(recheck_for "$name")"; fi
  [ -z "$tests" ] && continue
  # The control: with no mutant switched on, the same tests must pass, or "killed" would mean nothing.
  if [[ ! " ${controls[*]} " == *" $tests "* ]]; then
    (cd "$root/mutants" && MUTANT_UNDER_TEST="none" OMP_NUM_THREADS=1 \
      timeout 300 "$python" -m pytest -q -p no:cacheprovider $tests >/dev/null 2>&1) ||
      { echo "the tests $tests fail with no mutant switched on: fix them first" >&2; exit 1; }
    controls+=("$tests")
  fi
  if (cd "$root/mutants" && MUTANT_UNDER_TEST="$name" OMP_NUM_THREADS=1 \
      timeout 300 "$python" -m pytest -x -q -p no:cacheprovider $tests >/dev/null 2>&1); then status=survived; else status=killed; fi
  results+=("{\"mutant\": \"$name\", \"status\": \"$status\", \"tests\": \"$tests\"}")
done
mkdir -p "$root/benchmarks/results/reliability"
(IFS=,; echo "{\"command\": \"bash benchmarks/run_mutants_by_hand.sh\", \"control\": \"with no mutant switched on, each set of tests passes\", \"mutants\": [${results[*]}]}") | "$python" -m json.tool > "$root/benchmarks/results/reliability/mutation_by_hand.json"
