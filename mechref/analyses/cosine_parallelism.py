"""Cosine parallelism of refusal vectors across languages (Wang et al. 2025).

One difference-in-means refusal vector per language, at the layer and position of the
refusal-direction analysis, and the cosine similarity of every pair, at that layer and across
layers. Reads (or computes) the activations shared with the other multilingual commands.

    python -m mechref.analyses.cosine_parallelism                       # bundled set, 8 languages
    python -m mechref.analyses.cosine_parallelism --data ../shared/data/polyrefuse \\
        --languages en de es fr ja zh --n-train 32 --out runs/multilingual_polyrefuse
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from mechref.multilingual.study import command

    return command("python -m mechref.analyses.cosine_parallelism", __doc__, run, argv)


def run(args) -> int:
    from mechref.multilingual.sections import cosine_section, format_summary, write_report
    from mechref.multilingual.study import MultilingualStudy

    study = MultilingualStudy(args)
    acts = study.activations()
    part, figures = cosine_section(study, acts)
    summary = write_report(study, [part], figures, "cosine_parallelism")
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
