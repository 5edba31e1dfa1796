"""The compacting greedy decoder against ``transformers``' own greedy ``generate``, token for token,
on every supported family, with replies of different lengths (so rows leave the batch mid-way)."""

from __future__ import annotations

import pytest
import torch

from mechref.generation import generate_ids, greedy_decode, plain_greedy
from mechref.interventions import directional_ablation
from mechref.model.batching import iter_batches
from mechref.testing import FAMILIES, tiny_model
from tests.helpers import hf_greedy

PROMPTS = ["Write a poem", "How do I bake a cake at home today?", "Hi", "Explain how photosynthesis works.", "Go"]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_decode_equals_generate_with_rows_ending_at_different_steps(family):
    model = tiny_model(family)
    (batch,) = iter_batches(model, model.chat.format_many(PROMPTS), batch_size=8, progress=False)
    # Stop tokens chosen from the replies themselves, so that rows end at different steps.
    free = hf_greedy(model, batch, 12, [])

    def lengths(stop: int) -> int:
        return len({next((i + 1 for i, t in enumerate(r) if t == stop), len(r)) for r in free})

    stops = [max({t for r in free for t in r}, key=lengths)]
    expected = hf_greedy(model, batch, 12, stops)
    assert len({len(r) for r in expected}) > 1  # the batch really shrinks mid-way
    assert greedy_decode(model, batch.input_ids, batch.attention_mask, 12, stops) == expected
    if family not in ("qwen2", "gemma3", "gpt2"):
        return  # hooks: one family of each hook layout is enough
    # Under an intervention's hooks too.
    direction = torch.randn(model.d_model)
    with directional_ablation(model, direction):
        expected = hf_greedy(model, batch, 12, stops)
        assert greedy_decode(model, batch.input_ids, batch.attention_mask, 12, stops) == expected


def test_a_generation_config_with_logits_processing_falls_back_to_generate():
    model = tiny_model("qwen2")
    assert plain_greedy(model)
    model.hf_model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model)
        (batch,) = iter_batches(model, model.chat.format_many(PROMPTS[:2]), batch_size=8, progress=False)
        penalised = hf_greedy(model, batch, 10, [])
        ids = generate_ids(model, PROMPTS[:2], max_new_tokens=10, progress=False)
        assert sorted(ids) == sorted(penalised)
    finally:
        model.hf_model.generation_config.repetition_penalty = 1.0


@pytest.mark.parametrize("family", ["qwen2", "llama", "gemma2"])
def test_cached_decoding_equals_recomputing_every_step_without_a_cache(family):
    """Every step's token is the argmax of a full forward pass over the prompt and the tokens so far,
    computed without a key/value cache on a plain copy of the model (no bridge). Fails when the
    cache does not reach the bridge's attention (each step then sees only its own token), as with
    ``transformers`` versions that pass it under a name TransformerLens does not read."""
    import copy

    from mechref.testing import tiny_hf_model

    model = tiny_model(family)
    plain = tiny_hf_model(family, vocab_size=len(model.tokenizer))  # same seed: the same weights, unhooked
    plain = copy.deepcopy(plain).eval()
    (batch,) = iter_batches(model, model.chat.format_many(PROMPTS), batch_size=8, progress=False)
    decoded = greedy_decode(model, batch.input_ids, batch.attention_mask, 8, [])
    for row, reply in enumerate(decoded):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        expected = []
        for _ in range(8):
            with torch.no_grad():
                logits = plain(input_ids=torch.tensor([ids + expected]), use_cache=False).logits
            expected.append(int(logits[0, -1].argmax()))
        assert reply == expected, (row, reply, expected)


def test_each_decoding_step_on_the_cpu_gives_the_caches_freed_memory_back(monkeypatch):
    """glibc keeps the key/value cache's freed tensors (each step's are one position longer): on the
    embedded model with three hook edits that was 1.36 GiB above the model, 0.69 GiB trimmed each step
    (benchmarks/results/memory_decoding.json).
    The trim runs once per step after the prompt's pass, and changes no token."""
    import mechref.generation as generation

    model = tiny_model("qwen2")
    batch = next(iter(iter_batches(model, ["Write a poem", "Hi"], 2, progress=False)))
    expected = greedy_decode(model, batch.input_ids, batch.attention_mask, 6, [-1])
    calls = []
    monkeypatch.setattr(generation, "trim_heap", lambda: calls.append(1) or True)
    assert greedy_decode(model, batch.input_ids, batch.attention_mask, 6, [-1]) == expected
    assert len(calls) == 5  # six tokens: the prompt's pass, then five steps
