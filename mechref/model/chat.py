"""Chat formatting with the tokenizer's own template, and the post-instruction positions.

The *post-instruction* tokens are the template tokens between the end of the user's text and
the start of the model's response (for ChatML: ``<|im_end|>``, ``\\n``, ``<|im_start|>``,
``assistant``, ``\\n``). The refusal direction is read at these positions. They are derived
here from the template itself, for any model, by formatting a probe instruction and finding
which tokens lie after its last character.

>>> from mechref.testing import tiny_tokenizer
>>> chat = ChatFormatter(tiny_tokenizer("chatml"))
>>> chat.format("Hi")
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
>>> chat.post_instruction_tokens
['<|im_end|>', '\\n', '<|im_start|>', 'assistant', '\\n']
>>> chat.post_instruction_positions
[-5, -4, -3, -2, -1]

Reasoning models (Qwen3) write a thinking block before the answer. Their templates take a switch
(``enable_thinking``): ``thinking=False`` makes the template close an empty block after the
generation prompt (``<think>\\n\\n</think>\\n\\n``), whose tokens are then post-instruction tokens
too, read (``think_positions="include"``) or skipped (``"skip"``: the positions before it);
``thinking=True`` lets the model open its own block. The judges read the answer after ``</think>``
(:mod:`mechref.judges.thinking`).
"""

from __future__ import annotations

from typing import Literal, Sequence

from mechref.errors import ChatTemplateError, DataFormatError

ThinkPositions = Literal["include", "skip"]
#: The tags of a thinking block (Qwen3, DeepSeek-R1 and their distills).
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Probe instructions: plain words that no template rewrites and that end on a word boundary.
_PROBES = ("Describe the ocean floor", "List three colors please")

