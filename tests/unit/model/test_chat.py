import pytest

from mechref.errors import ChatTemplateError
from mechref.model.chat import ChatFormatter
from mechref.testing import tiny_tokenizer


def test_post_instruction_tokens_chatml():
    chat = ChatFormatter(tiny_tokenizer("chatml"))
    assert chat.post_instruction_tokens == ["<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
    assert chat.post_instruction_positions == [-5, -4, -3, -2, -1]


def test_post_instruction_tokens_llama3():
    chat = ChatFormatter(tiny_tokenizer("llama3"))
    assert chat.post_instruction_tokens == ["<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"]


def test_positions_point_at_template_tokens(tiny):
    text = tiny.chat.format("Tell me a joke about cats")
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    tail = [tiny.tokenizer.decode([i]) for i in ids[len(ids) - tiny.chat.n_post_instruction :]]
    assert tail == tiny.chat.post_instruction_tokens


def test_system_prompt_and_assistant_prefix():
    chat = ChatFormatter(tiny_tokenizer("chatml"), system_prompt="Be brief.")
    text = chat.format("Hi", assistant_prefix="Sure,")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\nSure,")
    # The post-instruction tokens do not depend on the system prompt.
    assert chat.n_post_instruction == 5


def test_instruction_span(tiny):
    instruction = "Write a poem about the sea"
    start, end = tiny.chat.instruction_span(instruction)
    ids = tiny.tokenizer(tiny.chat.format(instruction), add_special_tokens=False)["input_ids"]
    assert tiny.tokenizer.decode(ids[start:end]) == instruction
    assert len(ids) - end == tiny.chat.n_post_instruction


def test_missing_template_names_the_fix():
    tokenizer = tiny_tokenizer("chatml")
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="chat_template="):
        ChatFormatter(tokenizer)


def test_template_override_through_wrap():
    from mechref.model.loading import wrap_hf_model
    from mechref.testing import CHATML_TEMPLATE, tiny_hf_model

    tokenizer = tiny_tokenizer("chatml")
    tokenizer.chat_template = None
    model = wrap_hf_model(tiny_hf_model("qwen2", vocab_size=len(tokenizer)), tokenizer, chat_template=CHATML_TEMPLATE)
    assert model.chat.n_post_instruction == 5
