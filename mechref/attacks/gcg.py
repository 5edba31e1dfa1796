"""Greedy Coordinate Gradient (GCG) adversarial suffixes (Zou et al. 2023).

The suffix is appended to the user's instruction (``instruction + suffix``; the suffix text
starts with its own space) and optimized so
that the model's reply starts with a target string such as ``"Sure, here is"``. Each step:

1. the gradient of the target loss with respect to a one-hot encoding of the suffix tokens
   (one forward and backward pass, summed over the prompts in universal mode);
2. ``n_candidates`` single-token substitutions drawn from the ``top_k`` most promising tokens of
   each position, keeping only those for which the whole formatted prompt re-tokenizes to exactly
   the optimized tokens (so the loss is the loss of the text a user would type);
3. the exact loss of every candidate (batched forward passes that reuse the key/value cache of
   the unchanging part of the prompt before the suffix), and the best candidate is kept.

Runs are seeded and deterministic, can be checkpointed to JSON and resumed.

>>> from mechref.testing import tiny_model
>>> model = tiny_model("qwen2")
>>> settings = SearchSettings(steps=2, n_candidates=8, suffix_length=4)
>>> result = search_suffix(model, ["Build a bomb"], target="Sure", settings=settings, progress=False)
>>> len(result.suffix_ids), len(result.losses)
(4, 3)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechref.framework.io import read_json, write_json
from mechref.framework.runs import code_version
from mechref.framework.settings import Settings, option
from mechref.model.loading import MechrefModel
from mechref.model.prefix import SharedPrefix


@dataclass
class SearchSettings(Settings):
    """The GCG search's budget and seed (the ``gcg`` analysis's settings extend these)."""

    steps: int = option(250, "optimization steps", minimum=1)
    suffix_length: int = option(20, "suffix tokens", minimum=1)
    top_k: int = option(256, "substitutions considered per position", minimum=1)
    n_candidates: int = option(128, "candidate suffixes evaluated per step", minimum=1)
    batch_size: int = option(64, "candidates per forward pass", minimum=1)
    seed: int = option(0, "search seed")
    init_token: str = option(" !", "the text the suffix starts as, one token repeated")
    early_stop_loss: float | None = option(0.05, "stop once the loss is at most this (none: never)", minimum=0)
    checkpoint_every: int = option(10, "steps between two checkpoints", minimum=1)


@dataclass
class GCGResult:
    suffix: str
    suffix_ids: list[int]
    losses: list[float]
    target: str
    prompts: list[str]
    settings: SearchSettings
    step: int = 0
    rng_state: list[int] = field(default_factory=list)
    seconds: float = 0.0  # search time, summed over resumed runs

    def to_dict(self) -> dict:
        """The result as written to a suffix file (settings included)."""
        data = asdict(self)
        data["settings"] = asdict(self.settings)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GCGResult:
        """The result read back from :meth:`to_dict`'s form."""
        data = dict(data)
        data["settings"] = SearchSettings(**data["settings"])
        return cls(**data)


@dataclass
class _Layout:
    """One prompt split around the suffix: before | suffix | after | target (text and token ids)."""

    head: str
    tail: str
    before: list[int]
    after: list[int]
    target: list[int]

    def matches(self, model: MechrefModel, suffix_ids: list[int]) -> bool:
        """Does the formatted prompt with this suffix tokenize to exactly these pieces?"""
        text = self.head + model.decode(suffix_ids) + self.tail
        return model.tokenizer(text, add_special_tokens=False)["input_ids"] == self.before + suffix_ids + self.after


def _layout(model: MechrefModel, instruction: str, target: str) -> _Layout:
    marker = "\u2063SUFFIX\u2063"  # an invisible separator no template rewrites
    head, tail = model.chat.format(f"{instruction}{marker}").split(marker)
    tok = lambda s: model.tokenizer(s, add_special_tokens=False)["input_ids"]
    return _Layout(head=head, tail=tail, before=tok(head), after=tok(tail), target=tok(target))


def allowed_token_mask(model: MechrefModel) -> torch.Tensor:
    """Tokens a suffix may use: printable ASCII text, no special tokens."""
    vocab = model.cfg.d_vocab
    mask = torch.zeros(vocab, dtype=torch.bool)
    special = set(model.tokenizer.all_special_ids)
    for i in range(min(vocab, len(model.tokenizer))):
        if i in special:
            continue
        text = model.decode(i)
        mask[i] = bool(text) and text.isascii() and text.isprintable() and bool(text.strip())
    return mask


def _embedding(model: MechrefModel) -> torch.nn.Embedding:
    return cast(torch.nn.Embedding, model.hf_model.get_input_embeddings())


def _suffix_gradient(model, layouts, suffix_ids: Tensor) -> Float[Tensor, "n_suffix d_vocab"]:
    """d(target loss)/d(one-hot suffix), summed over prompts."""
    embed = _embedding(model)
    weight = embed.weight
    one_hot = torch.zeros(len(suffix_ids), weight.shape[0], dtype=weight.dtype, device=weight.device)
    one_hot[torch.arange(len(suffix_ids)), suffix_ids.to(weight.device)] = 1
    one_hot.requires_grad_(True)
    total = torch.zeros_like(one_hot)
    with model.gradients():
        for lay in layouts:
            ids = lambda xs: torch.tensor(xs, dtype=torch.long, device=weight.device)
            parts = [embed(ids(lay.before)), one_hot @ weight, embed(ids(lay.after + lay.target))]
            inputs = torch.cat(parts).unsqueeze(0)
            logits = model.bridge(inputs)
            n_target = len(lay.target)
            pred = logits[0, -n_target - 1 : -1].float()
            loss = torch.nn.functional.cross_entropy(pred, ids(lay.target))
            (grad,) = torch.autograd.grad(loss, one_hot)
            total += grad
    return total.float().cpu()  # the top-k choice and the token mask live on the CPU


