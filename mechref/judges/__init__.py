"""Refusal judges: phrase lists per language, the chat-model judge, the probe judge, openings mined
per language, degenerate replies, files of replies to judge, and the registry of which judge is
validated for which language."""

from mechref.judges.core import ChatModelJudge, Judge, ScoringJudge, SubstringJudge, arditi_judge, judge_agreement, make_judge

__all__ = ["ChatModelJudge", "Judge", "ScoringJudge", "SubstringJudge", "arditi_judge", "judge_agreement", "make_judge"]
