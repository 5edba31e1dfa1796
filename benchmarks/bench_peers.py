"""Benchmark: mechref's edit search beside heretic and abliterix, on the same model, prompts, judge and budget.

Every tool searches for an edit of the embedded model's bfloat16 weights that removes refusal and changes
little else, each with its own method and its own proxy scores, under the same wall-clock budget for its
search (counted from its first trial; each tool's setup before that is timed and reported apart). Then
every tool's chosen model is confirmed by mechref's evaluation, identically, on prompts no tool saw:

* refusal of the first ``--n-confirm`` harmful *test* prompts of the refusal_direction splits, greedy
  replies of 128 tokens, read by the probe judge and by the paper's phrase list (both reported);
* first-token KL and cross-entropy on the unedited model's own replies to the first 32 harmless test
  prompts, over-refusal of 32 XSTest safe prompts (probe judge), GSM8K accuracy on its first 16
  problems: the damage analysis with ``--edited`` (:mod:`mechref.analyses.damage`);
* every rate with k/n and its 95% interval; paired tests between tools on the same prompts (exact
  McNemar on refusal, mean paired KL difference with its interval).

The prompts every tool searches with: 128 train prompts per class (mechref's refusal-direction sample)
for the directions, the first 32 val prompts per class scored in every trial. The peers run in their own
virtual environments (``--envs``; made with ``setup`` where missing); nothing of theirs is a dependency
of mechref. Their configuration: ``benchmarks/peers/*.toml`` (what was changed from their defaults, and
why, is written there). Each peer's choice: its trial with the fewest refusals, then the least KL (heretic's
first listed Pareto trial, abliterix's batch-mode export); mechref's: the first point of its front that
its search chose to confirm (chosen from the search's proxies, before any generation); it confirms three
points of its front by its own generation on the first 32 held-out prompts (the paper's phrase list), drawn
as its front in the figure.

Run, alone on the machine (the budget is wall-clock)::

    python benchmarks/bench_peers.py setup                      # the peers' environments (once)
    python benchmarks/bench_peers.py run --budget-minutes 30    # prompts, three searches, confirmation, JSON

Stages resume: a tool whose export exists is not searched again (``--redo TOOL`` to search again).
Result: ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = Path(__file__).resolve().parent / "peers"
SHARED = ROOT.parent / "shared" / "data"
SPLITS = SHARED / "refusal_direction" / "splits"
PEERS = {"heretic": ("heretic-llm", "1.4.0"), "abliterix": ("abliterix", "1.12.2")}
TOOLS = ("mechref", *PEERS)
N_TRAIN, N_SEARCH = 128, 32
TRIAL_MARK = "Running trial"


# --------------------------------------------------------------------------- prompts


def search_prompts() -> dict[str, list[str]]:
    """The prompts every tool searches with: mechref's refusal-direction train sample and the first
    ``N_SEARCH`` val prompts per class (what ``optimize_edit --splits`` scores in every trial)."""
    from mechref.analyses.refusal_direction.pipeline import load_prompt_sets
    from mechref.analyses.refusal_direction.settings import RefusalDirectionSettings
    from mechref.data.prompts import load_refusal_direction_splits

    sets = load_prompt_sets(RefusalDirectionSettings(splits=SPLITS, n_train=N_TRAIN))
    splits = load_refusal_direction_splits(SPLITS)
    return {
        "harmful_train": sets["harmful_train"].instructions,
        "harmless_train": sets["harmless_train"].instructions,
        "harmful_val": splits[("harmful", "val")].take(N_SEARCH).instructions,
        "harmless_val": splits[("harmless", "val")].take(N_SEARCH).instructions,
    }


def write_prompts(folder: Path, prompts: dict[str, list[str]]) -> dict:
    """Each set as a text file of one prompt per line (heretic) and a JSON Lines folder (abliterix).
    A prompt's line breaks become spaces in both: a text file has no other way to hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    joined = 0
    for name, texts in prompts.items():
        flat = [" ".join(t.split("\n")) for t in texts]
        joined += sum(a != b for a, b in zip(texts, flat))
        (folder / f"{name}.txt").write_text("".join(f"{t}\n" for t in flat), encoding="utf-8")
        (folder / "jsonl" / name).mkdir(parents=True, exist_ok=True)
        with open(folder / "jsonl" / name / "train.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in flat)
    return {"counts": {k: len(v) for k, v in prompts.items()}, "prompts_with_line_breaks_joined": joined}


# --------------------------------------------------------------------------- environments


def env_python(envs: Path, tool: str) -> Path:
    return envs / PEERS[tool][0] / "bin" / "python"


def setup_env(envs: Path, tool: str) -> None:
    """A virtual environment holding the CPU build of torch this machine uses and the peer's pinned release."""
    package, version = PEERS[tool]
    folder = envs / package
    if env_python(envs, tool).is_file() and _installed(envs, tool) == version:
        print(f"{tool}: {folder} has {package} {version}")
        return
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, f"{package}=={version}"], check=True)
    print(f"{tool}: installed {package} {version} in {folder}")


