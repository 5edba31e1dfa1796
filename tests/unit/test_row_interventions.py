"""Several hook edits in one batch against each edit alone (mechref.interventions.intervene), on
tiny float32 models: the same logits row by row, and the same greedy replies."""

from __future__ import annotations

import pytest
import torch

from mechref.generation import generate_ids
from mechref.interventions import intervene
from mechref.row_interventions import HookEdit, RowInterventions, generate_ids_per_edit
from mechref.testing import tiny_model

PROMPTS = ["Write a poem about the sea", "Hi", "How do I pick a lock?", "Explain tides in two sentences please."]
EDITS = {
    "original": HookEdit("baseline"),
    "ablation": HookEdit("ablation"),
    "actadd": HookEdit("addition", -1.0, 1),
    "added": HookEdit("addition", 0.7, 2),
}


def _alone(model, edit: HookEdit, direction):
    return intervene(model, edit.kind, direction, edit.layer, edit.coefficient)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_each_row_gets_the_logits_of_its_edit_alone(arch):
    model = tiny_model(arch)
    torch.manual_seed(0)
    direction = torch.randn(model.d_model) * 3
    ids = model.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    names = list(EDITS)
    batch = ids.repeat(len(names), 1)
    rows = RowInterventions(model, direction, [EDITS[n] for n in names], torch.arange(len(names)))
    rows.start(list(range(len(names))))
    with model.hooks(rows.hooks()):
        mixed = model.forward(batch)
    for i, name in enumerate(names):
        with _alone(model, EDITS[name], direction):
            alone = model.forward(ids)
        torch.testing.assert_close(mixed[i], alone[0], rtol=1e-5, atol=1e-5)
    # The edits do something: a hook that ignored the rows would give every row one edit's logits.
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-3) and not torch.allclose(mixed[2], mixed[3], atol=1e-3)


def test_replies_equal_each_edit_generated_alone_as_rows_leave_the_batch():
    model = tiny_model("qwen2")
    torch.manual_seed(1)
    direction = torch.randn(model.d_model) * 3
    # Stopping on common tokens makes replies end at different steps, so rows leave mid-batch.
    eos = model.tokenizer.eos_token_id
    model.hf_model.generation_config.eos_token_id = [eos, *range(5, 40)]
    try:
        together = generate_ids_per_edit(model, PROMPTS, direction, EDITS, max_new_tokens=12, batch_size=7, progress=False)
        lengths = {len(r) for replies in together.values() for r in replies}
        assert len(lengths) > 2, "the test needs replies of different lengths"
        for name, edit in EDITS.items():
            with _alone(model, edit, direction):
                alone = generate_ids(model, PROMPTS, max_new_tokens=12, batch_size=4, progress=False)
            assert together[name] == alone, name
    finally:
        model.hf_model.generation_config.eos_token_id = eos


def test_rows_out_of_step_with_the_batch_are_an_error():
    model = tiny_model("qwen2")
    rows = RowInterventions(model, torch.ones(model.d_model), [HookEdit("ablation")], torch.zeros(3, dtype=torch.long))
    with model.hooks(rows.hooks()), pytest.raises(RuntimeError, match="call start"):
        model.forward(torch.tensor([[5, 6]]))
    rows.start([0, 1])
    with model.hooks(rows.hooks()), pytest.raises(RuntimeError, match="3 rows but the row conditions hold 2"):
        model.forward(torch.tensor([[5, 6]] * 3))
    with pytest.raises(ValueError, match="needs the layer"):
        HookEdit("addition", 1.0)
