"""Batch sizes chosen per device: raised on a GPU from its free memory, untouched elsewhere and
wherever the user chose one (CUDA is simulated: this machine has none)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mechref.analyses.refusal_direction.settings import RefusalDirectionSettings
from mechref.model.devices import MAX_ROWS, device_batch_defaults, row_bytes, rows_for_memory
from mechref.testing import tiny_model


def _on_cuda(model):
    return SimpleNamespace(device=torch.device("cuda", 0), hf_model=model.hf_model, dtype=model.dtype)


def test_a_gpu_gets_the_rows_half_its_free_memory_holds(monkeypatch):
    model = tiny_model("qwen2")
    per_row = row_bytes(model, 512)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * per_row, 200 * per_row))
    assert rows_for_memory(_on_cuda(model), 32) == 50
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * per_row, 200 * per_row))
    assert rows_for_memory(_on_cuda(model), 32) == 32  # never below the default
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**6 * per_row, 10**7 * per_row))
    assert rows_for_memory(_on_cuda(model), 32) == MAX_ROWS
    assert rows_for_memory(model, 32) == 32  # the CPU keeps the default


def test_only_batch_sizes_nobody_chose_are_raised(monkeypatch):
    model = tiny_model("qwen2")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**12, 10**12))
    settings = RefusalDirectionSettings()
    raised, notes = device_batch_defaults(_on_cuda(model), settings, given=set())
    assert raised.batch_size == raised.generation_batch_size == MAX_ROWS and len(notes) == 2
    assert "--batch-size" in notes[0] and "--generation-batch-size" in notes[1]
    kept, notes = device_batch_defaults(_on_cuda(model), settings, given={"batch_size", "generation_batch_size"})
    assert kept.batch_size == settings.batch_size and kept.generation_batch_size == 128 and notes == []
    same, notes = device_batch_defaults(model, settings, given=set())
    assert same is settings and notes == []


@pytest.mark.parametrize(("argv", "given"), [([], set()), (["--batch-size", "8"], {"batch_size"})])
def test_the_command_line_knows_which_settings_were_given(argv, given):
    from mechref.analyses.command import given_settings
    from mechref.analyses.refusal_direction import COMMAND

    assert given_settings(COMMAND.parser(), COMMAND.settings, argv) & {"batch_size"} == given


def test_bfloat16_on_a_cpu_that_emulates_it_is_said_once_with_the_faster_option(monkeypatch):
    from mechref.model import devices
    from mechref.testing import tiny_model

    model = tiny_model("qwen2", n_layers=2)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.slow_dtype_note(model) is None  # float32: nothing to say
    model.to("bfloat16")
    note = devices.slow_dtype_note(model)
    assert note is not None and "--dtype float32" in note and "\n" not in note
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.slow_dtype_note(model) is None
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: None)  # cannot tell: stay quiet
    assert devices.slow_dtype_note(model) is None


def test_native_bfloat16_is_read_from_the_cpu_flags():
    from mechref.model.devices import cpu_has_native_bf16

    assert cpu_has_native_bf16("processor : 0\nflags : fpu sse avx2 amx_bf16 amx_tile\n") is True
    assert cpu_has_native_bf16("processor : 0\nflags : fpu sse avx2 avx512f\n") is False
    assert cpu_has_native_bf16("processor : 0\n") is False  # no flags line: nothing native
