"""Malformed records are rejected with messages that name the field."""

import copy

import pytest

from v2pe_common import schema


def good_record():
    return {
        "id": "long_vqa-train-00000001",
        "task": "long_vqa",
        "subset": "synthetic_concat",
        "images": ["0.jpg", "1.png"],
        "conversations": [{"from": "human", "value": "<image>\n<image>\nQ?"}, {"from": "gpt", "value": "A"}],
        "answer": "A",
        "meta": {
            "seed": 0, "sample_index": 1, "target_len": 4096, "min_len": 512, "len_bin": "0_4",
            "num_tokens": 1000, "text_tokens": 484, "image_tokens": 516, "tiles": [1, 1],
            "image_sizes": [[448, 448], [300, 200]], "template": "chatml",
            "tokenizer": {"name": "bundled", "sha256": "0" * 64}, "tiling": {"tile_size": 448, "max_tiles": 12,
            "min_tiles": 1, "use_thumbnail": True, "tokens_per_tile": 256},
            "sources": [{"dataset": "synthetic", "split": "train", "id": "a", "role": "target"},
                        {"dataset": "synthetic", "split": "train", "id": "b", "role": "distractor"}],
        },
    }


def test_a_well_formed_record_passes():
    schema.validate(good_record())
    schema.check_counts(good_record())


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda r: r.pop("conversations"), "'conversations' is a required property"),
        (lambda r: r["meta"].pop("num_tokens"), "'num_tokens' is a required property"),
        (lambda r: r["meta"].__setitem__("num_tokens", "many"), "$.meta.num_tokens"),
        (lambda r: r["conversations"][1].__setitem__("from", "bot"), "$.conversations[1].from"),
        (lambda r: r["images"].__setitem__(0, "../etc/passwd"), "$.images[0]"),
        (lambda r: r.__setitem__("task", "other"), "$.task"),
        (lambda r: r["meta"]["tiles"].__setitem__(0, 0), "$.meta.tiles[0]"),
        (lambda r: r.__setitem__("extra", 1), "'extra' was unexpected"),
    ],
)
def test_schema_errors_name_the_field(mutate, field):
    rec = copy.deepcopy(good_record())
    mutate(rec)
    with pytest.raises(schema.SchemaError) as err:
        schema.validate(rec, where="shard-000000.tar:key")
    assert field in str(err.value)
    assert "shard-000000.tar:key" in str(err.value)


def test_cross_field_invariants_are_checked():
    rec = good_record()
    rec["meta"]["num_tokens"] = 999
    with pytest.raises(schema.SchemaError, match="num_tokens != text_tokens"):
        schema.check_counts(rec)
    rec = good_record()
    rec["meta"]["tiles"] = [1]
    with pytest.raises(schema.SchemaError, match=r"\$\.meta\.tiles has 1 entries for 2 images"):
        schema.check_counts(rec)
    rec = good_record()
    rec["meta"]["min_len"] = 2000
    with pytest.raises(schema.SchemaError, match="outside its bin"):
        schema.check_counts(rec)
