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
>>> result = run_gcg(model, ["Build a bomb"], target="Sure", settings=GCGSettings(steps=2, n_candidates=8, suffix_length=4), progress=False)
>>> len(result.suffix_ids), len(result.losses)
(4, 3)
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechref.io import write_json
from mechref.models import MechrefModel


@dataclass
class GCGSettings:
    steps: int = 250
    suffix_length: int = 20
    top_k: int = 256
    n_candidates: int = 128
    batch_size: int = 64
    seed: int = 0
    init_token: str = " !"
    early_stop_loss: float | None = 0.05
    checkpoint_every: int = 10


@dataclass
class GCGResult:
    suffix: str
    suffix_ids: list[int]
    losses: list[float]
    target: str
    prompts: list[str]
    settings: GCGSettings
    step: int = 0
    rng_state: list[int] = field(default_factory=list)
    seconds: float = 0.0  # search time, summed over resumed runs

    def to_dict(self) -> dict:
        data = asdict(self)
        data["settings"] = asdict(self.settings)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "GCGResult":
        data = dict(data)
        data["settings"] = GCGSettings(**data["settings"])
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
        text = self.head + model.tokenizer.decode(suffix_ids) + self.tail
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
        text = model.tokenizer.decode([i])
        mask[i] = bool(text) and text.isascii() and text.isprintable() and bool(text.strip())
    return mask


def _embedding(model: MechrefModel) -> torch.nn.Embedding:
    return model.hf_model.get_input_embeddings()


def _suffix_gradient(model, layouts, suffix_ids: Tensor) -> Float[Tensor, "n_suffix d_vocab"]:
    """d(target loss)/d(one-hot suffix), summed over prompts."""
    embed = _embedding(model)
    weight = embed.weight
    one_hot = torch.zeros(len(suffix_ids), weight.shape[0], dtype=weight.dtype)
    one_hot[torch.arange(len(suffix_ids)), suffix_ids] = 1
    one_hot.requires_grad_(True)
    total = torch.zeros_like(one_hot)
    with model.gradients():
        for lay in layouts:
            ids = lambda xs: torch.tensor(xs, dtype=torch.long)
            parts = [embed(ids(lay.before)), one_hot @ weight, embed(ids(lay.after + lay.target))]
            inputs = torch.cat(parts).unsqueeze(0)
            logits = model.bridge(inputs)
            n_target = len(lay.target)
            pred = logits[0, -n_target - 1 : -1].float()
            loss = torch.nn.functional.cross_entropy(pred, ids(lay.target))
            (grad,) = torch.autograd.grad(loss, one_hot)
            total += grad
    return total.float()


def _candidate_losses(model, layouts, caches, candidates: Int[Tensor, "n n_suffix"], batch_size: int) -> Tensor:
    """Mean target loss of each candidate suffix over the prompts (exact, batched)."""
    losses = torch.zeros(len(candidates), dtype=torch.float64)
    for lay, cache in zip(layouts, caches):
        tail = torch.tensor(lay.after + lay.target, dtype=torch.long)
        n_target = len(lay.target)
        for start in range(0, len(candidates), batch_size):
            chunk = candidates[start : start + batch_size]
            rows = len(chunk)
            input_ids = torch.cat([chunk, tail.expand(rows, -1)], dim=1)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(rows)
            mask = torch.ones(rows, len(lay.before) + input_ids.shape[1], dtype=torch.long)
            # Only the positions that predict the target need the vocabulary projection.
            logits = model.forward(input_ids, mask, past_key_values=batch_cache, logits_for_last=n_target + 1)
            pred = logits[:, -n_target - 1 : -1].float()
            target = torch.tensor(lay.target).expand(rows, -1)
            loss = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
            losses[start : start + rows] += loss.view(rows, n_target).mean(1).double()
    return (losses / len(layouts)).float()


