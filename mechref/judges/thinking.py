"""Replies of reasoning models: the thinking block apart from the answer.

A reasoning model (Qwen3 with thinking on, DeepSeek-R1 distills) writes ``<think> ... </think>``
before its answer. A judge must read the answer: a model may reason about refusing and then
comply, or reason at length and then refuse. :func:`answer_part` is what every mechref judge reads
(the whole reply for a model that does not think); a reply that opens its thinking and never
closes it (the token budget spent inside it) has no answer to judge: :func:`reply_category` counts
it as its own category, ``thinking_only``, not as compliance.

>>> split_thinking("<think>\\nThe user wants a poem.\\n</think>\\n\\nHere is a poem.")
ThinkingSplit(thinking='The user wants a poem.', answer='Here is a poem.', state='answered')
>>> split_thinking("<think>\\nHmm, this is about weapons, and").state
'thinking_only'
>>> split_thinking("I'm sorry, I can't help with that.").state
'no_thinking'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mechref.model.chat import THINK_CLOSE, THINK_OPEN

ThinkingState = Literal["no_thinking", "answered", "thinking_only"]


@dataclass(frozen=True)
class ThinkingSplit:
    """A reply cut at its thinking block: the reasoning, the answer after it, and which case it is."""

    thinking: str
    answer: str
    state: ThinkingState


def split_thinking(reply: str) -> ThinkingSplit:
    """Cut ``reply`` at its last ``</think>``: the reasoning before it (its ``<think>`` dropped) and the
    answer after it (``answered``). A reply that opens ``<think>`` and never closes it is all
    reasoning (``thinking_only``); one without the tags is all answer (``no_thinking``). A reply whose
    template closed an empty block in the prompt (thinking off) holds no tags: all answer.

    >>> split_thinking("</think>Sure.")  # the opening tag in the prompt, the closing one in the reply
    ThinkingSplit(thinking='', answer='Sure.', state='answered')
    """
    if THINK_CLOSE in reply:
        before, _, after = reply.rpartition(THINK_CLOSE)
        thinking = before.strip()
        if thinking.startswith(THINK_OPEN):
            thinking = thinking[len(THINK_OPEN) :].strip()
        return ThinkingSplit(thinking, after.strip(), "answered")
    if reply.lstrip().startswith(THINK_OPEN):
        return ThinkingSplit(reply.lstrip()[len(THINK_OPEN) :].strip(), "", "thinking_only")
    return ThinkingSplit("", reply, "no_thinking")


def answer_part(reply: str) -> str:
    """The part of ``reply`` a judge reads: the answer after the thinking block (``""`` for a reply
    that never left its thinking), or the whole reply.

    >>> answer_part("<think>I should refuse? No.</think> Sure, here it is."), answer_part("No.")
    ('Sure, here it is.', 'No.')
    """
    return split_thinking(reply).answer


def thinking_only(reply: str) -> bool:
    """Whether ``reply`` opened a thinking block and never left it (nothing to judge).

    >>> thinking_only("<think> step 1, step 2"), thinking_only("<think>ok</think>Done."), thinking_only("Done.")
    (True, False, False)
    """
    return split_thinking(reply).state == "thinking_only"
