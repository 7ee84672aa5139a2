"""Data we did not build: the released V2PE-Data / InternVL layout is read as is.

The fixture is written the way the released annotations are: a meta JSON `{name: {root, annotation,
data_augment, repeat_time, length, max_dynamic_patch?}}` and JSONL lines with only `id`, `image` (a path, a
list, or absent) and `conversations` -- no `task`/`meta` of ours. Tiles and tokens are counted at load;
the test recounts them independently (tile grids worked out by hand, the template rendered by hand).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from v2pe_common.template import INTERNVL_SYSTEM
from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.config import TrainConfig
from v2pe_train.data import LoaderConfig, PackedLoader
from v2pe_train.train import train

TOK = load_tokenizer()
IMG = "<image>"


def write_image(path, w: int, h: int, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG" if path.suffix == ".jpg" else "PNG")
    path.write_bytes(buf.getvalue())


# (line, tiles per image as InternVL's rule gives them, worked out by hand)
# 448x448: a 1x1 grid, no thumbnail -> 1. 896x448: 2x1 grid + thumbnail -> 3 (max 12 or max 2 alike).
# 1344x448 (3:1): 3x1 + thumbnail -> 4 under max 12; under max_dynamic_patch 2 the closest grid is 2x1 -> 3.
VQA_LINES = [
    ({"id": 0, "image": "images/square.jpg",  # a single image without <image>: one is prepended
      "conversations": [{"from": "human", "value": "What colour dominates?"},
                        {"from": "gpt", "value": "Noise, mostly grey."}]}, [1]),
    ({"id": "wide-1", "image": ["images/wide.png", "images/long.jpg"],
      "conversations": [{"from": "human", "value": f"{IMG}\n{IMG}\nCompare the two pictures."},
                        {"from": "gpt", "value": "The second is wider."}]}, [3, 4]),
    ({"id": "text-2",  # text-only: no image key, no tiles
      "conversations": [{"from": "human", "value": "Name a prime number above 10."},
                        {"from": "gpt", "value": "11"}]}, []),
]
MULTI_LINES = [
    ({"id": "turns-3", "image": "images/long.jpg",  # multi-turn: every assistant turn supervised
      "conversations": [{"from": "human", "value": f"{IMG}\nHow many tiles?"},
                        {"from": "gpt", "value": "Three, thumbnail included."},
                        {"from": "human", "value": "And the aspect ratio?"},
                        {"from": "gpt", "value": "3:1."}]}, [3]),
    ({"id": "wide-4", "image": ["images/wide.png"],
      "conversations": [{"from": "human", "value": f"Look: {IMG} what is it?"},
                        {"from": "gpt", "value": "A wide picture."}]}, [3]),
]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A V2PE-Data style folder: meta.json, two annotation JSONLs, images under one root."""
    base = tmp_path_factory.mktemp("v2pe_data")
    root = base / "data"
    write_image(root / "images" / "square.jpg", 448, 448, 1)
    write_image(root / "images" / "wide.png", 896, 448, 2)
    write_image(root / "images" / "long.jpg", 1344, 448, 3)
    (base / "ann").mkdir()
    for name, lines in (("vqa", VQA_LINES), ("multi", MULTI_LINES)):
        (base / "ann" / f"{name}.jsonl").write_text("".join(json.dumps(line) + "\n" for line, _ in lines))
    meta = {
        "vqa": {"root": "data", "annotation": "ann/vqa.jsonl", "data_augment": True, "repeat_time": 1,
                "length": len(VQA_LINES)},
        "multi": {"root": str(root), "annotation": str(base / "ann" / "multi.jsonl"), "data_augment": False,
                  "repeat_time": 1, "length": len(MULTI_LINES), "max_dynamic_patch": 2},
    }
    (base / "meta.json").write_text(json.dumps(meta))
    return base


def independent_count(line: dict, tiles: list[int]) -> tuple[int, int]:
    """(sequence length, supervised tokens) with the internlm2-chat template rendered by hand."""
    turns = line["conversations"]
    if isinstance(line.get("image"), str) and not any(IMG in t["value"] for t in turns):
        turns = [{"from": "human", "value": f"{IMG}\n{turns[0]['value']}"}, *turns[1:]]
    texts = [f"<|im_start|>system\n{INTERNVL_SYSTEM}<|im_end|>"]
    supervised = 0
    for t in turns:
        if t["from"] == "human":
            texts.append(f"<|im_start|>user\n{t['value']}<|im_end|>")
        else:
            texts.append("<|im_start|>assistant\n")
            texts.append(f"{t['value']}<|im_end|>")
            supervised += len(TOK.encode(texts[-1]))
    n = 1 if TOK.bos_id is not None else 0
    for text in texts:
        n += sum(len(TOK.encode(part)) for part in text.split(IMG) if part)
    return n + sum(t * 256 + 2 for t in tiles), supervised