#: Chat formats mechref ships for models whose tokenizer has none (base models), by name
#: (``--chat-template NAME``), written from each model card's description of its turn markers.
CHAT_FORMATS: dict[str, str] = {
    # Gemma: user and model turns, each opened by <start_of_turn> and the role and closed by
    # <end_of_turn>; Gemma has no system role, so a system prompt opens the first user turn.
    "gemma": (
        "{{ bos_token }}{% set pending = namespace(system='') %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set pending.system = message['content'] ~ '\n\n' %}"
        "{% else %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
        "{{ pending.system ~ message['content'] }}<end_of_turn>\n{% set pending.system = '' %}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
}


def chat_template_text(value: str) -> str:
    """The Jinja text of ``--chat-template``: a format mechref ships (``CHAT_FORMATS``, by name), a
    ``.jinja`` file, or the template itself.

    >>> chat_template_text("gemma").startswith("{{ bos_token }}")
    True
    >>> chat_template_text("{{ messages[0]['content'] }}")
    "{{ messages[0]['content'] }}"
    """
    from pathlib import Path

    if value in CHAT_FORMATS:
        return CHAT_FORMATS[value]
    if value.endswith(".jinja"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ChatTemplateError(f"no chat template file at {path}; give a .jinja file, a Jinja string, or one of: "
                                    f"{', '.join(CHAT_FORMATS)}")  # fmt: skip
        return path.read_text(encoding="utf-8")
    if "{" not in value:
        raise ChatTemplateError(
            f"unknown chat template {value!r}: give one of mechref's formats ({', '.join(CHAT_FORMATS)}), a .jinja file, "
            "or a Jinja string"
        )
    return value


def no_template_message(what: str) -> str:
    """The error of a model without a chat template, naming the ways out."""
    return (
        f"{what} has no chat template, so mechref cannot format chats for it (a base model, not trained on chats, "
        f"usually has none). Give one: --chat-template NAME (mechref's formats: {', '.join(CHAT_FORMATS)}), a .jinja "
        "file or a Jinja string; in Python load_model(..., chat_template=...)"
    )


class ChatFormatter:
    """Formats instructions as single-turn chats with the tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face tokenizer with a ``chat_template``.
        system_prompt: optional system message; ``None`` keeps the template's default behaviour.
        required: False for a model only described, never prompted (``mechref model info`` of a base
            model): without a template it then has no post-instruction tokens, and formatting a chat
            raises the error that construction raises otherwise.
        thinking: a reasoning template's switch (``enable_thinking``): True lets the model think
            first, False makes the template close an empty thinking block; None (default) passes
            nothing, the template's own default. Set on a template without the switch, it raises.
        think_positions: with a thinking block in the post-instruction tokens (``thinking=False``),
            ``"include"`` its tokens among the post-instruction positions (default) or ``"skip"`` them
            (the positions are then the template tokens before the block).
    """

    def __init__(
        self,
        tokenizer,
        system_prompt: str | None = None,
        required: bool = True,
        thinking: bool | None = None,
        think_positions: ThinkPositions = "include",
    ):
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.thinking = thinking
        self.think_positions: ThinkPositions = think_positions
        self.missing: str | None = None
        self.think_block: list[str] = []
        self._skipped = 0
        if think_positions not in ("include", "skip"):
            raise ChatTemplateError(f"think_positions must be include or skip, got {think_positions!r}")
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            self.missing = no_template_message(f"the tokenizer {type(tokenizer).__name__}")
            if required:
                raise ChatTemplateError(self.missing)
            self.post_instruction_tokens: list[str] = []
            self._n_post = 0
            return
        if thinking is not None and "enable_thinking" not in str(template):
            raise ChatTemplateError(
                "this chat template has no thinking switch (enable_thinking), so thinking on or off means nothing to it: "
                "leave --thinking out (a model that is not a reasoning model), or give a template that has one (--chat-template)"
            )
        tokens, n_post = self._derive_post_instruction()
        self.think_block = _think_block(tokens)
        if self.think_block and THINK_CLOSE not in "".join(self.think_block):
            raise ChatTemplateError(
                "this chat template opens a thinking block in the prompt (<think> after the generation prompt) and leaves "
                "it open, so every reply starts inside the thinking and mechref's judges could not tell it from the answer: "
                "switch thinking off (--thinking off) where the template has the switch, or give a template that does not "
                "open the block (--chat-template)"
            )
        if think_positions == "skip" and self.think_block:
            self._skipped = len(self.think_block)
            tokens, n_post = tokens[: -self._skipped], n_post - self._skipped
        self.post_instruction_tokens, self._n_post = tokens, n_post

    def messages(self, instruction: str) -> list[dict]:
        """The chat messages of one instruction: the system prompt (when set), then the user turn."""
        messages = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": instruction})
        return messages

    def format(self, instruction: str, assistant_prefix: str | None = None) -> str:
        """The full prompt text for one instruction, ending where the assistant's reply begins.

        ``assistant_prefix`` (e.g. ``"Sure, here is"``) is appended after the generation prompt.
        """
        if self.missing is not None:
            raise ChatTemplateError(self.missing)
        if not isinstance(instruction, str):
            raise DataFormatError(f"an instruction must be a string, got {type(instruction).__name__}")
        switch = {} if self.thinking is None else {"enable_thinking": self.thinking}
        text = self.tokenizer.apply_chat_template(
            self.messages(instruction), tokenize=False, add_generation_prompt=True, **switch
        )
        return text + (assistant_prefix or "")

    def format_many(self, instructions: Sequence[str], assistant_prefix: str | None = None) -> list[str]:
        """:meth:`format` of each instruction."""
        if isinstance(instructions, str):
            instructions = [instructions]
        return [self.format(i, assistant_prefix) for i in instructions]

    @property
    def n_post_instruction(self) -> int:
        """Number of template tokens after the instruction (the post-instruction positions)."""
        return self._n_post

    @property
    def post_instruction_positions(self) -> list[int]:
        """Negative positions (relative to the end of a formatted prompt with no assistant prefix); with
        ``think_positions="skip"``, those before the template's thinking block."""
        return list(range(-self._n_post - self._skipped, -self._skipped if self._skipped else 0))

    def instruction_span(self, instruction: str) -> tuple[int, int]:
        """Token index range ``[start, end)`` of the instruction inside its formatted, unpadded prompt."""
        text = self.format(instruction)
        char_start = text.rindex(instruction)
        char_end = char_start + len(instruction)
        offsets = self._offsets(text)
        start = next(i for i, (s, e) in enumerate(offsets) if e > char_start)
        end = next((i for i, (s, e) in enumerate(offsets) if s >= char_end), len(offsets))
        return start, end

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span ``(start, end)`` of every token of ``text`` (no special tokens added)."""
        return self._offsets(text)

    def describe(self) -> dict:
        """What a result depends on beyond the template text: the thinking switch and the positions
        read, where set (absent for a template without a thinking block, so older manifests match)."""
        described: dict = {}
        if self.thinking is not None:
            described["thinking"] = self.thinking
        if self.think_block:
            described["think_positions"] = self.think_positions
        return described

    # ----- derivation ------------------------------------------------------------------
    def _offsets(self, text: str) -> list[tuple[int, int]]:
        try:
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError) as error:
            raise ChatTemplateError(
                "mechref needs a fast tokenizer (with offset mappings) to locate the instruction inside "
                f"the chat template; load it with use_fast=True ({error})"
            ) from error
        return [tuple(pair) for pair in encoded["offset_mapping"]]

    def _derive_post_instruction(self) -> tuple[list[str], int]:
        found = []
        for probe in _PROBES:
            text = self.format(probe)
            if probe not in text:
                raise ChatTemplateError(
                    f"the chat template drops or rewrites the user's text; cannot locate {probe!r} in {text!r}"
                )
            char_end = text.rindex(probe) + len(probe)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            offsets = self._offsets(text)
            post = [i for i, (start, _end) in enumerate(offsets) if start >= char_end]
            if not post or post != list(range(post[0], len(ids))):
                raise ChatTemplateError(f"could not find the template tokens after the instruction in {text!r}")
            found.append([self.tokenizer.decode([ids[i]]) for i in post])
        if found[0] != found[1]:
            raise ChatTemplateError(
                f"the post-instruction tokens depend on the instruction ({found[0]} vs {found[1]}); "
                "this template merges the user's text with the template tokens"
            )
        return found[0], len(found[0])


def _think_block(tokens: list[str]) -> list[str]:
    """The post-instruction tokens from the one that opens a thinking block to the end (empty when
    none does).

    >>> _think_block(["<|im_start|>", "assistant", "\\n", "<think>", "\\n\\n", "</think>", "\\n\\n"])
    ['<think>', '\\n\\n', '</think>', '\\n\\n']
    >>> _think_block(["<|im_start|>", "assistant", "\\n"])
    []
    """
    for i, token in enumerate(tokens):
        if THINK_OPEN in token:
            return tokens[i:]
    return []
