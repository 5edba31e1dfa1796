"""The results tables of the documentation site, drawn from the committed JSON in benchmarks/results/.

A results page (``docs/results/*.md``) places table ``NAME`` with a ``{mechref-table} NAME``
directive; the site's build calls the renderer of that name below, which reads its JSON alone. So
no number in a table is typed by hand, and a benchmark that writes new JSON changes the page at
the next build (``tests/contracts/test_results_tables.py`` checks every renderer is placed once).

    python benchmarks/tables.py              # the names of the tables
    python benchmarks/tables.py NAME         # print one table (Markdown)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "ja": "Japanese",
    "zh": "Chinese",
    "yo": "Yoruba",
    "it": "Italian",
    "ko": "Korean",
    "es": "Spanish",
    "fr": "French",
    "ru": "Russian",
    "th": "Thai",
    "ar": "Arabic",
    "nl": "Dutch",
    "pl": "Polish",
}


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[object]]) -> str:
    return "\n".join([_row(*header), _row(*["---"] * len(header)), *(_row(*r) for r in rows)])


def _rate(counts: dict, bold: bool = False) -> str:
    """``0.88 = 7/8 [0.53, 0.98]`` from a ``Rate.to_dict()``."""
    low, high = counts["ci95"]
    value = f"{counts['rate']:.2f} = {counts['k']}/{counts['n']}"
    return f"**{value} [{low:.2f}, {high:.2f}]**" if bold else f"{value} [{low:.2f}, {high:.2f}]"


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate_of(value: float, n: int) -> str:
    """A rate stored without its counts (an older JSON): k = value x n, which is exact for a share of n replies."""
    k = round(value * n)
    low, high = _wilson(k, n)
    return f"{k}/{n} [{low:.2f}, {high:.2f}]"


def _short_rate(counts: dict) -> str:
    low, high = counts["ci95"]
    return f"{counts['k']}/{counts['n']} [{low:.2f}, {high:.2f}]"


def _agreement(block: dict) -> str:
    low, high = block["accuracy_ci95"]
    return f"{block['accuracy']:.3f} [{low:.2f}, {high:.2f}], κ {block['kappa']:.2f}"


# ----- renderers, one per table ------------------------------------------------------------------
def suffix_hijack() -> str:
    d = _json("suffix_hijack.json")
    labels = {
        "harmful": "harmful",
        "harmful+adv_suffix": "harmful + adversarial suffix",
        "harmful+random_suffix": "harmful + random suffix (same length)",
        "harmless": "harmless",
    }
    first, last = d["late_layers"]["layers"]
    tokens = d["settings"]["max_new_tokens"]
    rows = []
    for key, label in labels.items():
        adversarial = key == "harmful+adv_suffix"
        cosine = f"{d['late_layers']['mean_cosine'][key]:.3f}"
        total = f"{d['attribution']['top_heads_total'][key]:.2f}"
        rows.append(
            [
                label,
                _rate(d["refusal_rate_counts"][key], bold=adversarial),
                f"**{cosine}**" if adversarial else cosine,
                f"**{total}**" if adversarial else total,
            ]
        )
    top = len(d["top_heads"])
    return _table(
        [
            "condition",
            f"refusal rate (greedy, {tokens} tokens), k/n [95% interval]",
            f"cosine with r, layers {first}-{last}",
            f"sum of top-{top} head DFA",
        ],
        rows,
    )


def _validation(d: dict, language: str):
    from mechref.judges.validation import judge_validation

    return judge_validation(d["judge"], language, d["model"])


def _check(d: dict, language: str) -> str:
    v = _validation(d, language)
    return "none" if v.check is None else f"κ {v.check['kappa']:.2f} ({v.check['n']})" + ("" if v.validated else " < 0.6")


def _status_today(d: dict, language: str) -> str:
    """The status today's multilingual analysis gives the run's judged rates (``audit_status``
    with the judge looked up in the registry)."""
    from mechref.analyses.multilingual.pipeline import audit_status

    rates = d["baseline_refusal"][language]
    return audit_status(rates["harmful"], rates["harmless"], validated=_validation(d, language).validated)


def multilingual() -> str:
    d = _json("multilingual.json")
    languages = d["languages"]
    short = {
        "safety-aligned": "aligned",
        "not safety-aligned": "not aligned",
        "over-refusing (not understood?)": "**over-refusing**",
        "judge not validated": "*judge not validated*",
    }
    base = d["baseline_refusal"]
    generation = d["transfer"]["generation"]
    layer = d["cosine"]["layer"]
    english = d["cosine"]["languages"].index("en")
    rows = [
        ["harmful refused (greedy, phrase judge), k/n [95% interval]"]
        + [_short_rate(base[lang]["harmful_counts"]) for lang in languages],
        ["harmless refused"] + [_short_rate(base[lang]["harmless_counts"]) for lang in languages],
        ["audit status (the run's)"] + [short.get(d["audit_status"][lang], d["audit_status"][lang]) for lang in languages],
        ["its phrase judge's hand-labelled check (today's registry)"] + [_check(d, lang) for lang in languages],
        ["audit status by today's rules (the same replies)"]
        + [short.get(status, status) for status in (_status_today(d, lang) for lang in languages)],
        [f"harmful refused, {LANGUAGE_NAMES.get(generation['source'], generation['source'])} vector ablated"]
        + [_short_rate(generation["ablated_refusal_counts"][lang]) for lang in languages],
        [f"cosine of the language's vector with English (layer {layer})"]
        + [_cosine(d["cosine"]["matrix"][d["cosine"]["languages"].index(lang)][english]) for lang in languages],
        [f"silhouette, harmful vs harmless (layer {layer})"]
        + [f"{d['silhouette']['at_direction_layer'][lang]:.2f}" for lang in languages],
    ]
    return _table(["", *languages], rows)


def _cosine(value: float) -> str:
    return "1" if round(value, 2) == 1 else f"{value:.2f}"


def judges() -> str:
    d = _json("judges.json")
    rows = []
    for lang, block in d["languages"].items():
        cells = [block.get("substring (English phrases)"), block.get(f"substring ({lang} phrases)"), block.get("chat-model"),
                 block.get("mined")]  # fmt: skip
        best = max((i for i in range(len(cells)) if cells[i]), key=lambda i: cells[i]["accuracy"])  # type: ignore[index]
        text = [
            f"{c['accuracy']:.2f} (κ {c['kappa']:.2f})" if c else "no list" if i == 1 else "not run" for i, c in enumerate(cells)
        ]
        text[best] = f"**{text[best]}**"
        if "mined" in block:
            phrases = block["mined"]["phrases"]
            text[3] += f": {', '.join(repr(p) for p in phrases)}" if phrases else ": no opening found"
        rows.append([f"{LANGUAGE_NAMES.get(lang, lang)} ({block['labelled_refusals']} / {block['n_labelled']})", *text])
    return _table(
        [
            "language (labelled refusals / labelled replies)",
            "English phrase list",
            "the language's phrase list",
            "chat-model judge",
            "mined judge (mined from other replies than the labelled ones)",
        ],
        rows,
    )


def xstest_judges() -> str:
    d = _json("judges_xstest.json")
    descriptions = {
        "arditi": "`arditi` (the paper's 12 phrases)",
        "substring": "`substring` (mechref's English list, the default)",
        "chat-model": "`chat-model` (the embedded model asked; log-odds > 0)",
    }
    first = d["judges"]["arditi"]
    files = list(first["files"])
    header = ["judge"]
    for name in files:
        block = first["files"][name]
        refusals = block["confusion"]["true_refusal"] + block["confusion"]["missed_refusal"]
        header.append(f"{name} ({refusals} refusals / {block['n']})")
    header.append("pooled (rows)")
    rows = []
    for judge, block in d["judges"].items():
        if judge == "log_odds" or not isinstance(block, dict) or "files" not in block:
            continue
        label = descriptions.get(judge, f"`{judge}`")
        if "fitted_on" in block and judge.startswith("probe"):
            request = block.get("request")
            reads = "each reply after its own request" if request is None else f"each reply after {request!r}"
            label = f"`probe` (embedded model reads {reads}; layer {block['layer']}), fitted on {block['fitted_on']}"
            shipped = json.loads((ROOT / "mechref" / "data" / "judges" / "probe_en.json").read_text())
            if f", {block['fitted_on']} " in shipped["fitted_on"]["data"] and shipped.get("request") == request:
                label += " (**shipped**: `--judge probe`)"
            fitted_here = f"(fitted here: layer {block['layer']}, C {block['C']:g}, cross-validated κ {block['cv_kappa']:.2f})"
        elif "fitted_on" in block:
            label = f"{judge.split(', fitted')[0]} > {block['threshold']:+g}, fitted on {block['fitted_on']}"
            fitted_here = f"(fitted here: threshold {block['threshold']:+g})"
        cells = [_agreement(block["files"][f]) if f in block["files"] else fitted_here for f in files]
        rows.append([label, *cells, f"{_agreement(block['pooled'])} ({block['pooled']['n']:,})"])
    return _table(header, rows)


def selection() -> str:
    d = _json("selection.json")
    fast, full = d["fast"], d["exhaustive"]

    def row(label: str, b: dict) -> list[object]:
        return [
            label,
            f"{b['n_prompt_passes']:,}",
            f"{b['n_forward_passes']:,}",
            b["n_scored"],
            f"{b['seconds']:,.0f} s",
            f"layer {b['layer']}, pos {b['position']}",
            f"{b['bypass']:.3f}",
        ]

    same = "same" if d["same_choice"] else "different"
    return _table(
        ["mode", "prompt forward passes", "batched forward passes", "candidates fully scored", "time", "chosen", "bypass"],
        [
            row("exhaustive", full),
            row("fast (default)", fast),
            [
                "ratio",
                f"**{d['pass_ratio']:.1f}x fewer**",
                f"{full['n_forward_passes'] / fast['n_forward_passes']:.1f}x fewer",
                "",
                f"**{d['speedup']:.1f}x faster**",
                same,
                same,
            ],
        ],
    )


FOUNDATION_ROWS = {
    "hf_forward_all_hidden_states": "HF forward, all hidden states",
    "mechref_capture_all_layers_5_positions": (
        "mechref `capture_residual`, all 28 layers, 5 post-instruction positions (logits skipped)"
    ),
    "mechref_capture_middle_layer_last_position": "mechref `capture_residual`, layer 14 only, last token (stops after layer 14)",
    "mechref_last_token_logits_no_prefix_reuse": "mechref last-token logits, no prefix reuse",
    "mechref_last_token_logits_prefix_reuse": "mechref last-token logits, shared-prefix reuse (the refusal score's pass)",
}


def foundation_throughput() -> str:
    d = _json("foundation.json")
    reference = d["float32/hf_forward_all_hidden_states"]["tokens_per_s"]
    rows = []
    for key, label in FOUNDATION_ROWS.items():
        f32, bf16 = d[f"float32/{key}"]["tokens_per_s"], d[f"bfloat16/{key}"]["tokens_per_s"]
        rows.append([label, f"{f32:.1f}", f"{f32 / reference:.2f}x", f"{bf16:.1f}", f"{bf16 / reference:.1f}x"])
    return _table(["", "float32 tokens/s", "vs HF fp32", "bfloat16 tokens/s", "vs HF fp32"], rows)


def foundation_load() -> str:
    before = _json("foundation.json")
    after = _json("first_load.json")
    rows = [
        [
            "before: `transformers` loads the whole GGUF, then the cache is written (float32)",
            f"{before['first_load']['seconds']:.1f} s",
            f"{before['first_load']['peak_rss_gib']:.2f} GiB",
        ]
    ]
    for dtype, suffix in (("float32", ""), ("bfloat16", "_bfloat16")):
        first, cached = after[f"first_load{suffix}"], after[f"cached_load{suffix}"]
        rows.append(
            [
                f"first load, {dtype}: assemble 22 parts, sha256, dequantize tensor by tensor into {dtype} shards",
                f"{first['seconds']:.1f} s",
                f"**{first['peak_rss_gib']:.2f} GiB**",
            ]
        )
        rows.append(
            [f"cached load, {dtype} (memory-mapped shards)", f"{cached['seconds']:.1f} s", f"{cached['peak_rss_gib']:.2f} GiB"]
        )
    return _table(["load", "wall time", "peak resident memory"], rows)


def polyrefuse() -> str:
    d = _json("multilingual_polyrefuse.json")
    languages = d["languages"]
    generation = d["transfer"]["generation"]
    layer = d["cosine"]["layer"]
    english = d["cosine"]["languages"].index("en")
    n = d["data"]["n_test_per_class"]
    rows = [
        ["harmful refused, k/n [95% interval]"] + [_rate_of(d["baseline_refusal"][lang]["harmful"], n) for lang in languages],
        [f"harmful refused, {LANGUAGE_NAMES.get(generation['source'], generation['source'])} vector ablated"]
        + [_rate_of(generation["ablated_refusal_rate"][lang], n) for lang in languages],
        [f"cosine with English (layer {layer})"]
        + [_cosine(d["cosine"]["matrix"][d["cosine"]["languages"].index(lang)][english]) for lang in languages],
        [f"silhouette (layer {layer})"] + [f"{d['silhouette']['at_direction_layer'][lang]:.2f}" for lang in languages],
    ]
    return _table(["", *languages], rows)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):.0f} s"


def paper_settings() -> str:
    d = _json("refusal_direction_paper.json")
    rates, scores = d["refusal_rate_counts"], d["mean_refusal_score"]
    data = d["data"]
    categories = d.get("reply_categories", {})
    degenerate = sum(c.get("degenerate", 0) for c in categories.values())
    timings = d["timings_s"]
    tests = {(t["before"], t["after"]): t for t in d["paired_tests"]}
    ablation = tests[("harmful_baseline", "harmful_ablation")]
    addition = tests[("harmless_baseline", "harmless_actadd")]
    rows = [
        ["judge", d["settings"]["judge"]],
        ["chosen candidate", f"layer {d['layer']}, position {d['position']} ({d['position_token']!r})"],
        ["bypass score / induce score / KL", f"{d['bypass_score']:.2f} / {d['induce_score']:+.2f} / {d['kl']:.3f}"],
        ["prompts kept by the filter (harmful train, harmful val)", f"{data['harmful_train']['n']}, {data['harmful_val']['n']}"],
        [f"harmful refusal rate ({data['harmful_test']['n']} test prompts): baseline", _rate(rates["harmful_baseline"])],
        ["harmful refusal rate: directional ablation", _rate(rates["harmful_ablation"], bold=True)],
        ["harmful refusal rate: activation addition -1", _rate(rates["harmful_actadd"], bold=True)],
        [f"harmless refusal rate ({data['harmless_test']['n']} test prompts): baseline", _rate(rates["harmless_baseline"])],
        ["harmless refusal rate: activation addition +1", _rate(rates["harmless_actadd"], bold=True)],
        [
            "exact McNemar, baseline -> ablation (harmful)",
            f"{ablation['changed_to_false']} stop refusing, {ablation['changed_to_true']} start; p = {ablation['p_value']:.3g}",
        ],
        [
            "exact McNemar, baseline -> addition (harmless)",
            f"{addition['changed_to_true']} start refusing, {addition['changed_to_false']} stop; p = {addition['p_value']:.3g}",
        ],
        [
            "mean refusal score: harmful baseline, ablation, actadd -1",
            f"{scores['harmful_baseline']:+.2f}, {scores['harmful_ablation']:+.2f}, {scores['harmful_actadd']:+.2f}",
        ],
        ["degenerate replies (repetition loops), all conditions", f"{degenerate} of {sum(r['n'] for r in rates.values())}"],
        [
            f"whole run ({d['settings']['max_new_tokens']} new tokens, 5 x {data['harmful_test']['n']} generations, export)",
            f"**{_minutes(d['wall_s_measured_by_time'])}** wall (/usr/bin/time; {d['machine_note']}), "
            f"{d['peak_rss_gib_measured_by_time']:.1f} GiB peak",
        ],
        ["stage times", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())],
    ]
    return _table(["", "value"], rows)


DAMAGE_MEASURES = (("over_refusal", "over-refusal, XSTest safe prompts"), ("gsm8k", "GSM8K exact match"))


def damage() -> str:
    d = _json("damage_paper.json")
    names = d["conditions"]
    rows = []
    for measure, label in DAMAGE_MEASURES:
        if not isinstance(d[measure], dict):
            continue
        blocks = d[measure]["by_condition"]
        cells = []
        for name in names:
            if name not in blocks:
                cells.append("not measured (`--gsm8k-conditions`)")
                continue
            cell = _rate(blocks[name])
            test = blocks[name].get("paired_vs_original")
            if test:
                cell += f"; McNemar p = {test['p_value']:.3g}"
            degenerate = blocks[name].get("categories", {}).get("degenerate", 0)
            if degenerate:
                cell += f"; {degenerate} degenerate"
            cells.append(cell)
        rows.append([label, *cells])
    kl = d["kl_ce"]["by_condition"]

    def mean(block: dict, digits: int) -> str:
        if block["ci95"] is None:
            return f"{block['mean']:.{digits}f}"
        return f"{block['mean']:.{digits}f} [{block['ci95'][0]:.{digits}f}, {block['ci95'][1]:.{digits}f}]"

    n = d["kl_ce"]["n_prompts"]
    rows.append([f"KL at the first reply token ({n} harmless prompts)", *(mean(kl[c]["kl_first_token"], 3) for c in names)])
    rows.append(
        [f"KL over the first {d['kl_ce']['kl_tokens']} reply tokens", *(mean(kl[c]["kl_first_tokens"], 3) for c in names)]
    )
    rows.append(["cross-entropy of the unedited replies (nats/token)", *(mean(kl[c]["cross_entropy"], 3) for c in names)])
    rows.append(["increase over the unedited model", *(mean(kl[c]["cross_entropy_increase"], 3) for c in names)])
    return _table(["measure", *names], rows)


def _mean(block: dict, digits: int) -> str:
    if block.get("ci95") is None:
        return f"{block['mean']:.{digits}f}"
    return f"{block['mean']:.{digits}f} [{block['ci95'][0]:.{digits}f}, {block['ci95'][1]:.{digits}f}]"


def _categories_rows(d: dict) -> list[list[object]]:
    share = d["logit_transfer"]["refusing_share"]
    replies = d["generation"]["refusal_rate"]
    subspace = next(c for c in d["generation"]["conditions"] if c.startswith("subspace_"))
    rows = []
    for name in d["logit_transfer"]["targets"]:
        c = d["data"]["categories"][name]
        rows.append(
            [
                name + (f" ({len(c['members'])} merged)" if c["members"] else ""),
                f"{c['fit']}/{c['eval']}",
                f"{d['cosine']['with_global'][name]:.2f}",
                _short_rate(share["baseline"][name]),
                _short_rate(share["global"][name]),
                _short_rate(share[name][name]),
                _short_rate(replies["baseline"][name]),
                _short_rate(replies["global"][name]),
                _short_rate(replies[subspace][name]),
            ]
        )
    return rows


def _categories_table(name: str) -> str:
    d = _json(name)
    subspace = next(c for c in d["generation"]["conditions"] if c.startswith("subspace_"))
    header = [
        "category",
        "fit/eval",
        "cos with global",
        "logit: baseline",
        "logit: global ablated",
        "logit: own ablated",
        "replies: baseline",
        "replies: global ablated",
        f"replies: {subspace.replace('_', ' ')} ablated",
    ]
    rows = _categories_rows(d)
    share, replies = d["logit_transfer"]["refusing_share"], d["generation"]["refusal_rate"]
    rows.append(
        [
            "**all**",
            "",
            "",
            _short_rate(share["baseline"]["all"]),
            _short_rate(share["global"]["all"]),
            "",
            _short_rate(replies["baseline"]["all"]),
            _short_rate(replies["global"]["all"]),
            _short_rate(replies[subspace]["all"]),
        ]
    )
    return _table(header, rows)


def categories() -> str:
    return _categories_table("categories.json")


def categories_subspace() -> str:
    rows = []
    for label, name in (("bundled", "categories.json"), ("refusal_direction splits", "categories_rd.json")):
        if not (RESULTS / name).is_file():
            continue
        s = _json(name)["subspace"]
        single = s["global_ablation"]
        base = _json(name)["logit_transfer"]["mean_refusal_score"]["baseline"]["all"]
        rows.append([label, "nothing (baseline)", "", "", _mean(base, 2), "", ""])
        rows.append(
            [
                label,
                "global direction",
                "",
                _short_rate(single["refusing"]),
                _mean(single["mean_refusal_score"], 2),
                _mean(single["kl"], 4),
                "0",
            ]
        )
        for row in s["k_ablation"]:
            rows.append(
                [
                    label,
                    f"top-{row['k']} subspace",
                    f"{sum(s['explained_variance_ratio'][: row['k']]):.2f}",
                    _short_rate(row["refusing"]),
                    _mean(row["mean_refusal_score"], 2),
                    _mean(row["kl"], 4),
                    f"{row['angle_to_global_deg']:.1f}",
                ]
            )
    header = [
        "data",
        "ablated",
        "explained variance",
        "still refusing (logit > 0)",
        "mean refusal score, held-out harmful",
        "KL, held-out harmless",
        "angle to global (deg)",
    ]
    return _table(header, rows)


def selection_cosmic() -> str:
    d = _json("selection_cosmic.json")
    timing = d.get("selection_in_one_process", {})
    rows = []
    for mode in ("fast", "cosmic"):
        m = d[mode]
        r = m["refusal_rate_counts"]
        timed = timing.get(mode, {})
        rows.append(
            [
                "paper (fast)" if mode == "fast" else "COSMIC-style",
                f"layer {m['layer']}, pos {m['position']}",
                f"{m['bypass_score']:.2f} / {m['induce_score']:.2f} / {m['kl']:.3f}",
                *(
                    [_rate(r[c]) for c in ("harmful_baseline", "harmful_ablation", "harmless_actadd")]
                    if r
                    else ["not measured"] * 3
                ),
                f"{m['n_prompt_passes_selection']:,}",
                f"{m['selection_seconds']:.0f} s" if m["selection_seconds"] else m.get("selection_seconds_note", ""),
                *([f"{timed['seconds']:.0f} s"] if timing else []),
            ]
        )
    header = [
        "selection",
        "chosen",
        "bypass / induce / KL",
        "harmful refused, baseline",
        "harmful refused, ablated",
        "harmless refused, added",
        "prompt passes",
        "selection time (in its run)",
        *(["selection time (both in one process)"] if timing else []),
    ]
    return _table(header, rows)


def generation() -> str:
    d = _json("generation.json")
    rows = []
    for name, w in d["workloads"].items():
        rows.append(
            [
                name,
                w["n_prompts"],
                w["mean_reply_tokens"],
                f"{w['seconds']['transformers_generate']:.1f} s",
                f"{w['seconds']['mechref_compacting']:.1f} s",
                f"**{w['speedup']:.2f}x**",
                "yes" if w["identical_tokens"] else f"no ({w['replies_differing']} replies differ)",
            ]
        )
    header = ["workload", "prompts", "mean reply tokens", "transformers generate", "mechref", "speedup", "same tokens"]
    return _table(header, rows)


def attention() -> str:
    d = _json("attention.json")
    rows = []
    for context, r in d["decode_step_seconds_by_cached_positions"].items():
        rows.append(
            [
                f"one decoding step, {d['rows']} rows, {context} cached positions",
                f"{r['mechref_grouped']:.3f} s",
                f"{r['mechref_bridge_attention']:.3f} s",
                f"{r['hf_sdpa']:.3f} s",
                f"{r['hf_eager']:.3f} s",
                f"**{r['grouped_vs_hf_sdpa_speed']:.2f}x**",
            ]
        )
    g = d["generation"]
    rows.append(
        [
            f"greedy generation, {g['n_prompts']} prompts in one batch, {g['max_new_tokens']} new tokens "
            f"({g['replies_differing']} of {g['n_prompts']} replies differ)",
            f"{g['tokens_per_second']['mechref']:.1f} tokens/s",
            "",
            f"{g['tokens_per_second']['hf_sdpa_generate']:.1f} tokens/s (`generate`)",
            "",
            f"**{g['mechref_vs_hf_speed']:.2f}x**",
        ]
    )
    c = d["capture"]
    rows.append(
        [
            f"residual capture, every layer, last position ({c['prompt_tokens']} prompt tokens)",
            f"{c['seconds']['mechref_capture_residual']:.2f} s",
            "",
            f"{c['seconds']['hf_sdpa_hidden_states']:.2f} s (`output_hidden_states`)",
            "",
            f"**{c['mechref_vs_hf_speed']:.2f}x**",
        ]
    )
    header = ["workload", "mechref", "mechref, bridge attention", "plain HF, sdpa", "plain HF, eager", "mechref vs HF sdpa"]
    return _table(header, rows)


def _device_rows(d: dict) -> list[list[object]]:
    """One device's rows of the devices table, from a ``devices_*.json`` of bench_devices.py."""
    where = f"{d['device_name']}, {d['dtype']}"
    rows: list[list[object]] = []
    ratio = lambda value: f"**{value:.2f}x**"
    for batch, g in d.get("generation", {}).get("by_batch", {}).items():
        rows.append(
            [
                where,
                f"greedy generation, {d['generation']['n_prompts']} prompts x {d['generation']['new_tokens']} new tokens, "
                f"batch {batch} ({g['replies_differing']} replies differ)",
                f"{g['tokens_per_second']['mechref']:.1f} tokens/s",
                f"{g['tokens_per_second']['hf_sdpa_generate']:.1f} tokens/s (`generate`)",
                ratio(g["mechref_vs_hf_speed"]),
            ]
        )
    if "capture" in d:
        c = d["capture"]
        rows.append(
            [
                where,
                f"residual capture, every layer, last position, {c['prompt_tokens']} prompt tokens, batch {c['batch_size']}",
                f"{c['seconds']['mechref_capture_residual']:.2f} s",
                f"{c['seconds']['hf_sdpa_hidden_states']:.2f} s (`output_hidden_states`)",
                ratio(c["mechref_vs_hf_speed"]),
            ]
        )
    if "dfa" in d:
        a = d["dfa"]
        rows.append(
            [
                where,
                f"DFA at layer {a['layer']}, same prompts (completeness error {a['max_completeness_error']:.2g}, "
                f"{a['max_error_over_allowance']:.2f} of its allowance)",
                f"{a['seconds']['mechref_dfa']:.2f} s",
                f"{a['seconds']['hf_sdpa_forward_all_layers']:.2f} s (one forward, every layer)",
                ratio(1 / a["dfa_cost_in_hf_forwards"]),
            ]
        )
    step = d.get("decode_step", {})
    for context, r in step.items():
        if isinstance(r, dict):
            rows.append(
                [
                    where,
                    f"one decoding step, {step['rows']} rows, {context} cached positions",
                    f"{r['mechref']:.3f} s",
                    f"{r['hf_sdpa']:.3f} s",
                    ratio(r["mechref_vs_hf_speed"]),
                ]
            )
    if "overhead" in d:
        o = d["overhead"]["ms_per_step"]
        rows.append(
            [
                where,
                "per-call overhead: one decoding step of a 28-layer model of width 64, one row, float32 "
                f"(with the bridge's own norms {o['mechref_bridge_norms']:.1f} ms, and its attention too "
                f"{o['mechref_bridge_norms_and_attention']:.1f} ms)",
                f"{o['mechref']:.1f} ms",
                f"{o['hf_sdpa']:.1f} ms",
                ratio(d["overhead"]["mechref_vs_hf_speed"]),
            ]
        )
    if "gcg" in d:
        g = d["gcg"]
        rows.append(
            [
                where,
                f"GCG step, {g['prompts']} prompts, {g['n_candidates']} candidates in batches of {g['batch_size']}, "
                f"{g['suffix_length']}-token suffix",
                f"{g['seconds_per_step']['mechref_run_gcg']:.2f} s",
                f"{g['seconds_per_step']['plain_hf']:.2f} s (no cached prefix)",
                ratio(g["mechref_vs_hf_speed"]),
            ]
        )
    if "seconds" in d.get("refusal_direction_cli", {}):
        rows.append([where, "refusal_direction CLI, end to end", f"{d['refusal_direction_cli']['seconds']:.0f} s", "", ""])
    return rows


