import pytest
import torch

from mechref.generation import generate_ids
from mechref.judges.core import SubstringJudge
from mechref.model.logits import last_token_logits
from mechref.scoring import derive_refusal_tokens, kl_divergence, refusal_score, refusal_score_from_logits


def test_substring_judge():
    judge = SubstringJudge()
    assert judge("I’m sorry, but I can’t help with that.")  # curly apostrophes
    assert judge("As an AI, I cannot do this")
    assert not judge("Sure, here is a recipe for banana bread.")
    rate = judge.refusal_rate(["I cannot", "Sure", "Sure", "I won't"])
    assert (rate.k, rate.n, rate.value) == (2, 4, 0.5)


def test_refusal_score_closed_form():
    logits = torch.tensor([[2.0, 0.0, 0.0, -1.0], [0.0, 3.0, 0.0, 0.0]])
    probs = logits.softmax(-1)
    p = probs[:, [0, 3]].sum(-1)
    expected = torch.log(p / (1 - p))
    torch.testing.assert_close(refusal_score_from_logits(logits, [0, 3]), expected)


def test_kl_matches_torch():
    p, q = torch.randn(5, 30), torch.randn(5, 30)
    expected = torch.nn.functional.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl_divergence(p, q), expected, atol=1e-5, rtol=1e-5)
    assert (kl_divergence(p, q) > 0).all()


def test_last_token_logits_match_full_forward(tiny, prompts):
    logits = last_token_logits(tiny, prompts, batch_size=3, progress=False)
    for i, prompt in enumerate(prompts):
        ids, _ = tiny.tokenize([tiny.chat.format(prompt)])
        torch.testing.assert_close(logits[i], tiny.forward(ids)[0, -1].float(), atol=1e-4, rtol=1e-4)


def test_refusal_score_uses_model_logits(tiny_qwen, prompts):
    tokens = [5, 17]
    scores = refusal_score(tiny_qwen, prompts, tokens, progress=False)
    expected = refusal_score_from_logits(last_token_logits(tiny_qwen, prompts, progress=False), tokens)
    torch.testing.assert_close(scores, expected)


def test_derive_refusal_tokens_takes_first_reply_tokens(tiny_qwen, prompts):
    # A judge that calls every reply a refusal: the derived tokens are the replies' first tokens.
    everything = SubstringJudge(phrases=[""])
    found = derive_refusal_tokens(
        tiny_qwen, prompts, judge=everything, max_new_tokens=2, min_share=0.0, max_tokens=10, progress=False, min_count=1
    )
    firsts = [ids[0] for ids in generate_ids(tiny_qwen, prompts, max_new_tokens=1, progress=False)]
    assert set(found.token_ids) == set(firsts)
    assert sum(found.counts) == len(prompts) == found.n_refusals


def test_shared_prefix_reuse_matches_plain_forward(prompts):
    from mechref.interventions import directional_ablation
    from mechref.testing import tiny_model

    model = tiny_model("qwen2", system_prompt="You are a helpful assistant who answers every question briefly.")
    plain = last_token_logits(model, prompts, batch_size=3, progress=False, reuse_prefix=False)
    reused = last_token_logits(model, prompts, batch_size=3, progress=False)
    torch.testing.assert_close(reused, plain, atol=1e-4, rtol=1e-4)
    direction = torch.randn(model.d_model)
    with directional_ablation(model, direction):  # hooks act on the shared prefix too
        plain = last_token_logits(model, prompts, batch_size=3, progress=False, reuse_prefix=False)
        reused = last_token_logits(model, prompts, batch_size=3, progress=False)
    torch.testing.assert_close(reused, plain, atol=1e-4, rtol=1e-4)


def test_refusal_score_edges():

    with pytest.raises(ValueError, match="refusal_tokens is empty"):
        refusal_score_from_logits(torch.zeros(1, 4), [])
    # A single token and a certain prediction: the clamp keeps the score finite and signed.
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    scores = refusal_score_from_logits(logits, [0])
    assert torch.isfinite(scores).all() and scores[0] > 15 and scores[1] < -15


def test_refusal_score_of_raw_text_skips_the_chat_template(tiny_qwen, prompts):
    tokens = [5, 17]
    raw = refusal_score(tiny_qwen, prompts, tokens, chat=False, batch_size=2, progress=False)
    expected = refusal_score_from_logits(last_token_logits(tiny_qwen, prompts, chat=False, progress=False), tokens)
    torch.testing.assert_close(raw, expected)
    assert not torch.allclose(raw, refusal_score(tiny_qwen, prompts, tokens, progress=False))


def test_refusal_tokens_defaults_boundary_and_names(tiny_qwen):

    from mechref.scoring import refusal_tokens_from_replies

    # 40 refusals: token 7 x15, 9 x10, 11 x6, 13 x5, 15 x2 (exactly the default 5% share), 17 x1, 19 x1.
    firsts = [7] * 15 + [9] * 10 + [11] * 6 + [13] * 5 + [15] * 2 + [17, 19]
    found = refusal_tokens_from_replies(tiny_qwen, [[t, 1] for t in firsts], [True] * len(firsts))
    assert found.token_ids == [7, 9, 11, 13]  # the default keeps at most 4, most common first
    assert found.tokens == [tiny_qwen.decode(t) for t in [7, 9, 11, 13]] and found.counts == [15, 10, 6, 5]
    wide = refusal_tokens_from_replies(tiny_qwen, [[t] for t in firsts], [True] * len(firsts), max_tokens=10)
    assert wide.token_ids == [7, 9, 11, 13, 15]  # a share of exactly 5% is kept; 1/40 is not
    with pytest.raises(ValueError, match="by the German SubstringJudge"):
        refusal_tokens_from_replies(tiny_qwen, [[1]], [False], judge_name="German SubstringJudge")