def run_gcg(
    model: MechrefModel,
    prompts: Sequence[str],
    target: str = "Sure, here is",
    settings: GCGSettings | None = None,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> GCGResult:
    """Search a suffix that makes ``model`` start its reply to every prompt with ``target``.

    With ``checkpoint``, the state is written there every ``checkpoint_every`` steps (JSON) and a
    run with the same prompts, target and settings resumes from it.
    """
    settings = settings or GCGSettings()
    prompts = list(prompts)
    layouts = [_layout(model, p, target) for p in prompts]
    allowed = allowed_token_mask(model)
    generator = torch.Generator().manual_seed(settings.seed)
    init = model.tokenizer(settings.init_token, add_special_tokens=False)["input_ids"]
    suffix = (init * settings.suffix_length)[: settings.suffix_length]
    state = None
    if checkpoint and Path(checkpoint).is_file():
        saved = GCGResult.from_dict(json.loads(Path(checkpoint).read_text()))
        same = lambda x: {k: v for k, v in asdict(x).items() if k != "steps"}  # more steps may continue a run
        if saved.prompts == prompts and saved.target == target and same(saved.settings) == same(settings):
            state = saved
            suffix = list(saved.suffix_ids)
            generator.set_state(torch.tensor(saved.rng_state, dtype=torch.uint8))
    caches = [model.prefix_cache(torch.tensor(lay.before)) for lay in layouts]
    losses = list(state.losses) if state else [float(_candidate_losses(model, layouts, caches, torch.tensor([suffix]), 1)[0])]
    step_done = state.step if state else 0
    started, seconds_before = time.perf_counter(), state.seconds if state else 0.0

    def snapshot(step: int) -> GCGResult:
        return GCGResult(model.tokenizer.decode(suffix), list(suffix), list(losses), target, prompts, settings, step,
                         generator.get_state().tolist(), round(seconds_before + time.perf_counter() - started, 1))

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
        cand_losses = _candidate_losses(model, layouts, caches, candidates, settings.batch_size)
        best = int(cand_losses.argmin())
        suffix = candidates[best].tolist()  # GCG moves to the best candidate even if it is worse
        losses.append(float(cand_losses[best]))
        step_done = step + 1
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint and (step + 1) % settings.checkpoint_every == 0:
            write_json(checkpoint, snapshot(step_done).to_dict())
    result = snapshot(step_done)
    if checkpoint:
        write_json(checkpoint, result.to_dict())
    return result


# ----- command line ------------------------------------------------------------------------
_CLI_DOC = """Search an adversarial suffix with GCG and write it, with its provenance, as a suffix file.

    python -m mechref.attacks.gcg                                   # embedded model, 4 bundled prompts
    python -m mechref.attacks.gcg --n 8 --steps 300 --out my_suffix.json
    python -m mechref.analyses.suffix_hijack --suffix-file my_suffix.json

The suffix file records the exact command, seed, settings, loss curve, and the greedy reply the
model gives to every prompt with the suffix (and the refusal judge's verdict), so a result can be
checked and reproduced. The search state is checkpointed next to --out and a rerun resumes it.
"""


def build_parser():
    import argparse

    from mechref.cli import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m mechref.attacks.gcg", description=_CLI_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, default_dtype="bfloat16")
    data = parser.add_argument_group("prompts (default: the first N bundled harmful test prompts)")
    data.add_argument("--harmful", type=Path, default=None, metavar="PATH", help="JSON or text file of harmful instructions")
    data.add_argument("--prompt", action="append", default=None, metavar="TEXT", help="an instruction (repeatable)")
    data.add_argument("--n", type=int, default=4, help="number of prompts optimized jointly (default 4)")
    defaults = GCGSettings()
    gcg = parser.add_argument_group("search")
    gcg.add_argument("--target", default="Sure, here is", help='reply opening to force (default "Sure, here is")')
    gcg.add_argument("--steps", type=int, default=defaults.steps)
    gcg.add_argument("--suffix-length", type=int, default=defaults.suffix_length, help="suffix tokens")
    gcg.add_argument("--top-k", type=int, default=defaults.top_k, help="substitutions considered per position")
    gcg.add_argument("--n-candidates", type=int, default=defaults.n_candidates, help="candidate suffixes evaluated per step")
    gcg.add_argument("--batch-size", type=int, default=defaults.batch_size)
    gcg.add_argument("--seed", type=int, default=defaults.seed)
    gcg.add_argument("--early-stop-loss", type=float, default=defaults.early_stop_loss)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("runs/gcg/suffix.json"), help="suffix file to write")
    out.add_argument("--max-new-tokens", type=int, default=48, help="tokens generated per prompt to check the suffix")
    out.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    return parser


def _prompts_from_args(args) -> list[str]:
    from mechref.data import bundled, load_prompt_file

    if args.prompt:
        return list(args.prompt)
    prompts = load_prompt_file(args.harmful, "harmful", "test") if args.harmful else bundled("harmful", "test")
    return prompts.take(args.n).instructions


def check_suffix(model: MechrefModel, prompts: Sequence[str], suffix: str, *, max_new_tokens: int = 48,
                 progress: bool = False) -> list[dict]:
    """Greedy replies to ``prompt + suffix`` with the substring judge's verdict, one dict per prompt."""
    from mechref.generation import generate
    from mechref.scoring import SubstringJudge

    replies = generate(model, [p + suffix for p in prompts], max_new_tokens=max_new_tokens, progress=progress)
    judge = SubstringJudge()
    refused = judge.judge_many(replies, list(prompts))
    return [{"prompt": p, "reply": r, "refused": bool(v)} for p, r, v in zip(prompts, replies, refused)]


def main(argv: Sequence[str] | None = None) -> int:
    import shlex
    import sys

    from mechref import __version__
    from mechref.cli import load_from_args
    from mechref.errors import MechrefError

    args = build_parser().parse_args(argv)
    try:
        prompts = _prompts_from_args(args)
        model = load_from_args(args)
        settings = GCGSettings(steps=args.steps, suffix_length=args.suffix_length, top_k=args.top_k,
                               n_candidates=args.n_candidates, batch_size=args.batch_size, seed=args.seed,
                               early_stop_loss=args.early_stop_loss)
        checkpoint = args.out.with_name(args.out.stem + ".checkpoint.json")
        if args.no_resume and checkpoint.exists():
            checkpoint.unlink()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = run_gcg(model, prompts, target=args.target, settings=settings, checkpoint=checkpoint)
        checks = check_suffix(model, prompts, result.suffix, max_new_tokens=args.max_new_tokens)
    except MechrefError as error:
        print(f"mechref: error: {error}", file=sys.stderr)
        return 2
    record = {
        "suffix": result.suffix,
        "suffix_ids": result.suffix_ids,
        "model": model.name,
        "dtype": args.dtype,
        "target": result.target,
        "prompts": result.prompts,
        "settings": asdict(result.settings),
        "steps_run": result.step,
        "final_loss": result.losses[-1],
        "losses": result.losses,
        "search_seconds": result.seconds,
        "command": "python -m mechref.attacks.gcg " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
        "mechref_version": __version__,
        "generations": checks,
        "refusal_rate_with_suffix": sum(c["refused"] for c in checks) / len(checks),
    }
    write_json(args.out, record)
    print(f"suffix {result.suffix!r}  loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f} in {result.step} steps "
          f"({result.seconds:.0f} s of search); refused {sum(c['refused'] for c in checks)}/{len(checks)} with the suffix; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