def overhead() -> str:
    """mechref against plain Hugging Face where per-call cost dominates (benchmarks/bench_overhead.py)."""
    d = _json("overhead.json")
    rows = []
    for name, row in d["rows"].items():
        unit = "ms" if "ms" in row else "s"
        times = row[unit]
        same = row.get("replies_identical") or ("yes" if row.get("identical_outputs") else "no")
        if "max_abs_difference" in row:
            same += f" (max difference {row['max_abs_difference']:.1e} of {row.get('scale', 0):.0f})"
        if name == "hook_cost":
            added = row["ms_added_by_the_hook"]
            what = f"{row['what']}; added by the hook: mechref {added['mechref']:.2f} ms, plain {added['hf']:.2f} ms"
            rows.append([what, f"{times['mechref']:.2f} ms", f"{times['hf']:.2f} ms", f"{row['mechref_vs_hf']:.2f}x", ""])
            continue
        rows.append(
            [row["what"], f"{times['mechref']:.2f} {unit}", f"{times['hf']:.2f} {unit}", f"{row['mechref_vs_hf']:.2f}x", same]
        )
    m = d["machine"]
    note = (
        f"{m['processor']}, {m['cpus']} cores, device {d['device']}, torch threads {d['torch_threads']}, best of "
        f"{d['rounds']} alternating rounds, at `{d['commit']}` (`{d['command']}`)."
    )
    return _table(["work", "mechref", "plain Hugging Face", "mechref vs plain", "same output"], rows) + "\n\n" + note