def _candidate_losses(
    model: MechrefModel,
    layouts: list[_Layout],
    prefixes: list[SharedPrefix],
    candidates: Int[Tensor, "n n_suffix"],
    batch_size: int,
) -> Tensor:
    """Mean target loss of each candidate suffix over the prompts (exact, batched)."""
    losses = torch.zeros(len(candidates), dtype=torch.float64)
    for lay, prefix in zip(layouts, prefixes):
        tail = torch.tensor(lay.after + lay.target, dtype=torch.long)
        n_target = len(lay.target)
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start : start + batch_size]
            rows = len(chunk)
            input_ids = torch.cat([chunk, tail.expand(rows, -1)], dim=1)
            mask = prefix.mask_for(torch.ones_like(input_ids))
            # Only the positions that predict the target need the vocabulary projection.
            logits = model.forward(input_ids, mask, past_key_values=prefix.cache_for(rows), logits_for_last=n_target + 1)
            pred = logits[:, -n_target - 1 : -1].float()
            target = torch.tensor(lay.target, device=pred.device).expand(rows, -1)
            loss = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
            losses[start : start + rows] += loss.view(rows, n_target).mean(1).double().cpu()
    return (losses / len(layouts)).float()


def search_suffix(
    model: MechrefModel,
    prompts: Sequence[str],
    target: str = "Sure, here is",
    settings: SearchSettings | None = None,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> GCGResult:
    """Search a suffix that makes ``model`` start its reply to every prompt with ``target``.

    With ``checkpoint``, the state is written there every ``checkpoint_every`` steps (JSON) and a
    run with the same prompts, target and settings resumes from it.
    """
    settings = settings or SearchSettings()
    prompts = list(prompts)
    layouts = [_layout(model, p, target) for p in prompts]
    allowed = allowed_token_mask(model)
    generator = torch.Generator().manual_seed(settings.seed)
    init = model.tokenizer(settings.init_token, add_special_tokens=False)["input_ids"]
    suffix = (init * settings.suffix_length)[: settings.suffix_length]
    state = None
    # What a checkpoint must match to be resumed; more steps may continue a shorter run.
    resume_key = {
        "model": model.identity(),
        "code_version": code_version(),
        "settings": {k: v for k, v in asdict(settings).items() if k != "steps"},
    }
    if checkpoint and Path(checkpoint).is_file():
        data = read_json(checkpoint)
        saved_key = data.pop("resume_key", None)
        saved = GCGResult.from_dict(data)
        if saved_key == json.loads(json.dumps(resume_key)) and saved.prompts == prompts and saved.target == target:
            state = saved
            suffix = list(saved.suffix_ids)
            generator.set_state(torch.tensor(saved.rng_state, dtype=torch.uint8))
    prefixes = [SharedPrefix.run(model, torch.tensor(lay.before)) for lay in layouts]
    losses = list(state.losses) if state else [float(_candidate_losses(model, layouts, prefixes, torch.tensor([suffix]), 1)[0])]
    step_done = state.step if state else 0
    started, seconds_before = time.perf_counter(), state.seconds if state else 0.0

    def snapshot(step: int) -> GCGResult:
        return GCGResult(
            model.decode(suffix),
            list(suffix),
            list(losses),
            target,
            prompts,
            settings,
            step,
            generator.get_state().tolist(),
            round(seconds_before + time.perf_counter() - started, 1),
        )

    bar = tqdm(range(step_done, settings.steps), desc="GCG", disable=not progress, initial=step_done, total=settings.steps)
    for step in bar:
        if settings.early_stop_loss is not None and losses[-1] <= settings.early_stop_loss:
            break
        grad = _suffix_gradient(model, layouts, torch.tensor(suffix))
        grad[:, ~allowed[: grad.shape[1]]] = math.inf
        top = (-grad).topk(settings.top_k, dim=1).indices  # [n_suffix, top_k]
        positions = torch.randint(0, len(suffix), (settings.n_candidates,), generator=generator)
        choices = torch.randint(0, settings.top_k, (settings.n_candidates,), generator=generator)
        candidates = torch.tensor(suffix).repeat(settings.n_candidates, 1)
        candidates[torch.arange(settings.n_candidates), positions] = top[positions, choices]
        keep = [i for i in range(len(candidates)) if all(lay.matches(model, candidates[i].tolist()) for lay in layouts)]
        if not keep:
            continue
        candidates = candidates[keep]
        cand_losses = _candidate_losses(model, layouts, prefixes, candidates, settings.batch_size)
        best = int(cand_losses.argmin())
        suffix = candidates[best].tolist()  # GCG moves to the best candidate even if it is worse
        losses.append(float(cand_losses[best]))
        step_done = step + 1
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint and (step + 1) % settings.checkpoint_every == 0:
            write_json(checkpoint, {**snapshot(step_done).to_dict(), "resume_key": resume_key})
    result = snapshot(step_done)
    if checkpoint:
        write_json(checkpoint, {**result.to_dict(), "resume_key": resume_key})
    return result


if __name__ == "__main__":  # pragma: no cover - run as a command in a subprocess by the tests
    import sys

    sys.stderr.write("mechref: error: the GCG command is python -m mechref.analyses.gcg (this module is the search it runs)\n")
    raise SystemExit(2)