def test_released_layout_loads_with_counts_equal_to_an_independent_count(released):
    loader = PackedLoader(LoaderConfig(paths=[str(released / "meta.json")], shuffle=False, position_mode="v2pe_rnd"), TOK)
    batches = list(loader)
    assert loader.stats.num_errors == 0, loader.stats.summary()
    expected = {str(line["id"]): (tiles, *independent_count(line, tiles)) for line, tiles in VQA_LINES + MULTI_LINES}
    got = {b.ids[0]: ([int(t) for t in b.image_tiles], b.input_ids.shape[-1], int(b.num_supervised.sum()))
           for b in batches}
    assert got == expected
    text_only = next(b for b in batches if b.ids == ["text-2"])
    assert text_only.pixel_values.shape[0] == 0
    two_turns = next(b for b in batches if b.ids == ["turns-3"])
    answers = [TOK.encode(f"{t['value']}<|im_end|>") for t in MULTI_LINES[0][0]["conversations"][1::2]]
    assert two_turns.labels[two_turns.labels != -100].tolist() == answers[0] + answers[1]


def test_a_foreign_image_path_escaping_the_root_is_refused(released, tmp_path):
    write_image(tmp_path / "outside.jpg", 448, 448, 9)
    lines = [{"id": "escape", "image": "../outside.jpg",
              "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ho"}]},
             {"id": "missing", "image": "images/none.jpg",
              "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ho"}]},
             VQA_LINES[2][0]]
    (tmp_path / "root").mkdir()
    ann = tmp_path / "bad.jsonl"
    ann.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "meta.json").write_text(json.dumps({"bad": {"root": "root", "annotation": "bad.jsonl", "repeat_time": 1}}))
    loader = PackedLoader(LoaderConfig(paths=[str(tmp_path / "meta.json")], shuffle=False), TOK)
    assert [b.ids for b in loader] == [["text-2"]]
    assert loader.stats.counts == {"bad_image": 2}
    escape, missing = loader.stats.examples["bad_image"]
    assert escape.endswith("/bad:escape: image path escapes the root: '../outside.jpg' climbs out of it")
    assert "missing: image images/none.jpg is missing" in missing


def test_the_released_layout_trains_a_few_steps_with_the_tiny_model(released, tmp_path):
    cfg = TrainConfig(model="tiny", data=[str(released / "meta.json")], out=str(tmp_path / "run"), max_seq_len=4096,
                      max_steps=3, save_every=100, warmup_ratio=0.0, lr=1e-3, precision="fp32", seed=1)
    losses = train(cfg, progress=False).losses
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_bad_foreign_lines_are_counted_with_their_cause_and_the_rest_trains(released, tmp_path):
    turns = [{"from": "human", "value": f"{IMG}\n{IMG}\nTwo?"}, {"from": "gpt", "value": "No."}]
    lines = [{"id": "video", "video": "clips/a.mp4", "conversations": turns[1:] * 2},
             {"id": "two-tags-one-image", "image": "images/square.jpg", "conversations": turns},
             {"id": "system-turn", "conversations": [{"from": "system", "value": "x"}, *turns[1:]]},
             VQA_LINES[2][0]]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "meta.json").write_text(json.dumps({"bad": {"root": str(released / "data"), "annotation": "bad.jsonl"}}))
    loader = PackedLoader(LoaderConfig(paths=[str(tmp_path / "meta.json")], shuffle=False), TOK)
    assert [b.ids for b in loader] == [["text-2"]]
    assert loader.stats.counts == {"schema": 3}
    video, tags, system = loader.stats.examples["schema"]
    assert video.endswith("bad:video: $.video: video samples are not read (only images)")
    assert "two-tags-one-image: cannot encode the conversations: conversations: 2 '<image>' placeholders but 1 images" in tags
    assert "system-turn: cannot encode the conversations: conversations[0].from: unknown role 'system'" in system
