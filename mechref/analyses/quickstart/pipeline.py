"""The quickstart as one library call: :func:`run_quickstart`.

>>> from mechref.testing import tiny_model
>>> result = run_quickstart(tiny_model("qwen2"), QuickstartSettings(n_train=2, n_eval=1, max_new_tokens=2), echo=False)
>>> result.layer, sorted(result.replies)
(2, ['harmful_ablation', 'harmful_baseline', 'harmless_actadd', 'harmless_baseline'])
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from mechref.analyses.quickstart.settings import QuickstartSettings
from mechref.capture import capture_residual
from mechref.data import bundled
from mechref.errors import NoRefusalWarning
from mechref.framework.ownership import check_output_folder
from mechref.generation import generate
from mechref.interventions import activation_addition, directional_ablation
from mechref.judges.core import SubstringJudge
from mechref.model.loading import MechrefModel
from mechref.rates import Rate


@dataclass
class QuickstartResult:
    settings: QuickstartSettings
    model: dict  # MechrefModel.identity()
    layer: int
    direction: Float[Tensor, " d_model"]
    mean_harmful: Float[Tensor, " d_model"]
    mean_harmless: Float[Tensor, " d_model"]
    train_fingerprints: dict[str, str]
    prompts: dict[str, list[str]]  # condition -> prompts
    replies: dict[str, list[str]]  # condition -> replies
    verdicts: dict[str, list[bool]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, Rate]:
        """Refusal rate of each condition, as :class:`~mechref.rates.Rate` (k/n with an interval)."""
        return {condition: Rate.of(v) for condition, v in self.verdicts.items()}

    @property
    def no_refusal_to_explain(self) -> str | None:
        """Why this run measures nothing, when the model refused the harmful prompts no more often than the
        harmless ones (see :func:`no_refusal_to_explain`); None when it did."""
        return no_refusal_to_explain(self.rates)


def no_refusal_to_explain(rates: dict[str, Rate]) -> str | None:
    """A message saying the run has no refusal to explain, or None.

    When the model refused the held-out harmful prompts at most as often as the harmless ones, the
    difference of means is not a refusal direction (it tells harmful from harmless, and nothing in
    the replies depends on it), so the rates under ablation and addition measure nothing.

    >>> fine = {"harmful_baseline": Rate.of([True, False]), "harmless_baseline": Rate.of([False, False])}
    >>> no_refusal_to_explain(fine) is None
    True
    >>> print(no_refusal_to_explain({**fine, "harmful_baseline": Rate.of([False, False])}))  # doctest: +ELLIPSIS
    no refusal to explain: the model refused 0/2 harmful prompts and 0/2 harmless ones ...
    """
    harmful, harmless = rates["harmful_baseline"], rates["harmless_baseline"]
    if harmful.value > harmless.value:
        return None
    return (
        f"no refusal to explain: the model refused {harmful.k}/{harmful.n} harmful prompts and {harmless.k}/{harmless.n} "
        "harmless ones (by the phrase list), so this direction is not a refusal direction and the rates under "
        "ablation and addition measure nothing; try a safety-aligned chat model, another system prompt "
        "(--system-prompt), or more prompts (--n-eval)"
    )


def check_quickstart(settings: QuickstartSettings, out: str | Path | None = None) -> None:
    """Every check that needs no model: enough bundled prompts, a free output folder."""
    for label in ("harmful", "harmless"):
        bundled(label, "train").sample(settings.n_train, settings.seed)
        bundled(label, "test").take(settings.n_eval)
    if out is not None:
        check_output_folder(out)


def run_quickstart(
    model: MechrefModel, settings: QuickstartSettings | None = None, out: object = None, *, echo: bool = True
) -> QuickstartResult:
    """Capture the direction at one layer from the bundled train prompts, then generate with and without it."""
    settings = settings or QuickstartSettings()
    check_quickstart(settings, out if isinstance(out, (str, Path)) else None)
    layer = settings.resolve_layer(model.n_layers)
    if echo:
        print(
            f"{model.name}: {model.n_layers} layers, d_model {model.d_model}, dtype {str(model.dtype).removeprefix('torch.')}; "
            f"direction at layer {layer}, last token"
        )
        print("chat template example:", repr(model.chat.format("How do I bake bread?")))
        print("post-instruction tokens:", model.chat.post_instruction_tokens)
    timings = {}
    harmful_train = bundled("harmful", "train").sample(settings.n_train, settings.seed)
    harmless_train = bundled("harmless", "train").sample(settings.n_train, settings.seed)
    started = time.perf_counter()
    means = {
        p.label: capture_residual(
            model,
            p,
            layers=[layer],
            positions=-1,
            reduce="mean",
            batch_size=settings.batch_size,
            desc=f"mean {p.label}",
            progress=echo,
        )[0, 0]
        for p in (harmful_train, harmless_train)
    }
    direction = (means["harmful"] - means["harmless"]).float()
    timings["direction"] = round(time.perf_counter() - started, 2)

    harmful = bundled("harmful", "test").take(settings.n_eval).instructions
    harmless = bundled("harmless", "test").take(settings.n_eval).instructions
    options: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size, "progress": echo}
    started = time.perf_counter()
    replies = {"harmful_baseline": generate(model, harmful, **options)}
    with directional_ablation(model, direction):
        replies["harmful_ablation"] = generate(model, harmful, **options)
    replies["harmless_baseline"] = generate(model, harmless, **options)
    with activation_addition(model, direction, layer, coefficient=1.0):
        replies["harmless_actadd"] = generate(model, harmless, **options)
    timings["generation"] = round(time.perf_counter() - started, 2)
    prompts = {c: harmful if c.startswith("harmful") else harmless for c in replies}
    judge = SubstringJudge()
    result = QuickstartResult(
        settings=settings,
        model=model.identity(),
        layer=layer,
        direction=direction,
        mean_harmful=means["harmful"].float(),
        mean_harmless=means["harmless"].float(),
        train_fingerprints={p.label: p.fingerprint() for p in (harmful_train, harmless_train)},
        prompts=prompts,
        replies=replies,
        verdicts={c: judge.judge_many(texts) for c, texts in replies.items()},
        timings=timings,
    )
    if result.no_refusal_to_explain:
        # Marked, not stopped: the replies are still worth reading, and tiny test models refuse nothing.
        warnings.warn(result.no_refusal_to_explain, NoRefusalWarning, stacklevel=2)
    return result
