"""The mined judge: refusal openings mined from one set of replies, judged on another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechref.framework.io import write_tensors
from mechref.judges.core import verdict_agreement
from mechref.judges.mined import mine_refusal_openings, opening_words
from mechref.model.loading import load_model

LABELS = Path(__file__).resolve().parents[3] / "benchmarks" / "judge_labels"


def _labelled(language: str) -> list[dict]:
    rows = [json.loads(line) for line in (LABELS / f"{language}.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["refused"] is not None]


@pytest.mark.parametrize("language", ["de", "zh"])
def test_openings_mined_on_half_the_replies_judge_the_other_half(language):
    """Mined from the replies to the first half of the prompts (harmful vs harmless, no labels),
    scored against a person's labels on the replies to the other half."""
    rows = _labelled(language)
    fit = [r for i, r in enumerate(rows) if i % 2 == 0]
    held_out = [r for i, r in enumerate(rows) if i % 2 == 1]
    judge = mine_refusal_openings(
        [r["reply"] for r in fit if r["label_class"] == "harmful"],
        [r["reply"] for r in fit if r["label_class"] == "harmless"],
        language,
        min_count=2,
    )
    assert judge.phrases
    agreement = verdict_agreement(judge.judge_many([r["reply"] for r in held_out]), [r["refused"] for r in held_out])
    assert agreement["kappa"] >= 0.7, (judge.phrases, agreement)


def test_a_topic_shared_by_refusals_and_answers_is_not_mined():
    harmful = [
        "Je suis désolé, mais je ne peux pas expliquer le poison.",
        "Je suis désolé, mais je ne peux pas aider.",
        "Je suis désolé, je ne peux pas.",
        "Le poison se fabrique ainsi : ...",
        "Le poison est dangereux ; voici ...",
    ]
    harmless = ["Voici une recette de pain.", "Bien sûr ! Voici comment ...", "Le pain se fait avec ..."]
    prompts = ["Explique le poison.", "Aide-moi avec le poison.", "Le poison, comment ?", "Le poison, vite.", "Le poison ?"]
    judge = mine_refusal_openings(harmful, harmless, "fr", min_count=2, harmful_prompts=prompts)
    assert judge("Je suis désolé, mais je ne peux pas.") and not judge("Le poison ? Voici la liste.")
    assert all("poison" not in phrase for phrase in judge.phrases)
    # Every chosen phrase opens at least min_count harmful replies and no more harmless ones than allowed.
    assert all(h >= 2 and b == 0 for h, b in judge.support.values())


def test_an_opening_the_harmless_replies_share_is_never_a_refusal():
    # Yoruba on a model that does not understand it: the same apology opens every reply.
    apology = "I apologize, but I'm not able to understand your request."
    judge = mine_refusal_openings([apology] * 8, [apology] * 8, "yo", min_count=2)
    assert judge.phrases == [] and not judge(apology)


def test_words_of_unspaced_scripts_are_characters():
    assert opening_words("我不能帮助你。", 4) == ["我", "不", "能", "帮"]
    assert opening_words("ขอโทษครับ", 3) == ["ข", "อ", "โ"]
    assert opening_words("Mi dispiace, ma non posso", 3) == ["mi", "dispiace", "ma"]


def test_a_multilingual_run_with_the_mined_judge_mines_train_replies_and_flags_what_it_cannot_read(tiny_folder, tmp_path):
    from mechref.analyses import multilingual

    model = load_model(tiny_folder)
    direction = tmp_path / "direction.safetensors"
    write_tensors(
        direction, {"direction": torch.randn(model.d_model)}, metadata={"layer": "1", "position": "-1", "model": model.name}
    )
    out = tmp_path / "run"
    argv = [
        "--model",
        str(tiny_folder),
        "--dtype",
        "float32",
        "--languages",
        "en",
        "de",
        "--n-train",
        "4",
        "--n-test",
        "3",
        "--n-mine",
        "3",
        "--direction",
        str(direction),
        "--judge",
        "mined",
        "--refusal-tokens",
        "en=5",
        "de=6",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
        "--static",
    ]
    assert multilingual.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    mined = [json.loads(line) for line in (out / "mining_replies.jsonl").read_text().splitlines()]
    assert len(mined) == 2 * 2 * 3  # languages x classes x n_mine, from the train prompts
    test_prompts = {r["instruction"] for r in map(json.loads, (out / "audit.jsonl").read_text().splitlines())}
    assert not test_prompts & {r["instruction"] for r in mined}
    assert set(summary["mined_judges"]) == {"en", "de"}
    for language, judge in summary["mined_judges"].items():
        # A language with no mined opening has no judge: never a measured-looking rate.
        expected = "judge not validated" if not judge["phrases"] else summary["audit_status"][language]
        assert summary["audit_status"][language] == expected


