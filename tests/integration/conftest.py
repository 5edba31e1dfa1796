"""Integration tests on the real embedded model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M).

The first run assembles and dequantizes the model (about two minutes) into MECHREF_CACHE;
later runs load it in seconds. Every test here carries the ``integration`` marker (tests/conftest.py):
``pytest -m "not integration"`` leaves them out.
"""

import os

import pytest

from mechref.model.devices import cpu_has_native_bf16


@pytest.fixture(scope="session")
def qwen():
    from mechref import load_model

    return load_model()  # the embedded default, float32


# The commands' default, bfloat16, where the CPU computes it natively; float32 where it is emulated
# (about 3x faster there: mechref.model.devices.cpu_has_native_bf16), so the tier keeps to CI's time.
EMBEDDED_DTYPE = "float32" if cpu_has_native_bf16() is False else "bfloat16"
DTYPE_ARGV = ["--dtype", EMBEDDED_DTYPE]

# The reduced refusal-direction run, shared by its own test and by every analysis that takes a
# direction. Its selection dominates the tier's time (it scales with --n-val, --proxy-prompts and
# --top-k), so those are small; the paper-sized run is in docs/results/science.md. It derives the
# refusal tokens (80 s) rather than being given them: the analyses after it read them from
# refusal_tokens.json beside the direction instead of deriving their own.
REDUCED_REFUSAL_ARGV = [
    *DTYPE_ARGV,
    *["--n-train", "32", "--n-val", "8", "--n-test", "8", "--max-new-tokens", "16", "--top-k", "3", "--proxy-prompts", "2"],
    "--static",
]


@pytest.fixture(scope="session")
def refusal_run(tmp_path_factory):
    from mechref.analyses.refusal_direction import main

    out = tmp_path_factory.mktemp("refusal_direction") / "run"
    assert main([*REDUCED_REFUSAL_ARGV, "--out", str(out)]) == 0
    return out


# The multilingual and category runs are shared by their command's test and by notebooks 04 and 05,
# which are given the same settings and the run's folder: they read every stage from it, as a
# teacher's class does from a pre-computed run (notebooks/README.md), instead of computing it again.
MULTILINGUAL = {"languages": ["en", "zh"], "n_train": 8, "n_test": 8, "max_new_tokens": 16}
CATEGORIES = {
    "categories": ["cybercrime", "weapons", "fraud"],
    "max_per_category": 8,
    "n_components": 2,
    "n_generate": 2,
    "n_kl": 4,
    "max_new_tokens": 16,
    "generation_sources": 1,
}


def as_argv(settings: dict) -> list[str]:
    """``{"n_train": 8, "languages": ["en", "zh"]}`` -> ``["--n-train", "8", "--languages", "en", "zh"]``."""
    argv: list[str] = []
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv


def command_run(main, settings: dict, name: str, refusal_run, tmp_path_factory):
    """Run an analysis command at ``settings`` on the session's refusal direction; its run folder."""
    out = tmp_path_factory.mktemp(name) / "run"
    argv = [*as_argv(settings), "--direction-run", str(refusal_run), *DTYPE_ARGV, "--out", str(out), "--static"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def multilingual_run(refusal_run, tmp_path_factory):
    from mechref.analyses.multilingual import main

    return command_run(main, MULTILINGUAL, "multilingual", refusal_run, tmp_path_factory)


@pytest.fixture(scope="session")
def categories_run(refusal_run, tmp_path_factory):
    from mechref.analyses.categories import main

    return command_run(main, CATEGORIES, "categories", refusal_run, tmp_path_factory)


def assert_every_page_works(folder):
    """Open every HTML page of a run folder in headless Chromium (skipped without one, as the
    browser suite is); each must draw all its figures and views, log no error and link only to
    files that exist."""
    from mechref.report.pagecheck import check_pages
    from mechref.report.plotting import find_chromium

    pages = sorted(folder.glob("*.html"))
    assert pages, f"no pages in {folder}"
    if find_chromium() is None and os.environ.get("MECHREF_REQUIRE_BROWSER") != "1":
        return
    problems = {check.path.name: check.problems for check in check_pages(pages) if check.problems}
    assert not problems, problems
