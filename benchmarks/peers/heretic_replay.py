"""Export one trial of a heretic search with heretic's own classes (run with the heretic environment's python,
in the search's folder, which holds its config.toml and checkpoints/).

For a search that ended without heretic's own export (stopped from outside): the refusal directions are
computed as heretic computes them before its trials (the means of its good and bad prompts' residuals,
normalized, made orthogonal to the good mean when ``orthogonalize_direction``), the trial's parameters applied
with ``Model.abliterate``, and the first-token KL on heretic's good evaluation prompts measured again and
printed beside the KL heretic recorded for that trial: equal, the replay is that trial's model.

    python heretic_replay.py TRIAL_NUMBER EXPORT_FOLDER
"""

from __future__ import annotations

import json
import sys

import optuna
import torch
import torch.nn.functional as F
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

number, export = int(sys.argv[1]), sys.argv[2]
sys.argv = sys.argv[:1]  # heretic's settings read the command line; they come from config.toml here

from heretic.config import Settings  # noqa: E402
from heretic.model import AbliterationParameters, Model  # noqa: E402
from heretic.utils import load_prompts  # noqa: E402

torch.set_grad_enabled(False)
settings = Settings()
journal = sorted(__import__("pathlib").Path(settings.study_checkpoint_dir).glob("*.jsonl"))[0]
study = optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(str(journal))))
trial = next(t for t in study.trials if t.number == number)

model = Model(settings)
good_means = model.get_residuals_mean(load_prompts(settings, settings.good_prompts))
bad_means = model.get_residuals_mean(load_prompts(settings, settings.bad_prompts))
directions = F.normalize(bad_means - good_means, p=2, dim=1)
if settings.orthogonalize_direction:
    good = F.normalize(good_means, p=2, dim=1)
    directions = F.normalize(directions - torch.sum(directions * good, dim=1).unsqueeze(1) * good, p=2, dim=1)

evaluation = load_prompts(settings, settings.good_evaluation_prompts)
before = model.get_logprobs_batched(evaluation)
parameters = {k: AbliterationParameters(**v) for k, v in trial.user_attrs["parameters"].items()}
model.abliterate(directions, trial.user_attrs["direction_index"], parameters)
after = model.get_logprobs_batched(evaluation)
kl = F.kl_div(after, before, reduction="batchmean", log_target=True).item()

merged = model.get_merged_model()
merged.save_pretrained(export)
model.tokenizer.save_pretrained(export)
print(json.dumps({"trial": number, "kl_replayed": kl, "kl_recorded": trial.user_attrs["kl_divergence"]}))
