import json

import pytest

from mechref.data import PromptSet, bundled, load_polyrefuse, load_prompt_file, load_refusal_direction_splits
from mechref.data.prompts import bundled_languages
from mechref.errors import DataFormatError


def test_bundled_english_set():
    assert "en" in bundled_languages()
    sizes = {
        (label, split): len(bundled(label, split)) for label in ("harmful", "harmless") for split in ("train", "val", "test")
    }
    assert sizes[("harmful", "train")] >= 128 and sizes[("harmful", "val")] == 32 and sizes[("harmful", "test")] >= 10
    assert sum(v for (label, _), v in sizes.items() if label == "harmful") >= 160
    assert sum(v for (label, _), v in sizes.items() if label == "harmless") >= 160
    for label in ("harmful", "harmless"):
        splits = [set(bundled(label, s).instructions) for s in ("train", "val", "test")]
        assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert not set(bundled("harmful", "train")) & set(bundled("harmless", "train"))


def test_sampling_is_seeded():
    train = bundled("harmless", "train")
    a, b, c = train.sample(20, seed=1), train.sample(20, seed=1), train.sample(20, seed=2)
    assert a == b and a != c and len(a) == 20 and set(a) <= set(train)
    with pytest.raises(DataFormatError, match="only"):
        train.sample(1000)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{}", "expected a JSON list"),
        ("[]", "empty"),
        ('[{"instruction": "ok"}, {"prompt": "x"}]', r"row 1: missing the 'instruction' field"),
        ('[{"instruction": "ok"}, {"instruction": ""}]', "row 1"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_malformed_files_name_file_and_row(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message) as info:
        load_prompt_file(path, "harmful", "train")
    assert str(path) in str(info.value)


def test_plain_string_lists_are_accepted(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(["a b", "c d"]))
    assert load_prompt_file(path, "harmless", "val").instructions == ["a b", "c d"]


def test_prompt_set_validates_label():
    with pytest.raises(ValueError):
        PromptSet(["x"], label="evil", split="train")


def test_refusal_direction_layout(shared_data):
    splits = load_refusal_direction_splits(shared_data / "refusal_direction")
    assert len(splits[("harmful", "train")]) == 260 and len(splits[("harmful", "test")]) == 572


def test_polyrefuse_layout(shared_data):
    root = shared_data / "polyrefuse"
    en = load_polyrefuse(root, "en", "harmful", "test")
    de = load_polyrefuse(root, "de", "harmful", "test")
    assert len(en) == len(de) == 572 and en[0] != de[0]
    assert len(load_polyrefuse(root, "de", "harmless", "train")) == 200
    with pytest.raises(DataFormatError, match="no Chinese harmless test"):
        load_polyrefuse(root, "zh", "harmless", "test")
    with pytest.raises(DataFormatError, match="no language"):
        load_polyrefuse(root, "xx", "harmful", "test")


def test_bundled_multilingual_set_is_aligned_and_complete():
    from mechref.data import multilingual, multilingual_languages

    languages = multilingual_languages()
    assert {"en", "de", "es", "fr", "zh", "ja", "ru", "yo"} <= set(languages)
    for label in ("harmful", "harmless"):
        sizes = {(lang, split): len(multilingual(label, split, lang)) for lang in languages for split in ("train", "test")}
        assert set(sizes.values()) <= {48, 16} and sum(sizes.values()) == 64 * len(languages)
        for lang in languages:
            texts = multilingual(label, "train", lang).instructions + multilingual(label, "test", lang).instructions
            assert len(set(texts)) == 64, (lang, label)  # no duplicates within a language
            if lang != "en":
                english = multilingual(label, "train", "en").instructions
                assert not set(texts) & set(english), (lang, label)  # translated, not copied
    with pytest.raises(DataFormatError, match="no bundled multilingual prompts"):
        multilingual("harmful", "train", "xx")
