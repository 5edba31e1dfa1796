import pytest
import torch

from mechref.framework.io import atomic_path, read_json, read_tensors, write_json, write_tensors


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "artifact.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_folder_replaced_atomically(tmp_path):
    target = tmp_path / "folder"
    for text in ("one", "two"):
        with atomic_path(target, replace_folder=True) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(text)
    assert (target / "f.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_round_trips(tmp_path):
    write_json(tmp_path / "a.json", {"x": torch.tensor(1.5), "d": torch.float32})
    assert read_json(tmp_path / "a.json") == {"x": 1.5, "d": "float32"}
    write_tensors(tmp_path / "t.safetensors", {"v": torch.arange(3.0)})
    torch.testing.assert_close(read_tensors(tmp_path / "t.safetensors")["v"], torch.arange(3.0))