def _installed(envs: Path, tool: str) -> str | None:
    package = PEERS[tool][0]
    out = subprocess.run(
        [str(env_python(envs, tool)), "-c", f"from importlib.metadata import version; print(version('{package}'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- running a tool under a budget


class Budget:
    """Watches a tool's log; ``budget_s`` after its first trial starts, sends SIGINT (both peers stop their
    Optuna study gracefully on it and go on to choose and export). Tracks the peak resident memory of
    the process tree."""

    def __init__(self, proc: subprocess.Popen, log: Path, budget_s: float, mark: str = TRIAL_MARK) -> None:
        self.proc, self.log, self.budget_s, self.mark = proc, log, budget_s, mark
        self.started = time.perf_counter()
        self.first_trial: float | None = None
        self.stopped: float | None = None
        self.peak_rss = 0

    def watch(self, poll_s: float = 1.0) -> None:
        import psutil

        while self.proc.poll() is None:
            now = time.perf_counter()
            if self.first_trial is None and self.mark in self.log.read_text(errors="replace"):
                self.first_trial = now
            if self.first_trial is not None and self.stopped is None and now - self.first_trial >= self.budget_s:
                self.proc.send_signal(signal.SIGINT)
                self.stopped = now
            try:
                root = psutil.Process(self.proc.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                pass
            time.sleep(poll_s)

    def timings(self) -> dict:
        end = time.perf_counter()
        return {
            "setup_s": round((self.first_trial or end) - self.started, 1),
            "search_s": round(((self.stopped or end) - self.first_trial), 1) if self.first_trial else 0.0,
            "after_search_s": round(end - (self.stopped or end), 1),
            "total_s": round(end - self.started, 1),
            "stopped_by_budget": self.stopped is not None,
            "peak_rss_gib": round(self.peak_rss / 2**30, 2),
        }


def run_peer(tool: str, run_dir: Path, envs: Path, model_folder: Path, budget_s: float) -> dict:
    """One peer's search in ``run_dir/tool`` under the budget, its chosen trial exported to ``export``."""
    work = run_dir / tool
    if (work / "answers.txt").is_file():
        shutil.rmtree(work)  # an earlier search of this benchmark (it wrote answers.txt there)
    elif work.exists():
        raise SystemExit(f"{work} exists and was not written by this benchmark; give another --run-dir")
    work.mkdir(parents=True)
    export = work / "export"
    fill = {"@MODEL@": str(model_folder), "@PROMPTS@": str(run_dir / "prompts"), "@EXPORT@": str(export)}
    text = (CONFIGS / f"{tool}.toml").read_text()
    for key, value in fill.items():
        text = text.replace(key, value)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    bin_dir = env_python(envs, tool).parent
    if tool == "heretic":
        (work / "config.toml").write_text(text)
        command = [str(bin_dir / "heretic")]
        # heretic asks with plain input() where it believes it runs in a notebook: the answers are then
        # lines on stdin: the first listed trial (fewest refusals, then least KL), save, the folder.
        env["KAGGLE_KERNEL_RUN_TYPE"] = "batch"
        answers = f"1\n1\n{export}\n"
    else:
        (work / "abliterix.toml").write_text(text)
        command = [str(bin_dir / "abliterix"), "--config", str(work / "abliterix.toml")]
        answers = ""
    (work / "answers.txt").write_text(answers)
    log = work / "log.txt"
    print(f"{tool}: searching for {budget_s / 60:g} min after its first trial (log {log}) …", flush=True)
    with open(log, "w") as out, open(work / "answers.txt") as stdin:
        # SIGINT restored to its default in the child: a shell starting this command in the background
        # ignores it, the child would inherit that, and Python installs no KeyboardInterrupt handler then.
        proc = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        budget = Budget(proc, log, budget_s)
        watcher = threading.Thread(target=budget.watch, daemon=True)
        watcher.start()
        proc.wait()
        watcher.join()
    result = {"returncode": proc.returncode, **budget.timings()}
    result.update(peer_trials(work / "checkpoints"))
    result["export"] = str(export) if (export / "config.json").is_file() else None
    print(f"{tool}: {result}", flush=True)
    return result


def _journal_study(checkpoints: Path):
    """The one Optuna study of a peer's journal in ``checkpoints``, or None where there is none."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    files = sorted(checkpoints.glob("*.jsonl")) if checkpoints.is_dir() else []
    if not files:
        return None
    return optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(files[0]))))


def _record(t) -> dict:
    """A completed trial as both peers record it (the number the tool prints: heretic's ``index``, from 1)."""
    return {
        "number": t.number,
        "index": t.user_attrs.get("index", t.number + 1),
        "refusals": t.user_attrs["refusals"],
        "kl_divergence": t.user_attrs["kl_divergence"],
    }


def within_budget(trials: list, budget_s: float, first) -> list:
    """The completed trials that ended no later than ``budget_s`` after ``first`` (the first trial's start;
    one that ends exactly at the limit counts: an interruption then would have come after it)."""
    return [t for t in trials if t.datetime_complete is not None and (t.datetime_complete - first).total_seconds() <= budget_s]


def peer_trials(checkpoints: Path) -> dict:
    """The completed trials of a peer's Optuna journal (both record ``refusals`` and ``kl_divergence``
    per trial) and its choice by the rule both apply: fewest refusals, then least KL."""
    import optuna

    study = _journal_study(checkpoints)
    if study is None:
        return {"trials_completed": 0, "trials": [], "own_claim": None}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "refusals" in t.user_attrs]
    trials = [_record(t) for t in done]
    chosen = min(trials, key=lambda t: (t["refusals"], t["kl_divergence"])) if trials else None
    n_bad = next((t.user_attrs.get("n_bad_prompts") for t in done if "n_bad_prompts" in t.user_attrs), N_SEARCH)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {
        "trials_completed": len(trials),
        "trials_pruned": pruned,
        "trials": trials,
        "own_claim": None if chosen is None else {**chosen, "n_prompts": n_bad, "judge": "its own phrase list"},
    }


def replay_heretic(run_dir: Path, envs: Path, budget_s: float) -> dict:
    """A heretic search that ran past its budget without stopping (SIGINT ignored: see ``run_peer``), made
    into the record an interrupted one would have given: only the trials completed within the budget
    (from the journal's times) count, the choice among them by heretic's rule, exported by replaying that
    trial with heretic's own classes (``peers/heretic_replay.py``, which checks the replay's KL)."""
    import optuna

    work = run_dir / "heretic"
    study = _journal_study(work / "checkpoints")
    if study is None:
        raise SystemExit(f"{work / 'checkpoints'} holds no heretic journal")
    first = min(t.datetime_start for t in study.trials if t.datetime_start)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "refusals" in t.user_attrs]
    within = within_budget(done, budget_s, first)
    trials = [_record(t) for t in within]
    chosen = min(trials, key=lambda t: (t["refusals"], t["kl_divergence"]))
    export = work / "export"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    script = str(CONFIGS / "heretic_replay.py")
    out = subprocess.run(
        [str(env_python(envs, "heretic")), script, str(chosen["number"]), str(export)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"heretic replay failed:\n{out.stderr[-3000:]}")
    check = json.loads(out.stdout.strip().splitlines()[-1])
    log = (work / "log.txt").read_text(errors="replace")
    ram = [float(x) for x in re.findall(r"Resident system RAM: ([\d.]+) GB", log)]
    started = (work / "answers.txt").stat().st_mtime
    last = max(t.datetime_complete for t in within)
    return {
        "returncode": None,
        "setup_s": round(first.timestamp() - started, 1),
        "search_s": round((last - first).total_seconds(), 1),
        "stopped_by_budget": False,
        "stopped_how": (
            "killed after its budget (its SIGINT was ignored, inherited from the shell); the trials completed within "
            "the budget counted, the choice among them exported by replaying it with heretic's own classes"
        ),
        "replay_check": check,
        "trials_after_budget": len(done) - len(within),
        "peak_rss_gib": round(max(ram) * 10**9 / 2**30, 2) if ram else None,
        "peak_rss_note": "heretic's own largest 'Resident system RAM' line",
        "trials_completed": len(trials),
        "trials": trials,
        "own_claim": {**chosen, "n_prompts": N_SEARCH, "judge": "its own phrase list"},
        "export": str(export) if (export / "config.json").is_file() else None,
    }


def run_mechref(run_dir: Path, model_name: str, budget_s: float) -> dict:
    """mechref's setup (the refusal-direction analysis on the splits) and its edit search under the budget.

    The setup's own evaluation on test prompts is cut to 32 per class (``--n-test``; by default it reads all
    572 harmful and 6,266 harmless ones): the direction is chosen on the val prompts before it, and the
    search reads only the direction run's candidates, chosen direction and refusal tokens."""
    work = run_dir / "mechref"
    work.mkdir(parents=True, exist_ok=True)
    python = [sys.executable, "-m"]
    model = ["--model", model_name]
    started = time.perf_counter()
    rd = work / "refusal_direction"
    subprocess.run(
        [*python, "mechref.analyses.refusal_direction", *model, "--splits", str(SPLITS), "--n-test", "32", "--out", str(rd)],
        check=True,
    )
    setup_s = time.perf_counter() - started
    search = work / "optimize_edit"
    export = work / "export"
    command = [
        *python,
        "mechref.analyses.optimize_edit",
        *model,
        "--direction-run", str(rd),
        "--splits", str(SPLITS),
        "--out", str(search),
        "--n-trials", "100000",
        "--timeout-minutes", f"{budget_s / 60:g}",
        "--n-confirm-points", "3",
        "--judge", "arditi",
        "--export-model", str(export),
        "--overwrite",
    ]  # fmt: skip
    import psutil

    proc = subprocess.Popen(command)
    peak = 0
    while proc.poll() is None:
        try:
            root = psutil.Process(proc.pid)
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(1.0)
    if proc.returncode:
        raise SystemExit(f"mechref's edit search failed ({proc.returncode}); see above")
    summary = json.loads((search / "summary.json").read_text())
    trials = summary["search"]["front"]
    return {
        "returncode": 0,
        "setup_s": round(setup_s, 1),
        "search_s": summary["timings_s"]["search"],
        "after_search_s": round(sum(v for k, v in summary["timings_s"].items() if k in ("confirm", "export")), 1),
        "total_s": round(time.perf_counter() - started, 1),
        "stopped_by_budget": True,
        "peak_rss_gib": round(peak / 2**30, 2),
        "trials_completed": summary["search"]["n_trials"],
        "front": trials,
        "export": str(export),
        "own_claim": {k: v for k, v in summary["confirmed"].items() if k != "unedited"},
    }


# --------------------------------------------------------------------------- confirmation


def loads_in_plain_transformers(folder: str) -> dict:
    """Whether ``transformers`` alone loads the export and answers one prompt (a fresh process)."""
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16);"
        "t = AutoTokenizer.from_pretrained(sys.argv[1]);"
        "ids = t.apply_chat_template([{'role': 'user', 'content': 'Say hi.'}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True);"
        "print(repr(t.decode(m.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids['input_ids'].shape[1]:])))"
    )
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True)
    return {"loads": out.returncode == 0, "reply": out.stdout.strip()[-200:] or out.stderr.strip()[-300:]}


