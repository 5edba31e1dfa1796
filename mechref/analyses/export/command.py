"""Export the refusal-direction edit for the tools people run models with, and verify each file:

1. the edited model (weight orthogonalization; --norm-preserving and per-layer kernels for
   softer edits) as a transformers folder, a rank-1 PEFT LoRA adapter and a GGUF (llama.cpp,
   Ollama), and the activation addition as a llama.cpp control vector;
2. each file loaded back by its consuming library (transformers, peft, transformers' GGUF
   loader; llama.cpp's rule for the control vector) and measured beside the in-memory edit:
   refusal of held-out harmful prompts (k/n, 95% interval) and first-token KL on harmless ones.

    python -m mechref.analyses.export                                   # every format, verified
    python -m mechref.analyses.export --formats gguf --gguf-type q8_0 --out runs/export_q8
    python -m mechref.analyses.export --formats hf gguf --norm-preserving --mlp-kernel 18 6 0.2 1

In Python: mechref.analyses.export.pipeline.run_export.
"""

from __future__ import annotations

from typing import Sequence

from mechref.analyses.command import AnalysisCommand
from mechref.analyses.export.pipeline import check_export, run_export
from mechref.analyses.export.report import report_export
from mechref.analyses.export.settings import ExportSettings

COMMAND = AnalysisCommand(
    "python -m mechref.analyses.export",
    __doc__,
    ExportSettings,
    run_export,
    report_export,
    default_out="runs/export",
    check=check_export,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); the exit code (0, 1 on a crash, 2 on bad
    input)."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