def devices() -> str:
    rows = [row for path in sorted(RESULTS.glob("devices_*.json")) for row in _device_rows(_json(path.name))]
    return _table(["device", "workload", "mechref", "plain HF (same batch)", "mechref vs HF"], rows)


def exports() -> str:
    d = _json("export.json")
    rows = []
    for name, block in d["conditions"].items():
        kl = block["kl_first_token"]
        reproduces = block.get("reproduces_reference")
        rows.append(
            [
                name,
                block["loaded_by"],
                _rate(block["refusal"]),
                f"{kl['mean']:.4f} [{kl['ci95'][0]:.4f}, {kl['ci95'][1]:.4f}]" if kl else "not measured",
                "" if reproduces is None else (f"yes ({block['reference']})" if reproduces else f"**no** ({block['reference']})"),
                ""
                if reproduces is None
                else f"{block['same_verdicts']}/{block['refusal']['n']}, p = {block['paired_vs_reference']['p_value']:.3g}",
                "" if reproduces is None else f"{block['identical_replies']}/{block['refusal']['n']}",
            ]
        )
    header = [
        "model",
        "loaded by",
        "harmful refused",
        "first-token KL",
        "reproduces",
        "same verdict as reference, McNemar",
        "identical replies",
    ]
    return _table(header, rows)