def confirm(run_dir: Path, model_name: str, exports: dict[str, str], n_confirm: int, max_new_tokens: int = 128) -> dict:
    """Every model (the unedited one and each tool's export) measured by mechref, identically."""
    import torch

    from mechref import load_model
    from mechref.analyses.damage import DamageSettings, run_damage
    from mechref.data.prompts import load_refusal_direction_splits
    from mechref.generation import generate
    from mechref.judges.core import make_judge
    from mechref.rates import Rate, mcnemar_exact, mean_interval

    base = load_model(model_name, dtype="bfloat16")
    splits = load_refusal_direction_splits(SPLITS)
    harmful = splits[("harmful", "test")].take(n_confirm).instructions
    harmless_file = run_dir / "prompts" / "harmless_test.json"
    harmless_file.write_text(json.dumps([{"instruction": p} for p in splits[("harmless", "test")].take(32).instructions]))
    judges = {"probe": make_judge("probe", base), "arditi": make_judge("arditi")}
    found: dict[str, dict] = {}
    for name in ("unedited", *exports):
        cache = run_dir / "confirm" / f"{name}.json"
        if cache.is_file():
            found[name] = json.loads(cache.read_text())
            continue
        print(f"confirming {name} …", flush=True)
        started = time.perf_counter()
        if name == "unedited":
            replies = generate(base, harmful, max_new_tokens=max_new_tokens, batch_size=32)
            damage = None
        else:
            model = load_model(exports[name], dtype="bfloat16")
            replies = generate(model, harmful, max_new_tokens=max_new_tokens, batch_size=32)
            del model
            settings = DamageSettings(
                edited=Path(exports[name]),
                edits=[],
                xstest=SHARED / "xstest" / "xstest_prompts.csv",
                gsm8k=SHARED / "gsm8k" / "test.jsonl",
                harmless=harmless_file,
                judge="probe",
            )
            result = run_damage(base, settings, run_dir / "confirm" / f"damage_{name}")
            damage = {
                "kl_first": result.divergence["exported"].kl_first,
                "cross_entropy": result.divergence["exported"].cross_entropy,
                "cross_entropy_unedited": result.divergence["original"].cross_entropy,
                "xstest_refused": [r["refusal"] for r in result.over_refusal["exported"]],
                "xstest_refused_unedited": [r["refusal"] for r in result.over_refusal["original"]],
                "gsm8k_correct": [r["correct"] for r in result.gsm8k["exported"]],
                "gsm8k_correct_unedited": [r["correct"] for r in result.gsm8k["original"]],
            }
        verdicts = {j: judge.judge_many(replies, harmful) for j, judge in judges.items()}
        found[name] = {
            "replies": replies,
            "refused": verdicts,
            "damage": damage,
            "seconds": round(time.perf_counter() - started, 1),
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(found[name], ensure_ascii=False))
        torch.set_num_threads(torch.get_num_threads())
    table = {}
    for name, f in found.items():
        row = {"refusal": {j: Rate.of(v).to_dict() for j, v in f["refused"].items()}}
        if f["damage"]:
            d = f["damage"]
            row["kl_first_token"] = mean_interval(d["kl_first"])
            row["cross_entropy"] = mean_interval(d["cross_entropy"])
            row["cross_entropy_rise"] = mean_interval([a - b for a, b in zip(d["cross_entropy"], d["cross_entropy_unedited"])])
            row["xstest_over_refusal"] = Rate.of(d["xstest_refused"]).to_dict()
            row["xstest_over_refusal_unedited"] = Rate.of(d["xstest_refused_unedited"]).to_dict()
            row["gsm8k"] = Rate.of(d["gsm8k_correct"]).to_dict()
            row["gsm8k_unedited"] = Rate.of(d["gsm8k_correct_unedited"]).to_dict()
        table[name] = row
    paired = {}
    tools = list(exports)
    for i, a in enumerate(tools):
        for b in tools[i + 1 :]:
            fa, fb = found[a], found[b]
            entry = {"refusal_probe": mcnemar_exact(fa["refused"]["probe"], fb["refused"]["probe"])}
            entry["refusal_arditi"] = mcnemar_exact(fa["refused"]["arditi"], fb["refused"]["arditi"])
            if fa["damage"] and fb["damage"]:
                ka, kb = fa["damage"]["kl_first"], fb["damage"]["kl_first"]
                entry["kl_first_token_difference"] = mean_interval([x - y for x, y in zip(ka, kb)])
            paired[f"{a} vs {b}"] = entry
    return {
        "table": table,
        "paired": paired,
        "dominance": dominance(table, paired, "mechref"),
        "n_harmful": len(harmful),
        "max_new_tokens": max_new_tokens,
    }


