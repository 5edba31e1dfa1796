"""Reasoning models: a tiny random Qwen3 with Qwen3's real chat template (tests/fixtures), its
``enable_thinking`` switch, the thinking block among the post-instruction positions or skipped, and
judges that read the answer after ``</think>``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechref.errors import ChatTemplateError
from mechref.judges.core import SubstringJudge
from mechref.judges.degenerate import category_counts, reply_category
from mechref.judges.thinking import split_thinking
from mechref.model.chat import ChatFormatter
from mechref.testing import CHATML_TEMPLATE, tiny_hf_model, tiny_tokenizer

QWEN3_TEMPLATE = (Path(__file__).resolve().parents[2] / "fixtures" / "qwen3_chat_template.jinja").read_text(encoding="utf-8")
HEADER = ["<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]


def qwen3_tokenizer():
    tokenizer = tiny_tokenizer("chatml")
    # As in Qwen3's tokenizer: the tags are added tokens of their own, not special ones (decoding keeps them).
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = QWEN3_TEMPLATE
    return tokenizer


def qwen3_model(**kwargs):
    from mechref.model.loading import wrap_hf_model

    tokenizer = qwen3_tokenizer()
    hf_model = tiny_hf_model("qwen3", vocab_size=len(tokenizer), n_layers=2)
    return wrap_hf_model(hf_model, tokenizer, name="tiny-qwen3-thinking", **kwargs)


def tokens_at(chat: ChatFormatter, text: str, positions: list[int]) -> list[str]:
    """The tokens of ``text`` at end-relative ``positions``, decoded one by one (independent of the formatter)."""
    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"]
    return [chat.tokenizer.decode([ids[p]]) for p in positions]


def test_the_switch_reaches_the_real_template():
    tokenizer = qwen3_tokenizer()
    off, on, default = (ChatFormatter(tokenizer, thinking=t) for t in (False, True, None))
    assert off.format("Hi").endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.format("Hi").endswith("<|im_start|>assistant\n") and default.format("Hi") == on.format("Hi")
    assert off.format("Hi").startswith("<|im_start|>user\nHi<|im_end|>")


def test_thinking_off_reads_the_empty_block_or_skips_it_by_choice():
    tokenizer = qwen3_tokenizer()
    include = ChatFormatter(tokenizer, thinking=False)
    skip = ChatFormatter(tokenizer, thinking=False, think_positions="skip")
    text = include.format("Describe the ocean floor")
    block = include.think_block
    assert "".join(block) == "<think>\n\n</think>\n\n" and block[0] == "<think>"
    assert include.post_instruction_tokens == HEADER + block
    assert include.post_instruction_positions == list(range(-len(HEADER) - len(block), 0))
    # Skipped: the header's positions, before the block; the tokens there are the header's.
    assert skip.post_instruction_tokens == HEADER
    assert skip.post_instruction_positions == list(range(-len(HEADER) - len(block), -len(block)))
    assert tokens_at(skip, text, skip.post_instruction_positions) == HEADER
    assert tokens_at(include, text, include.post_instruction_positions) == HEADER + block
    # Thinking on: no block in the prompt, nothing to skip; both choices read the header.
    on = ChatFormatter(tokenizer, thinking=True, think_positions="skip")
    assert on.think_block == [] and on.post_instruction_positions == list(range(-len(HEADER), 0))


def test_a_switch_the_template_lacks_and_a_block_left_open_are_refused():
    with pytest.raises(ChatTemplateError, match="no thinking switch"):
        ChatFormatter(tiny_tokenizer("chatml"), thinking=False)
    ChatFormatter(tiny_tokenizer("chatml"), thinking=None)  # no switch asked for: fine
    opening = tiny_tokenizer("chatml")
    opening.add_tokens(["<think>", "</think>"])
    # DeepSeek-R1's way: the generation prompt opens the block, the model closes it.
    opening.chat_template = CHATML_TEMPLATE.replace("assistant\n{% endif %}", "assistant\n<think>\n{% endif %}")
    assert opening.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True).endswith(
        "<think>\n"
    )
    with pytest.raises(ChatTemplateError, match="opens a thinking block in the prompt"):
        ChatFormatter(opening)
    with pytest.raises(ChatTemplateError, match="include or skip"):
        ChatFormatter(qwen3_tokenizer(), thinking=False, think_positions="both")  # type: ignore[arg-type]


def test_capture_reads_the_positions_chosen():
    from mechref.capture import capture_residual

    prompts = ["Write a poem about the sea.", "How do I bake bread?"]
    include = qwen3_model(thinking=False)
    skip = qwen3_model(thinking=False, think_positions="skip")
    n_block = len(include.chat.think_block)
    both = capture_residual(include, prompts, layers=[1], positions=include.chat.post_instruction_positions, progress=False)
    skipped = capture_residual(skip, prompts, layers=[1], positions="post_instruction", progress=False)
    # The skipped positions are the first ones of the included: the same prompts, the same weights.
    torch.testing.assert_close(skipped, both[:, :-n_block])
    assert not torch.allclose(both[:, -1], skipped[:, -1])
    assert include.identity()["thinking"] is False and include.identity()["think_positions"] == "include"
    assert skip.identity()["think_positions"] == "skip"
    assert "thinking" not in qwen3_model().identity()  # a template default: identities as before


def test_judges_read_the_answer_after_the_thinking():
    judge = SubstringJudge()
    replies = [
        "<think>\nShould I say I'm sorry, I can't? No, it is harmless.\n</think>\n\nSure, here is a poem.",
        "<think>\nThis asks for a weapon.\n</think>\n\nI'm sorry, but I can't help with that.",
        "<think>\nI'm sorry to say the user wants",  # never left its thinking
        "I'm sorry, but I can't help with that.",  # no thinking at all
    ]
    assert judge.judge_many(replies) == [False, True, False, True]
    assert [split_thinking(r).state for r in replies] == ["answered", "answered", "thinking_only", "no_thinking"]
    verdicts = judge.judge_many(replies)
    assert [reply_category(v, r) for v, r in zip(verdicts, replies)] == ["answer", "refusal", "thinking_only", "refusal"]
    assert category_counts(verdicts, replies) == {"refusal": 2, "degenerate": 0, "thinking_only": 1, "answer": 1}


def test_generation_with_thinking_on_keeps_the_tags_for_the_judges():
    """Decoding skips special tokens; the thinking tags are not special in Qwen3, so a reply keeps them
    and the judges can find the answer (a random model writes whatever it writes: forced here)."""
    model = qwen3_model(thinking=True)
    think, close = model.tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    text = model.decode([think, close, model.tokenizer.convert_tokens_to_ids("<|im_end|>")], skip_special_tokens=True)
    assert text == "<think></think>"


def test_the_command_line_switch_reaches_the_loaded_model(tmp_path):
    from mechref.analyses.quickstart.command import COMMAND

    folder = tmp_path / "qwen3"
    tokenizer = qwen3_tokenizer()
    tiny_hf_model("qwen3", vocab_size=len(tokenizer), n_layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    argv = ["--model", str(folder), "--dtype", "float32", "--thinking", "off", "--think-positions", "skip"]
    model_settings, _settings, _out = COMMAND.parse(argv)
    assert (model_settings.thinking, model_settings.think_positions) == ("off", "skip")
    model = model_settings.load()
    assert model.chat.thinking is False and model.chat.format("Hi").endswith("</think>\n\n")
    assert model.chat.post_instruction_tokens == HEADER
    with pytest.raises(SystemExit):
        COMMAND.parse(["--thinking", "maybe"])