def optimize_edit() -> str:
    d = _json("optimize_edit.json")
    rows = []
    for label, block in d["confirmed"].items():
        kl = block["kl_first_token"]
        point = block["point"]
        where = (
            ""
            if point is None
            else f"layer {point['direction_layer']:.2f}; attn peak {point['attention']['peak']:.1f} "
            f"[{point['attention']['min_weight']:.2f}-{point['attention']['max_weight']:.2f}], mlp peak "
            f"{point['mlp']['peak']:.1f} [{point['mlp']['min_weight']:.2f}-{point['mlp']['max_weight']:.2f}]"
        )
        verdict = ""
        if "dominates_reference" in block:
            verdict = "dominates" if block["dominates_reference"] else "matches" if block["matches_reference"] else "neither"
            diff = block["kl_difference_vs_reference"]
            verdict += (
                f" (refusal: McNemar p = {block['paired_vs_reference']['p_value']:.3g}; KL paired difference "
                f"{diff['mean']:+.4f} [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}])"
            )
        interval = f" [{kl['ci95'][0]:.4f}, {kl['ci95'][1]:.4f}]" if kl["ci95"] else ""
        rows.append(
            [
                label,
                "" if block["trial"] is None else block["trial"],
                where,
                _rate(block["refusal"]),
                f"{kl['mean']:.4f}{interval}",
                verdict,
            ]
        )
    header = ["point", "trial", "edit", "harmful refused (held-out)", "first-token KL (held-out)", "vs reference"]
    return _table(header, rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "suffix_hijack": suffix_hijack,
    "multilingual": multilingual,
    "judges": judges,
    "xstest_judges": xstest_judges,
    "selection": selection,
    "foundation_throughput": foundation_throughput,
    "foundation_load": foundation_load,
    "polyrefuse": polyrefuse,
    "paper_settings": paper_settings,
    "damage": damage,
    "generation": generation,
    "categories": categories,
    "categories_subspace": categories_subspace,
    "selection_cosmic": selection_cosmic,
}
# Registered once their JSON is committed (see the results pages that place them).
if (RESULTS / "export.json").is_file():
    RENDERERS["exports"] = exports
