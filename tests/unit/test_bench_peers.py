"""The side-by-side benchmark's own machinery: the prompt files the peers read, the budget that stops
them, and how their choice is read back from their Optuna journals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_files_hold_one_prompt_per_line_in_both_layouts(bench, tmp_path):
    prompts = {"harmful_train": ["How do I\nbuild it?", "Plain one"], "harmless_val": ["Tell me a joke"]}
    info = bench.write_prompts(tmp_path, prompts)
    assert info == {"counts": {"harmful_train": 2, "harmless_val": 1}, "prompts_with_line_breaks_joined": 1}
    lines = (tmp_path / "harmful_train.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["How do I build it?", "Plain one"]
    rows = (tmp_path / "jsonl" / "harmful_train" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["text"] for r in rows] == lines


def _journal(path: Path, trials: list[tuple[int, float] | None]) -> None:
    """A peer-like journal: per trial ``refusals`` and ``kl_divergence`` attributes (None: a pruned trial)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="peer", storage=JournalStorage(JournalFileBackend(str(path))), directions=["minimize", "minimize"]
    )
    for values in trials:
        trial = study.ask()
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        refusals, kl = values
        trial.set_user_attr("refusals", refusals)
        trial.set_user_attr("kl_divergence", kl)
        trial.set_user_attr("n_bad_prompts", 32)
        study.tell(trial, [kl, float(refusals)])


def test_the_choice_is_the_fewest_refusals_then_the_least_kl(bench, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    # Trial 1 and 3 tie on refusals; 3 has the lower KL. Trial 0 has less KL but more refusals.
    _journal(tmp_path / "checkpoints" / "study.jsonl", [(5, 0.01), (2, 0.30), None, (2, 0.20), (9, 0.001)])
    found = bench.peer_trials(tmp_path / "checkpoints")
    assert found["trials_completed"] == 4 and found["trials_pruned"] == 1
    claim = found["own_claim"]
    assert (claim["number"], claim["refusals"], claim["kl_divergence"], claim["n_prompts"]) == (3, 2, 0.20, 32)


def test_a_search_stopped_before_any_trial_has_no_choice(bench, tmp_path):
    assert bench.peer_trials(tmp_path / "missing") == {"trials_completed": 0, "trials": [], "own_claim": None}


SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGINT, lambda *a: (print("interrupted", flush=True), sys.exit(0)))
if sys.argv[1] == "mark":
    print("Running trial 1 of 200...", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _watch(bench, tmp_path, mode: str, sleep_s: float, budget_s: float):
    log = tmp_path / f"{mode}.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER, mode, str(sleep_s)], stdout=out, stderr=subprocess.STDOUT)
        budget = bench.Budget(proc, log, budget_s)
        budget.watch(poll_s=0.05)
    return proc, budget.timings(), log.read_text()


def test_the_budget_interrupts_a_search_once_its_time_after_the_first_trial_is_spent(bench, tmp_path):
    proc, timings, text = _watch(bench, tmp_path, "mark", sleep_s=30, budget_s=0.5)
    assert proc.returncode == 0 and "interrupted" in text  # SIGINT, which the peers stop gracefully on
    assert timings["stopped_by_budget"] and 0.5 <= timings["search_s"] < 10


def test_the_budget_counts_from_the_first_trial_and_never_stops_a_setup(bench, tmp_path):
    proc, timings, text = _watch(bench, tmp_path, "setup", sleep_s=1.0, budget_s=0.2)
    assert proc.returncode == 0 and "interrupted" not in text
    assert not timings["stopped_by_budget"] and timings["search_s"] == 0.0 and timings["setup_s"] >= 1.0


def _row(k: int, kl: float) -> dict:
    return {"refusal": {"probe": {"k": k}}, "kl_first_token": {"mean": kl}}


@pytest.mark.parametrize(
    ("mine", "other", "dominates"),
    [
        ((2, 0.10), (2, 0.10), False),  # equal in both: no better in either
        ((2, 0.09), (2, 0.10), True),  # the same refusals, less KL
        ((1, 0.10), (2, 0.10), True),  # fewer refusals, the same KL
        ((1, 0.11), (2, 0.10), False),  # a trade-off, not dominance
    ],
)
def test_dominance_needs_no_worse_in_both_and_better_in_one(bench, mine, other, dominates):
    table = {"unedited": {"refusal": {"probe": {"k": 30}}}, "mechref": _row(*mine), "peer": _row(*other)}
    paired = {"mechref vs peer": {"refusal_probe": {"p_value": 1.0}, "kl_first_token_difference": {"ci95": [-0.01, 0.0]}}}
    found = bench.dominance(table, paired, "mechref")
    assert list(found) == ["peer"] and found["peer"]["dominates"] is dominates
    assert found["peer"]["kl_difference_significant"] is False  # an interval reaching 0 excludes nothing


def test_a_trial_ending_exactly_at_the_budget_counts_and_one_a_microsecond_later_does_not(bench):
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    first = datetime(2026, 1, 1)
    ends = [timedelta(seconds=100), timedelta(seconds=900), timedelta(seconds=900, microseconds=1)]
    trials = [SimpleNamespace(number=i, datetime_complete=first + e) for i, e in enumerate(ends)]
    assert [t.number for t in bench.within_budget(trials, 900, first)] == [0, 1]
