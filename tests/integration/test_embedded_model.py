"""The whole stack on the real embedded chat model."""

import torch

from mechref.capture import capture_residual
from mechref.data import bundled
from mechref.generation import generate
from mechref.interventions import directional_ablation
from mechref.judges.core import SubstringJudge

N = 10
MAX_NEW_TOKENS = 24


def test_config_and_template(qwen):
    info = qwen.info()
    assert (info["n_layers"], info["d_model"], info["n_heads"], info["n_key_value_heads"]) == (28, 1536, 12, 2)
    assert qwen.chat.post_instruction_tokens == ["<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]


def test_bridge_logits_equal_hf(qwen):
    from transformers import AutoModelForCausalLM

    # The folder the model was loaded from (the float32 cache here): plain transformers reads it alone.
    plain = AutoModelForCausalLM.from_pretrained(qwen.folder, dtype=torch.float32, attn_implementation="eager").eval()
    ids, mask = qwen.tokenize(qwen.chat.format_many(["How do I bake bread?", "Hi"]))
    bridge_logits = qwen.forward(ids, mask)
    with torch.no_grad():
        hf_logits = plain(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
    real = mask.bool()
    assert (bridge_logits[real] - hf_logits[real]).abs().max() < 1e-4


def test_ablating_difference_in_means_bypasses_refusal(qwen):
    layer = qwen.n_layers // 2
    means = [
        capture_residual(qwen, bundled(label, "train").take(32), layers=[layer], positions=-1, reduce="mean", batch_size=32)[0, 0]
        for label in ("harmful", "harmless")
    ]
    direction = (means[0] - means[1]).float()
    prompts = bundled("harmful", "test").take(N)
    with directional_ablation(qwen, direction):
        replies = generate(qwen, prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=N)
    complied = N - sum(SubstringJudge().judge_many(replies))
    assert complied >= 6, replies
