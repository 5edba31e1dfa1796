"""Silhouette clustering of harmful vs harmless activations per language and layer, and PCA
(Wang et al. 2025).

How well harmful and harmless prompts separate in each language (scikit-learn silhouette score
at every layer), and a PCA at the direction's layer, fitted jointly on every language, with the
harmful test prompts the model answered instead of refusing ("jailbroken") highlighted. Finding
those needs the baseline replies, so this command also runs (or reuses) the baseline audit.

    python -m mechref.analyses.silhouette
    python -m mechref.analyses.silhouette --data ../shared/data/polyrefuse --languages en de ja th yo zh \\
        --n-train 32 --out runs/multilingual_polyrefuse
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from mechref.multilingual.study import command

    def no_audit(parser):
        parser.add_argument("--no-audit", action="store_true", help="skip the replies; the PCA then marks no jailbroken prompts")

    return command("python -m mechref.analyses.silhouette", __doc__, run, argv, extra=no_audit)


def run(args) -> int:
    from mechref.multilingual.sections import audit_section, format_summary, silhouette_section, write_report
    from mechref.multilingual.study import MultilingualStudy

    study = MultilingualStudy(args)
    acts = study.activations()
    parts, figures = [], {}
    audit = None
    if not args.no_audit:
        audit = study.audit()
        part, figs = audit_section(study, audit)
        parts.append(part)
        figures.update(figs)
    part, figs = silhouette_section(study, acts, audit)
    parts.append(part)
    figures.update(figs)
    summary = write_report(study, parts, figures, "silhouette")
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
