"""Refusal across languages (Wang et al. 2025), every analysis on shared activations:

1. baseline safety audit: refusal of harmful and harmless test prompts per language (languages
   whose harmful compliance exceeds 10% are flagged as not safety-aligned);
2. per-language refusal vectors and their cosine parallelism (at the direction's layer and across layers);
3. cross-lingual transfer: ablate (or add) each language's vector and measure refusal in every
   language (logit refusal score), plus greedy replies with the English vector ablated;
4. silhouette scores of harmful vs harmless activations per language and layer;
5. PCA per language with the prompts the model complied with highlighted.

    python -m mechref.analyses.multilingual                            # bundled set, 8 languages
    python -m mechref.analyses.multilingual --data ../shared/data/polyrefuse \\
        --languages en de es fr ja zh th yo --n-train 32 --n-test 16 --out runs/multilingual_polyrefuse
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from mechref.multilingual.study import command

    return command("python -m mechref.analyses.multilingual", __doc__, run, argv)


def run(args) -> int:
    from mechref.multilingual.sections import (
        audit_section, cosine_section, format_summary, silhouette_section, transfer_section, write_report,
    )
    from mechref.multilingual.study import MultilingualStudy

    study = MultilingualStudy(args)
    acts = study.activations()
    audit = study.audit()
    transfer = study.transfer(study.vectors(acts), audit)
    parts, figures = [], {}
    for part, figs in (audit_section(study, audit), cosine_section(study, acts), transfer_section(study, transfer),
                       silhouette_section(study, acts, audit)):
        parts.append(part)
        figures.update(figs)
    summary = write_report(study, parts, figures, "multilingual")
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