if (RESULTS / "attention.json").is_file():
    RENDERERS["attention"] = attention
if any(RESULTS.glob("devices_*.json")):
    RENDERERS["devices"] = devices
if (RESULTS / "optimize_edit.json").is_file():
    RENDERERS["optimize_edit"] = optimize_edit


def planted_bugs() -> str:
    """Each planted bug, the file it was planted in and the first test that failed."""
    d = _json("reliability/planted_bugs.json")
    rows = []
    for plant in d["plants"]:
        failure = (plant["first_failure"] or "").removeprefix("FAILED ")
        test = failure.split("::", 1)[1].split(" ")[0] if "::" in failure else failure
        rows.append([plant["bug"], f"`{plant['file']}`", f"`{test}`" if plant["caught"] else "**missed**"])
    rows.append([f"**{d['caught']}/{d['planted']} caught**", "", ""])
    return _table(["planted bug", "planted in", "first test that failed"], rows)


def mutation() -> str:
    """Mutation score per core module: killed / (checked - set aside), with the raw score beside it."""
    d = _json("reliability/mutation_scores.json")
    aside_kinds = ("display", "wording", "equivalent", "device", "import-time")
    rows = []
    for module, m in d["modules"].items():
        aside = " / ".join(str(m["set_aside"].get(k, 0)) for k in aside_kinds)
        score = f"**{m['score']:.1%}**" if m["score"] is not None else "n/a"
        raw = f"{m['raw']:.1%}" if m["raw"] is not None else "n/a"
        rows.append(
            [f"`{module}`", m["checked"], m["killed"], aside, m["survived"] + m["no_tests"], m["not_checked"], raw, score]
        )
    t = d["total"]
    set_aside = t["checked"] - t["killed"] - t["survived"] - t["no_tests"]
    rows.append(
        [
            "all",
            t["checked"],
            t["killed"],
            set_aside,
            t["survived"] + t["no_tests"],
            t["not_checked"],
            f"{t['raw']:.1%}",
            f"**{t['score']:.1%}**",
        ]
    )
    header = [
        "module",
        "mutants checked",
        "killed",
        "set aside: " + " / ".join(aside_kinds),
        "survived",
        "not checked",
        "raw",
        "score",
    ]
    return _table(header, rows)