def dominance(table: dict, paired: dict, tool: str) -> dict:
    """Whether ``tool``'s model dominates each other tool's on held-out (refusal by the probe, first-token KL):
    no more refusals and no more KL, and fewer of one; with whether each difference is significant (exact
    McNemar p < 0.05; the paired KL difference's 95% interval excludes 0)."""
    if tool not in table or "kl_first_token" not in table[tool]:
        return {}
    found = {}
    mine = table[tool]
    for other, row in table.items():
        if other in (tool, "unedited") or "kl_first_token" not in row:
            continue
        k_mine, k_other = mine["refusal"]["probe"]["k"], row["refusal"]["probe"]["k"]
        kl_mine, kl_other = mine["kl_first_token"]["mean"], row["kl_first_token"]["mean"]
        key = f"{tool} vs {other}" if f"{tool} vs {other}" in paired else f"{other} vs {tool}"
        test = paired[key]
        low, high = test["kl_first_token_difference"]["ci95"]
        found[other] = {
            "refused": [k_mine, k_other],
            "kl_first_token": [kl_mine, kl_other],
            "dominates": k_mine <= k_other and kl_mine <= kl_other and (k_mine < k_other or kl_mine < kl_other),
            "refusal_p": test["refusal_probe"]["p_value"],
            "kl_difference_significant": bool(low > 0 or high < 0),
        }
    return found


