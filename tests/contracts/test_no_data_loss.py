"""mechref never deletes or overwrites what it did not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mechref.edits.orthogonalize import export_orthogonalized
from mechref.framework.io import atomic_path
from mechref.framework.ownership import (
    RUN_MARKER,
    OutputTargetError,
    check_export_target,
    check_output_file,
    check_output_folder,
    claim_output_folder,
    is_mechref_folder,
)
from mechref.framework.runs import Run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def foreign(tmp_path) -> Path:
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "main.tex").write_text("\\documentclass{article}")
    (folder / "chapters" / "one.tex").write_text("text")
    return folder


def test_atomic_path_refuses_to_replace_a_folder_with_files(foreign):
    before = snapshot(foreign)
    with pytest.raises(FileExistsError), atomic_path(foreign) as tmp:
        tmp.mkdir()
    assert snapshot(foreign) == before


def test_atomic_path_replaces_a_folder_only_when_asked_and_leaves_no_temporaries(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with atomic_path(folder, replace_folder=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert snapshot(folder) == {"new.txt": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_failed_write_leaves_the_old_folder(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(folder, replace_folder=True) as tmp:
        tmp.mkdir()
        raise RuntimeError("killed half-way")
    assert snapshot(folder) == {"old.txt": b"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_export_into_a_folder_of_other_files_is_refused_before_anything_is_written(foreign, tiny_folder):
    from mechref import load_model

    model = load_model(str(tiny_folder), dtype="float32")
    before = snapshot(foreign)
    with pytest.raises(OutputTargetError, match="did not write"):
        export_orthogonalized(model, torch.ones(model.d_model), foreign)
    assert snapshot(foreign) == before


def test_export_replaces_an_earlier_export_only_with_overwrite(tmp_path, tiny_folder):
    from mechref import load_model

    model = load_model(str(tiny_folder), dtype="float32")
    target = tmp_path / "edited"
    export_orthogonalized(model, torch.ones(model.d_model), target)
    first = snapshot(target)
    with pytest.raises(OutputTargetError, match="--overwrite"):
        export_orthogonalized(model, torch.ones(model.d_model), target)
    assert snapshot(target) == first
    export_orthogonalized(model, torch.eye(model.d_model)[0], target, overwrite=True)
    assert snapshot(target) != first and (target / "mechref_edit.json").is_file()


def test_working_directory_and_its_parents_are_never_export_targets(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for target in (".", "..", str(tmp_path), str(work)):
        with pytest.raises(OutputTargetError, match="working directory"):
            check_export_target(target, overwrite=True)
    assert check_export_target("fresh") == Path("fresh")


def test_output_folders(tmp_path, foreign):
    with pytest.raises(OutputTargetError, match=r"main\.tex"):
        check_output_folder(foreign)
    with pytest.raises(OutputTargetError, match=r"main\.tex"):
        Run(foreign)
    assert not (foreign / RUN_MARKER).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_folder(empty)
    assert is_mechref_folder(empty)
    (empty / "summary.json").write_text("{}")
    claim_output_folder(empty)  # mechref's own folder: accepted again (resume)
    # A run folder written before the marker existed is recognised by its stage manifests.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "candidates.manifest.json").write_text(json.dumps({"stage": "candidates", "mechref_version": "0.1"}))
    assert is_mechref_folder(legacy)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.manifest.json").write_text(json.dumps({"name": "not ours"}))
    assert not is_mechref_folder(other)


def test_output_files(tmp_path):
    ours = tmp_path / "suffix.json"
    ours.write_text(json.dumps({"suffix": " x", "suffix_ids": [1]}))
    assert check_output_file(ours, ("suffix_ids",)) == ours
    theirs = tmp_path / "theirs.json"
    for text in ('{"suffix": "x"}', "[1, 2]", "not json", "3"):
        theirs.write_text(text)
        with pytest.raises(OutputTargetError, match="not written by mechref"):
            check_output_file(theirs, ("suffix_ids",))