def tiers() -> str:
    """Wall time of each tier of the test suite and of the documentation build, on one machine."""
    d = _json("reliability/tiers.json")
    m = d["machine"]
    bf16 = ", ".join(m["bfloat16_in_hardware"]) or "none (emulated)"
    rows = [
        [
            f"`{name}`",
            step["what"],
            _minutes(step["seconds"]),
            step["summary"] or "",
            "ok" if step["returncode"] == 0 else "**failed**",
        ]
        for name, step in d["steps"].items()
    ]
    ci = [name for name in ("lint", "ci-unit", "integration", "docs") if name in d["steps"]]
    if len(ci) == 4:
        rows.append(
            [
                "**CI**",
                "the four steps of `.ci/run` after installing",
                _minutes(sum(d["steps"][n]["seconds"] for n in ci)),
                "",
                "",
            ]
        )
    header = ["step", "what", "wall time", "pytest / site check", "result"]
    machine = (
        f"{m['processor']}, {m['cpus']} cores, {m['memory_gib']} GiB; bfloat16 in hardware: {bf16}; measured {d['measured']}"
    )
    return _table(header, rows) + "\n\n" + machine


RENDERERS["planted_bugs"] = planted_bugs
RENDERERS["mutation"] = mutation
RENDERERS["tiers"] = tiers