# --------------------------------------------------------------------------- figure


def draw(result: dict, out: Path) -> list[Path]:
    """Held-out refusal (probe judge) against first-token KL, every tool's chosen model with its
    intervals, and mechref's confirmed front (its own confirmation: phrase list, its 32 held-out prompts)."""
    import plotly.graph_objects as go

    from mechref.report.plotting import save_figure

    fig = go.Figure()
    colours = {"unedited": "#555555", "mechref": "#1f77b4", "heretic": "#d62728", "abliterix": "#2ca02c"}
    own = result["searches"].get("mechref", {}).get("own_claim") or {}
    front = sorted(
        ((b["kl_first_token"]["mean"], b["refusal"]["rate"], label) for label, b in own.items()),
        key=lambda t: t[0],
    )
    if front:
        fig.add_trace(
            go.Scatter(
                x=[f[0] for f in front],
                y=[f[1] for f in front],
                text=[f[2] for f in front],
                mode="lines+markers",
                line={"dash": "dot", "color": colours["mechref"]},
                marker={"symbol": "circle-open", "size": 9},
                name="mechref's confirmed front (its own check)",
            )
        )
    for name, row in result["confirmation"]["table"].items():
        refusal = row["refusal"]["probe"]
        kl = row.get("kl_first_token") or {"mean": 0.0, "ci95": [0.0, 0.0]}
        fig.add_trace(
            go.Scatter(
                x=[kl["mean"]],
                y=[refusal["rate"]],
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [kl["ci95"][1] - kl["mean"]],
                    "arrayminus": [kl["mean"] - kl["ci95"][0]],
                },
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [refusal["ci95"][1] - refusal["rate"]],
                    "arrayminus": [refusal["rate"] - refusal["ci95"][0]],
                },
                mode="markers+text",
                text=[f"{name} {refusal['k']}/{refusal['n']}"],
                textposition="top right",
                marker={"size": 12, "color": colours.get(name, "#9467bd")},
                name=name,
            )
        )
    fig.update_layout(
        title=f"Held-out refusal against KL, each tool's search given {result['budget_minutes']:g} min",
        xaxis_title="first-token KL from the unedited model (its own harmless replies)",
        yaxis_title="harmful test prompts refused (probe judge)",
        yaxis={"range": [-0.05, 1.05]},
        height=520,
        width=860,
    )
    return save_figure(fig, out, static=["png"])