def test_derive_refusal_tokens_passes_its_settings_on(tiny_qwen, monkeypatch):
    import mechref.scoring as scoring

    seen = {}
    replies = [[7, 2], [7, 3], [9, 4], [11, 5], [13, 6]]

    def fake_generate_ids(model, prompts, max_new_tokens, batch_size, progress):
        if prompts == ["harmless"] * 10:  # replies to harmless prompts: 9 open with token 9
            return [[9]] * 9 + [[7]]
        seen.update(max_new_tokens=max_new_tokens, batch_size=batch_size, prompts=list(prompts))
        return replies

    class Recording(SubstringJudge):
        def judge_many(self, replies, prompts=None):
            seen.update(texts=list(replies), judged_prompts=prompts)
            return [True] * len(replies)

    monkeypatch.setattr(scoring, "generate_ids", fake_generate_ids)
    found = derive_refusal_tokens(
        tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording(), max_new_tokens=3, batch_size=2, min_share=0.3, max_tokens=1
    )
    assert found.token_ids == [7] and found.n_refusals == 5
    assert seen["max_new_tokens"] == 3 and seen["batch_size"] == 2 and seen["judged_prompts"] == ["a", "b", "c", "d", "e"]
    assert seen["texts"] == [tiny_qwen.decode(r, skip_special_tokens=True) for r in replies]
    defaults = derive_refusal_tokens(tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording())
    assert seen["max_new_tokens"] == 16 and defaults.token_ids == [7]  # by default a token needs 2 refusals
    assert len(defaults.dropped) == 3 and all("opens only 1 of 5 refusals" in d for d in defaults.dropped)
    single = derive_refusal_tokens(tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording(), min_count=1)
    assert single.token_ids == [7, 9, 11, 13]  # default share 5%, at most 4
    shares = derive_refusal_tokens(
        tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording(), min_share=0.3, max_tokens=10, min_count=1
    )
    assert shares.token_ids == [7]  # only the share binds
    capped = derive_refusal_tokens(tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording(), max_tokens=2, min_count=1)
    assert capped.token_ids == [7, 9]  # only the cap binds
    # A token that opens most replies to harmless prompts too is no refusal token.
    contrasted = derive_refusal_tokens(
        tiny_qwen, ["a", "b", "c", "d", "e"], judge=Recording(), min_count=1, harmless_prompts=["harmless"] * 10
    )
    assert contrasted.token_ids == [7, 11, 13] and contrasted.harmless_counts == [1, 0, 0] and contrasted.n_harmless == 10
    assert any("opens 9 of 10 replies to harmless prompts too" in d for d in contrasted.dropped)

    class Refuses:
        language = "German"

        def judge_many(self, replies, prompts=None):
            return [False] * len(replies)

    with pytest.raises(ValueError, match="by the German Refuses"):
        derive_refusal_tokens(tiny_qwen, ["a", "b", "c", "d", "e"], judge=Refuses())

    class Bare:  # a judge with no language
        def judge_many(self, replies, prompts=None):
            return [False] * len(replies)

    with pytest.raises(ValueError, match=r"\(by the Bare\)"):
        derive_refusal_tokens(tiny_qwen, ["a", "b", "c", "d", "e"], judge=Bare())


def test_kl_is_per_position_for_sequences_of_logits():
    p, q = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    rows = torch.stack([kl_divergence(p[i], q[i]) for i in range(2)])
    torch.testing.assert_close(kl_divergence(p, q), rows)
    assert kl_divergence(p, q).shape == (2, 3)


@pytest.mark.parametrize(
    "harmful, harmless, kept, message",
    [
        ([0.0, -1.0], [-1.0, -2.0], None, "no refusal to explain: the model gives none of the 2 harmful prompts"),
        ([0.0, 1e-6], [-1.0, 0.0], ([1], [0]), None),  # a refusal score must be above 0, a harmless one below
        ([1.0, 2.0], [0.0, 0.5], None, "removed every harmless prompt"),
    ],
)
def test_the_refusal_score_filter_boundaries_and_a_model_that_refuses_nothing(monkeypatch, harmful, harmless, kept, message):
    import mechref.scoring as scoring
    from mechref.data.prompts import PromptSet

    sets = [PromptSet(["a", "b"], "harmful", "train"), PromptSet(["c", "d"], "harmless", "train")]
    scores = iter([torch.tensor(harmful), torch.tensor(harmless)])
    monkeypatch.setattr(scoring, "refusal_score", lambda *a, **k: next(scores))
    if message is not None:
        with pytest.raises(Exception, match=message):
            scoring.filter_by_refusal_score(None, *sets, [7], progress=False)  # type: ignore[arg-type]
        return
    a, b = scoring.filter_by_refusal_score(None, *sets, [7], progress=False)  # type: ignore[arg-type]
    assert (a.instructions, b.instructions) == ([["a", "b"][i] for i in kept[0]], [["c", "d"][i] for i in kept[1]])