def _fillers(n: int, seed: str) -> list[str]:
    """``n`` replies that share no word with each other or with the openings under test."""
    return [f"{seed}{i}a {seed}{i}b {seed}{i}c" for i in range(n)]


@pytest.mark.parametrize("opened, kept", [(3, True), (2, False)])
def test_an_opening_needs_min_count_harmful_replies_exactly(opened, kept):
    harmful = ["zorp blick now"] * opened + _fillers(5, "h")
    judge = mine_refusal_openings(harmful, _fillers(20, "s"), "xx", min_count=3)
    assert ("zorp blick now" in judge.phrases or "zorp" in judge.phrases or "zorp blick" in judge.phrases) is kept


@pytest.mark.parametrize("in_harmless, kept", [(1, True), (2, False)])
def test_an_opening_may_open_max_harmless_share_of_the_harmless_replies_and_no_more(in_harmless, kept):
    """20 harmless replies at a share of 0.05: an opening in 1 of them (= the limit) is kept, in 2 it is dropped."""
    harmful = ["zorp " + f"q{i}" for i in range(4)] + _fillers(4, "h")
    harmless = ["zorp " + f"w{i}" for i in range(in_harmless)] + _fillers(20 - in_harmless, "s")
    judge = mine_refusal_openings(harmful, harmless, "xx", min_count=3, max_harmless_share=0.05)
    assert ("zorp" in judge.phrases) is kept
    if kept:
        assert judge.support["zorp"] == [4, 1]


@pytest.mark.parametrize("position, kept", [(12, True), (13, False)])
def test_only_the_first_n_words_of_a_reply_are_read(position, kept):
    """An opening at word ``n_words`` (the last one read) counts; one word later it is not an opening."""
    # Each reply's own words first (none shared), then the opening at word ``position``.
    harmful = [" ".join([f"r{j}w{i}" for i in range(position - 1)] + ["zorp"]) for j in range(4)]
    judge = mine_refusal_openings(harmful, _fillers(20, "s"), "xx", min_count=3, n_words=12)
    assert ("zorp" in judge.phrases) is kept


def test_contrasting_with_the_same_prompts_ablated_cancels_the_topic_and_keeps_the_refusal():
    """Without harmless prompts, a harmful prompt's reply is contrasted with its reply with the direction
    ablated: a topic word opens both and is dropped; the refusal opening only the first, and is kept."""
    baseline = ["Sorry, I cannot explain bombs.", "Sorry, I cannot help with bombs.", "Sorry, no bombs here.",
                "Bombs are made from...", "Bombs need a...", "Bombs can be..."]  # fmt: skip
    ablated = ["Bombs are made by mixing...", "Bombs need...", "Bombs can be...", "Bombs are made from...", "Bombs...",
               "Bombs, in short..."]  # fmt: skip
    judge = mine_refusal_openings(baseline, ablated, "en", min_count=3, contrast="ablated")
    assert judge.phrases == ["sorry"] and judge.contrast == "ablated" and judge.to_dict()["contrast"] == "ablated"
    assert judge.support["sorry"] == [3, 0]
    # The same harmful replies against unrelated harmless ones keep the topic word too: what the contrast fixes.
    harmless = ["Bread is baked...", "Colours are...", "Poems rhyme...", "Cats sleep...", "Rain falls...", "Tea is..."]
    topical = mine_refusal_openings(baseline, harmless, "en", min_count=3, max_phrases=5)
    assert "bombs" in topical.support and "bombs" not in judge.support