# --------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["setup", "run", "replay-heretic"])
    parser.add_argument("--envs", type=Path, default=Path.home() / ".cache" / "mechref-peers", help="the peers' environments")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "peers")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="each tool's search, from its first trial")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--redo", nargs="*", choices=TOOLS, default=[], help="search again though an export exists")
    parser.add_argument("--search-only", action="store_true", help="stop after the searches")
    parser.add_argument("--n-confirm", type=int, default=64, help="held-out harmful test prompts")
    parser.add_argument("--model", default=None, help="an embedded model's name (default: the embedded Qwen2.5-Coder-1.5B)")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args(argv)
    for tool in args.tools:
        if tool in PEERS and args.stage == "setup":
            setup_env(args.envs, tool)
    if args.stage == "setup":
        return 0
    if args.stage == "replay-heretic":
        record = replay_heretic(args.run_dir, args.envs, args.budget_minutes * 60)
        record["budget_minutes"] = args.budget_minutes
        (args.run_dir / "search_heretic.json").write_text(json.dumps(record, indent=1))
        print(json.dumps({k: v for k, v in record.items() if k != "trials"}, indent=1))
        return 0
    for tool in args.tools:
        if tool in PEERS and _installed(args.envs, tool) != PEERS[tool][1]:
            raise SystemExit(f"{tool}: no environment with {' '.join(PEERS[tool])} in {args.envs}; run: bench_peers.py setup")
    if not SPLITS.is_dir():
        raise SystemExit(f"no refusal_direction splits at {SPLITS}")
    import torch

    from mechref.model.embedded import DEFAULT_MODEL, ensure_embedded, find_embedded

    model_name = args.model or DEFAULT_MODEL
    embedded = find_embedded(model_name)
    if embedded is None:
        raise SystemExit(f"--model {model_name}: not an embedded model's name")
    model_folder = ensure_embedded(embedded, torch.bfloat16)
    run_dir = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(run_dir / "prompts", search_prompts())
    budget_s = args.budget_minutes * 60
    searches: dict[str, dict] = {}
    for tool in args.tools:
        record = run_dir / f"search_{tool}.json"
        if record.is_file() and tool not in args.redo:
            searches[tool] = json.loads(record.read_text())
            continue
        searches[tool] = (
            run_mechref(run_dir, model_name, budget_s)
            if tool == "mechref"
            else run_peer(tool, run_dir, args.envs, model_folder, budget_s)
        )
        searches[tool]["budget_minutes"] = args.budget_minutes
        record.write_text(json.dumps(searches[tool], indent=1))
    for s in searches.values():
        s["seconds_per_trial"] = round(s["search_s"] / s["trials_completed"], 1) if s["trials_completed"] else None
        s["export_loads_in_plain_transformers"] = loads_in_plain_transformers(s["export"]) if s["export"] else None
    if args.search_only:
        return 0
    exports = {tool: s["export"] for tool, s in searches.items() if s["export"]}
    confirmed = confirm(run_dir, model_name, exports, args.n_confirm)
    result = {
        "benchmark": "peers",
        "model": f"{model_name} (embedded, bfloat16 folder)",
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "budget_minutes": args.budget_minutes,
        "prompts": prompts,
        "peers": {tool: {"package": PEERS[tool][0], "version": PEERS[tool][1]} for tool in PEERS},
        "searches": searches,
        "confirmation": confirmed,
        "command": "python benchmarks/bench_peers.py run " + " ".join(argv or sys.argv[2:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print("wrote", args.out)
    for path in draw(result, run_dir / "figure" / "peers_front"):
        print("drew", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
