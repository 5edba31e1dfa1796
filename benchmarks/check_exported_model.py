"""Load an orthogonalized model with plain transformers (no mechref model code) and measure how
often it refuses harmful prompts.

    python benchmarks/check_exported_model.py runs/rd_paper_model \\
        --prompts ../shared/data/refusal_direction/splits/harmful_test.json --n 100 --out benchmarks/results/exported.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prompts", type=Path, required=True, help="JSON list of {instruction: ...}")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from mechref.scoring import SubstringJudge  # the judge only: the model is plain transformers

    tokenizer = AutoTokenizer.from_pretrained(args.folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=getattr(torch, args.dtype)).eval()
    prompts = [row["instruction"] for row in json.loads(args.prompts.read_text())[: args.n]]
    replies = []
    start = time.perf_counter()
    for i in range(0, len(prompts), args.batch_size):
        chunk = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts[i : i + args.batch_size]
        ]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        replies += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    verdicts = SubstringJudge().judge_many(replies)
    result = {
        "folder": str(args.folder),
        "prompts": str(args.prompts),
        "n": len(prompts),
        "dtype": args.dtype,
        "refusal_rate": sum(verdicts) / len(verdicts),
        "seconds": round(time.perf_counter() - start, 1),
        # Prompts are referred to by index: the dataset stays where it is, out of this repository.
        "complied_prompt_indices": [i for i, v in enumerate(verdicts) if not v],
        "refused_prompt_indices": [i for i, v in enumerate(verdicts) if v],
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
