import torch

from mechref.generation import generate_ids
from mechref.judges import SubstringJudge
from mechref.logits import last_token_logits
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
        tiny_qwen, prompts, judge=everything, max_new_tokens=2, min_share=0.0, max_tokens=10, progress=False
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
