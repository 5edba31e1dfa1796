import pytest

from mechref.errors import ChatTemplateError
from mechref.model.chat import ChatFormatter, chat_template_text
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
    with pytest.raises(ChatTemplateError, match=r"--chat-template NAME \(mechref's formats: gemma\).*chat_template="):
        ChatFormatter(tokenizer)


def test_a_model_only_described_needs_no_template_and_says_so_when_prompted():
    tokenizer = tiny_tokenizer("chatml")
    tokenizer.chat_template = None
    chat = ChatFormatter(tokenizer, required=False)
    assert chat.post_instruction_tokens == [] and chat.n_post_instruction == 0
    with pytest.raises(ChatTemplateError, match="--chat-template"):
        chat.format("Hi")


def test_the_gemma_format_puts_turns_and_the_system_prompt_where_gemma_reads_them():
    tokenizer = tiny_tokenizer("chatml")
    tokenizer.chat_template = chat_template_text("gemma")
    bos = tokenizer.bos_token or ""
    plain = ChatFormatter(tokenizer).format("Hi")
    assert plain == f"{bos}<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    system = ChatFormatter(tokenizer, system_prompt="Be brief.").format("Hi")
    assert system == f"{bos}<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    two_turns = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        tokenize=False,
    )
    assert two_turns == (
        f"{bos}<start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>user\nc<end_of_turn>\n"
    )


def test_a_chat_template_is_a_shipped_name_a_file_or_a_template(tmp_path):
    file = tmp_path / "t.jinja"
    file.write_text("{{ messages[0]['content'] }}")
    assert chat_template_text(str(file)) == "{{ messages[0]['content'] }}"
    assert chat_template_text("{{ x }}") == "{{ x }}"
    with pytest.raises(ChatTemplateError, match=r"unknown chat template 'gema'.*gemma"):
        chat_template_text("gema")
    with pytest.raises(ChatTemplateError, match="no chat template file"):
        chat_template_text(str(tmp_path / "absent.jinja"))


def test_template_override_through_wrap():
    from mechref.model.loading import wrap_hf_model
    from mechref.testing import CHATML_TEMPLATE, tiny_hf_model

    tokenizer = tiny_tokenizer("chatml")
    tokenizer.chat_template = None
    model = wrap_hf_model(tiny_hf_model("qwen2", vocab_size=len(tokenizer)), tokenizer, chat_template=CHATML_TEMPLATE)
    assert model.chat.n_post_instruction == 5