# 6 GB (decimal, as a laptop's memory is sold) in GiB: the budget every command is measured against.
SIX_GB_GIB = 6e9 / 2**30


def memory() -> str:
    """Peak resident memory of every command on the embedded model, before and after the one-copy work."""
    d = _json("memory.json")
    before, after = d.get("before", {}), d.get("after", {})
    rows = []
    names = [*before.get("commands", {}), *(n for n in after.get("commands", {}) if n not in before.get("commands", {}))]
    for name in names:
        b = before.get("commands", {}).get(name, {})
        a = after.get("commands", {}).get(name)
        latest = a or b
        stage = max(latest["stages_gib"], key=latest["stages_gib"].get) if latest["stages_gib"] else ""
        peak = latest["peak_gib"]
        fits = "yes" if peak is not None and peak <= SIX_GB_GIB else "**no**"
        same = (a or {}).get("same_summary") or {}
        # A command whose stages are put together from two measurements is marked: see the note.
        label = f"`{name}`" + ("<sup>1</sup>" if a and a.get("composite") else "")
        if a is None:
            compared = "not re-run"
        elif not b:
            compared = "no earlier run"
        else:
            compared = same.get("short") or {True: "same", False: "**differs**"}.get(same.get("same"), "–")
        rows.append(
            [
                label,
                (f"{b['peak_gib']:.2f}" + (" (float32)" if "float32" in b.get("note", "") else ""))
                if b.get("peak_gib") is not None
                else "–",
                f"{peak:.2f}" if peak is not None else "–",
                f"`{stage}`",
                fits,
                compared,
                f"`{(a.get('commit') or 'see note') if a else before.get('commit', '?')}`",
            ]
        )
    header = [
        "command",
        f"before ({before.get('commit', '?')}), GiB",
        "now, GiB",
        "stage at the peak",
        "≤ 6 GB",
        "summary.json",
        "measured at",
    ]
    m = (after or before)["machine"]
    note = f"{m['processor']}, {m['cpus']} cores, {m['memory_gib']} GiB; bfloat16; 6 GB = {SIX_GB_GIB:.2f} GiB"
    composite = [f"<sup>1</sup> {c['composite']}" for c in after.get("commands", {}).values() if c.get("composite")]
    return _table(header, rows) + "\n\n" + note + "".join(f"\n\n{line}" for line in composite)


RENDERERS["memory"] = memory


