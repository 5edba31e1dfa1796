"""The per-stage memory log: each stage's peak is its own (the kernel's high-water mark, reset at each mark)."""

from __future__ import annotations

import json

import pytest

from mechref.framework import memory
from mechref.framework.memory import MemoryLog

MIB = 2**20


def test_a_stage_is_credited_its_own_peak_and_not_the_one_before():
    log = MemoryLog()
    log.mark("big")
    block = bytearray(256 * MIB)  # touched: resident
    del block
    log.mark("small")
    log.mark(None)
    if not log.exact:
        pytest.skip("this system does not let a process reset its resident-memory peak")
    assert log.peaks["big"] - log.peaks["small"] >= 200 * MIB
    assert log.peak == log.peaks["big"]


def test_the_log_is_written_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("MECHREF_MEMORY_LOG", raising=False)
    assert memory.write_log() is None
    target = tmp_path / "log.json"
    monkeypatch.setenv("MECHREF_MEMORY_LOG", str(target))
    monkeypatch.setattr(memory, "LOG", MemoryLog())
    memory.mark("stage")
    assert memory.write_log({"command": "x"}) == target
    written = json.loads(target.read_text())
    assert written["command"] == "x" and set(written["stages_gib"]) == {"stage"} and written["peak_gib"] > 0