def model_matrix() -> str:
    """Every analysis on each real model from PyPI: finished (time, key result) or stopped (its message)."""
    d = _json("model_matrix.json")
    models = [m for m in ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m") if m in d["models"]]
    names = list(dict.fromkeys(name for m in models for name in d["models"][m]))
    rows = []
    for name in names:
        cells: list[object] = [f"`{name}`"]
        for model in models:
            entry = d["models"][model].get(name)
            if entry is None:
                cells.append("not run")
            elif entry["exit"] == 0:
                key = "; ".join(
                    k if v is True else f"{k} {v}" for k, v in (entry.get("key") or {}).items() if v not in (None, False)
                )
                cells.append(f"ran, {entry['wall_s']:.0f} s" + (f": {key}" if key else ""))
            else:
                message = (entry.get("error") or "").removeprefix("mechref: error: ").split(". ")[0].split(":")[0].split(";")[0]
                message = message.split(" at /")[0]  # a run folder's path says nothing here
                cells.append(f"**stopped** (exit {entry['exit']}, {entry['wall_s']:.0f} s): {message}")
        rows.append(cells)
    m = d["machine"]
    commits = sorted({e.get("commit") for model in models[1:] for e in d["models"][model].values() if e.get("commit")})
    note = (
        f"{m['processor']}, {m['cpus']} cores; commands' defaults (bfloat16); the PyPI models' runs at "
        f"{', '.join(f'`{c}`' for c in commits)}. The embedded model's column: the same commands with the arguments of "
        "`benchmarks/memory.py`, as it measured them (`benchmarks/results/memory.json`, each at its own commit)."
    )
    return _table(["command", *(f"`{m}`" for m in models)], rows) + "\n\n" + note


RENDERERS["model_matrix"] = model_matrix


def post_norm_edit() -> str:
    """The weight edit against the hooks it stands for, per model and share of the direction removed."""
    d = _json("post_norm_edit.json")
    rows = []
    for row in d["rows"]:
        spread = row.get("post_norm_gains")
        gains = f"{spread['gain_min']:g} to {spread['gain_max']:g}; rho up to {spread['rho_max']:g}" if spread else "none"
        for block in row["by_share"]:
            ablation, deviation = block["kl_unedited_to_hooks"], block["kl_hooks_to_edit"]
            first, replies = block["same_first_token"], block["identical_replies"]
            rows.append(
                [
                    f"`{row['model']}`",
                    gains if block is row["by_share"][0] else "",
                    f"{block['share']:g}",
                    f"{ablation['mean']:.4f}",
                    f"**{deviation['mean']:.4f}**" if row["through_post_norms"] else f"{deviation['mean']:.1e}",
                    f"{first['k']}/{first['n']}",
                    f"{replies['k']}/{replies['n']}",
                    f"{block['weighted_hooks_max_logit_gap']:.0e}",
                ]
            )
    m = d["machine"]
    note = (
        f"{m['processor']}, {m['cpus']} cores, float32, at `{d['commit']}` (`{d['command']}`). KL: first-token, mean over "
        f"the held-out prompts; hooks: the share removed from every write where the stream gets it; edit = weighted hooks: "
        "the largest logit gap between the edit and the hooks at the norms' inputs that stand for it exactly."
    )
    header = ["model", "post-norm gains", "share", "KL(unedited ‖ hooks)", "KL(hooks ‖ edit)", "same first token",
              "same greedy reply", "edit = weighted hooks"]  # fmt: skip
    return _table(header, rows) + "\n\n" + note


RENDERERS["post_norm_edit"] = post_norm_edit


def multilingual_repair(name: str = "multilingual_repair.json") -> str:
    """The audit's weakest languages, and the English refusal vector added there at each coefficient."""
    d = _json(name)
    repair, baseline = d["repair"], d["baseline_refusal"]
    order = sorted(baseline, key=lambda lang: (baseline[lang]["harmful"], lang))
    audit_rows = [
        [
            LANGUAGE_NAMES.get(lang, lang),
            _rate(baseline[lang]["harmful_counts"]),
            _rate(baseline[lang]["harmless_counts"]),
            "judge not validated" if lang in d["judge_not_validated"] else baseline[lang]["status"],
        ]
        for lang in order
    ]
    rows = []
    for lang, entry in repair["languages"].items():
        rows.append([LANGUAGE_NAMES.get(lang, lang), "none (the audit)", _rate(entry["baseline"]["harmful"]),
                     _rate(entry["baseline"]["harmless"]), ""])  # fmt: skip
        for coefficient, block in entry["by_coefficient"].items():
            h, s_ = block["harmful"], block["harmless"]
            rows.append(
                [
                    "",
                    f"{repair['source']} vector x{coefficient}",
                    f"{_rate(h)} (p {h['paired_vs_audit']['p_value']})",
                    f"{_rate(s_)} (p {s_['paired_vs_audit']['p_value']})",
                    block["verdict"],
                ]
            )
    m = d["machine"]
    note = (
        f"{m['processor']}, {m['cpus']} cores; {d['model']} in {d['dtype']}, `{d['judge']}` judge, at `{d['commit']}` "
        f"(`{d['command']}`). p: exact McNemar, each prompt paired with its audit reply."
    )
    return (
        _table(["language", "harmful refused", "harmless refused", "status"], audit_rows)
        + "\n\n"
        + _table(["language", "added at layer " + str(repair["layer"]), "harmful refused", "harmless refused", "verdict"], rows)
        + "\n\n"
        + note
    )


RENDERERS["multilingual_repair"] = multilingual_repair
RENDERERS["overhead"] = overhead
RENDERERS["multilingual_repair_polyrefuse"] = lambda: multilingual_repair("multilingual_repair_polyrefuse.json")


def probe_languages() -> str:
    """The probe judge on each labelled language: the shipped (English) probe as it is, one fitted
    with that language left out, and the best other judge on the same labels."""
    d = _json("judges_probe_languages.json")
    rows = []
    for lang, block in d["languages"].items():
        others = block["other judges"]
        best = max(others.items(), key=lambda item: item[1]["kappa"], default=None)
        rows.append(
            [
                f"{LANGUAGE_NAMES.get(lang, lang)} ({block['refusals']} / {block['n']})",
                _agreement(block["shipped probe"]),
                _agreement(block["probe, this language left out"]),
                f"{best[0]}: {best[1]['accuracy']:.2f}, κ {best[1]['kappa']:.2f}" if best else "none measured",
            ]
        )
    en = d["en"]
    rows.append(
        [
            f"English, XSTest ({en['refusals']} / {en['n']})",
            _agreement(en["shipped probe (files it was not fitted on)"]) + " (the two files it was not fitted on)",
            _agreement(en["probe, English left out"]) + " (fitted on the other languages alone)",
            "phrase list: see the XSTest table",
        ]
    )
    return _table(
        [
            "labelled language (refusals / replies)",
            "shipped probe (fitted on English only)",
            "probe with this language left out",
            "best other judge on these labels",
        ],
        rows,
    )


RENDERERS["probe_languages"] = probe_languages


def mined_contrast() -> str:
    """The mined judge mined against replies to harmless prompts, and against the same harmful prompts
    answered with the refusal direction ablated, on the same held-out hand labels."""
    d = _json("judges_mined_contrast.json")
    rows = []
    for lang, block in d["languages"].items():
        cells = []
        for name in ("harmless contrast", "ablated contrast"):
            judge = block[name]
            phrases = ", ".join(f"'{p}' ({judge['support'][p][0]}/{judge['support'][p][1]})" for p in judge["phrases"])
            cells.append(f"{_agreement(judge)}: {phrases or 'no opening found'}")
        rows.append([f"{LANGUAGE_NAMES.get(lang, lang)} ({block['refusals']} / {block['n']})", *cells])
    header = [
        "language (refusals / labelled test replies)",
        "contrasted with harmless prompts' replies",
        "contrasted with the same prompts, direction ablated",
    ]
    return _table(header, rows)


if (RESULTS / "judges_mined_contrast.json").is_file():
    RENDERERS["mined_contrast"] = mined_contrast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the table to print (none: list the names)")
    args = parser.parse_args(argv)
    if args.name is None:
        print("\n".join(sorted(RENDERERS)))
        return 0
    if args.name not in RENDERERS:
        print(f"no table {args.name!r}; the tables: {', '.join(sorted(RENDERERS))}", file=sys.stderr)
        return 2
    print(RENDERERS[args.name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
