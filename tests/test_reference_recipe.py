"""The reference recipe's pieces (issue 11): turn text stripped as the reference strips it, ViT stochastic
depth, JPEG re-encoding augmentation, weight decay on every parameter, the InternVL meta's root and
data_augment, and recipes that match the published ones point by point."""

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from v2pe_common import encoding
from v2pe_common.recipe import ConfigError
from v2pe_common.template import get_template
from v2pe_common.tiling import IMAGENET_MEAN, IMAGENET_STD, TilingConfig, image_processor, num_tiles
from v2pe_common.tokenizer import load_tokenizer
from v2pe_train.config import TrainConfig

TOK = load_tokenizer()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# -- turn text is stripped -----------------------------------------------------------------------
def _supervised_text(enc) -> str:
    return TOK.hf.decode(enc.input_ids[enc.labels != encoding.IGNORE_INDEX])


@pytest.mark.parametrize("template", ["internlm2-chat", "chatml"])
def test_turns_are_stripped_before_templating_and_counted_as_encoded(template):
    """An answer stored as "1,234.50 " is trained, and counted, as the reference trains it: "1,234.50"."""
    t = get_template(template)
    padded = [{"from": "human", "value": "  <image>\nWhat is the total amount due? \n"},
              {"from": "gpt", "value": "1,234.50 "}, {"from": "human", "value": "\tAnd the tax?"},
              {"from": "gpt", "value": " 12.00\n"}]
    stripped = [dict(turn, value=turn["value"].strip()) for turn in padded]
    enc = encoding.encode(padded, [2], TOK, t)
    assert list(enc.input_ids) == list(encoding.encode(stripped, [2], TOK, t).input_ids)
    assert list(enc.labels) == list(encoding.encode(stripped, [2], TOK, t).labels)
    assert _supervised_text(enc) == "1,234.50<|im_end|>12.00<|im_end|>"
    counted = encoding.count(padded, [2], TOK, t)
    assert counted.total == len(enc) and counted.text == enc.num_text_tokens
    # the reference's string: every turn's value.strip(), then the template
    text = "".join(piece for piece, _ in dataclasses.replace(t, strip_turns=False).pieces(stripped))
    text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * 512 + "</img>")
    bos = [TOK.bos_id] if t.add_bos and TOK.bos_id is not None else []
    assert list(enc.input_ids) == bos + TOK.hf.encode(text, add_special_tokens=False)


def test_strip_turns_off_renders_turns_verbatim():
    t = dataclasses.replace(get_template("chatml"), strip_turns=False)
    conv = [{"from": "human", "value": "Q "}, {"from": "gpt", "value": "A "}]
    assert "user\nQ <|im_end|>" in "".join(p for p, _ in t.pieces(conv))
    assert _supervised_text(encoding.encode(conv, [], TOK, t)) == "A <|im_end|>"


def test_builder_count_and_loader_encoding_agree_on_an_unstripped_answer(tmp_path):
    """A record whose answer ends in a space: the builder's count is the loader's length (no length_mismatch)."""
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig
    from v2pe_data.plan import Accounting
    from v2pe_common.formats import read_records, wds
    from v2pe_train.data.samples import SampleProcessor

    out = tmp_path / "b"
    build(BuildConfig(length=2048, min_length=512, num_samples=1, shard_size=1, max_tiles=1, out=str(out), seed=3),
          show_progress=False)
    _, record, _ = next(iter(read_records(wds.iter_samples(next((out / "shards").glob("*.tar"))))))
    record["conversations"][-1]["value"] += "  "
    tiling = TilingConfig(**{k: v for k, v in record["meta"]["tiling"].items() if k in TilingConfig.__slots__})
    acc = Accounting(TOK, get_template(record["meta"]["template"]), tiling)
    record["meta"]["num_tokens"] = acc.count(record["conversations"], record["meta"]["tiles"]).total
    _, enc, _ = SampleProcessor(TOK).plan(dict(record), record["id"])
    assert len(enc) == record["meta"]["num_tokens"]
    answer = record["conversations"][-1]["value"].strip()
    assert _supervised_text(enc).endswith(f"{answer}<|im_end|>") and f"{answer} " not in _supervised_text(enc)


# -- ViT drop path -------------------------------------------------------------------------------
def _vision_model(layers: int = 3):
    from transformers import InternVLForConditionalGeneration

    from v2pe_train.model import tiny_config

    cfg = tiny_config(TOK.vocab_size, TOK.img_context_id)
    cfg.vision_config.num_hidden_layers = layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return InternVLForConditionalGeneration(cfg)


def _tiles(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 448, 448, generator=torch.Generator().manual_seed(1))


def test_drop_path_is_active_only_in_training():
    from v2pe_train.model import StochasticDepth, install_drop_path

    model, plain = _vision_model(), _vision_model()
    install_drop_path(model, 0.5)
    rates = [layer.drop_path.rate for layer in model.model.vision_tower.encoder.layer]
    assert rates == pytest.approx([0.0, 0.25, 0.5])  # InternViT: linear from 0 to the rate
    assert all(isinstance(layer.drop_path, StochasticDepth) for layer in model.model.vision_tower.encoder.layer)
    x = _tiles()
    tower = model.model.vision_tower
    model.train()
    with torch.no_grad():
        torch.manual_seed(10)
        a = tower(pixel_values=x).last_hidden_state
        b = tower(pixel_values=x).last_hidden_state  # the RNG moved on: other tiles dropped
        torch.manual_seed(10)
        again = tower(pixel_values=x).last_hidden_state
    assert not torch.equal(a, b)
    assert torch.equal(a, again)  # the drops come from torch's RNG, which checkpoints save and restore
    model.eval()
    plain.eval()
    with torch.no_grad():
        c, d = tower(pixel_values=x).last_hidden_state, tower(pixel_values=x).last_hidden_state
        reference = plain.model.vision_tower(pixel_values=x).last_hidden_state
    assert torch.equal(c, d) and torch.equal(c, reference)  # eval: the identity, same as no drop path
    assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints keep their keys


def test_drop_path_drops_whole_tiles_and_scales_the_kept_ones():
    from v2pe_train.model import StochasticDepth

    drop = StochasticDepth(0.5).train()
    torch.manual_seed(0)
    out = drop(torch.ones(400, 5, 3))
    per_tile = out.reshape(400, -1)
    assert set(per_tile.unique().tolist()) == {0.0, 2.0}
    assert bool((per_tile == per_tile[:, :1]).all())  # one draw per tile
    assert 0.4 < float((per_tile[:, 0] == 0).float().mean()) < 0.6


def test_drop_path_under_gradient_checkpointing_gives_the_gradients_of_a_plain_forward():
    """The recompute of a checkpointed layer must drop the same tiles as its first forward."""
    from v2pe_train.model import install_drop_path

    grads = []
    for checkpointing in (False, True):
        model = _vision_model()
        install_drop_path(model, 0.5)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        torch.manual_seed(3)
        model.model.vision_tower(pixel_values=_tiles()).last_hidden_state.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.model.vision_tower.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_drop_path_rate_is_checked():
    from v2pe_train.model import install_drop_path

    with pytest.raises(ValueError, match="drop_path_rate"):
        install_drop_path(_vision_model(1), 1.0)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        TrainConfig(drop_path_rate=-0.1)


# -- JPEG re-encoding augmentation ---------------------------------------------------------------
TILING = TilingConfig(max_tiles=4)


def _png(width=700, height=420) -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([(xx * 255 // width), (yy * 255 // height), rng.integers(0, 256, (height, width))], -1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(processor, data: bytes, **kw) -> torch.Tensor:
    n = num_tiles(700, 420, TILING)
    out = torch.empty((n, 3, 448, 448), dtype=torch.float32)
    processor.tile(data, "0.png", n, TILING, out, **kw)
    return out


def _processor(**kw):
    from v2pe_train.data.samples import SampleProcessor

    from v2pe_train.data.options import SampleConfig

    seed = kw.pop("seed", 0)
    return SampleProcessor(TOK, SampleConfig(**kw), pixel_dtype="fp32", seed=seed)


def test_augmentation_is_deterministic_per_seed_sample_image_and_epoch():
    data = _png()
    aug = _processor(data_augment=True, seed=7)
    first = _pixels(aug, data, key=("s1", 0, 0))
    assert torch.equal(first, _pixels(_processor(data_augment=True, seed=7), data, key=("s1", 0, 0)))
    for other in (_pixels(aug, data, key=("s1", 0, 1)),  # next epoch
                  _pixels(aug, data, key=("s2", 0, 0)),  # another sample
                  _pixels(aug, data, key=("s1", 1, 0)),  # another image of the sample
                  _pixels(_processor(data_augment=True, seed=8), data, key=("s1", 0, 0))):  # another seed
        assert not torch.equal(first, other)


def test_each_tile_is_the_clean_tile_re_encoded_as_jpeg_at_a_quality_from_75_to_100():
    data = _png()
    plain = _pixels(_processor(), data)
    aug = _pixels(_processor(data_augment=True), data, key=("s1", 0, 0))
    assert aug.shape == plain.shape and not torch.equal(aug, plain)
    with Image.open(io.BytesIO(data)) as im:
        clean = image_processor(TILING)(images=im.convert("RGB"), return_tensors="pt", do_rescale=False,
                                         do_normalize=False)["pixel_values"]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for t in range(aug.shape[0]):
        candidates = []
        for quality in range(75, 101):
            buf = io.BytesIO()
            Image.fromarray(clean[t].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
            back = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float()
            candidates.append((back / 255.0 - mean) / std)
        assert any(torch.allclose(aug[t], c, atol=1e-6) for c in candidates), f"tile {t}"


def test_augmentation_is_off_unless_asked_for_and_keyed():
    """Off when the flag is off, and always off without a key: evaluation tiles without one."""
    data = _png()
    plain = _pixels(_processor(), data)
    assert torch.equal(_pixels(_processor(), data, key=("s1", 0, 0)), plain)  # data_augment False
    assert torch.equal(_pixels(_processor(data_augment=True), data), plain)  # no key: eval
    assert torch.equal(_pixels(_processor(data_augment=True), data, key=("s1", 0, 0), augment=False), plain)
    # a dataset's own flag (an InternVL meta entry's data_augment) overrides the processor's default
    assert not torch.equal(_pixels(_processor(), data, key=("s1", 0, 0), augment=True), plain)


# -- weight decay on every trainable parameter ---------------------------------------------------
def test_weight_decay_all_decays_vectors_too_and_never_frozen_parameters():
    from v2pe_train.optim import build_optimizer

    def step(decay_all: bool) -> torch.nn.Sequential:
        net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 1))
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(1.0)
        net[2].requires_grad_(False)
        opt = build_optimizer(net, lr=0.1, weight_decay=0.5, betas=(0.9, 0.999), eps=1e-8, decay_all=decay_all)
        for p in net.parameters():
            p.grad = torch.zeros_like(p) if p.requires_grad else None
        opt.step()
        return net

    shrunk = 1.0 - 0.1 * 0.5  # decoupled decay with a zero gradient: p <- p (1 - lr wd)
    every = step(True)
    for p in (every[0].weight, every[0].bias, every[1].weight, every[1].bias):
        torch.testing.assert_close(p.detach(), torch.full_like(p, shrunk))
    matrices = step(False)
    torch.testing.assert_close(matrices[0].weight.detach(), torch.full_like(matrices[0].weight, shrunk))
    for p in (matrices[0].bias, matrices[1].weight, matrices[1].bias):
        assert bool((p == 1.0).all())
    for net in (every, matrices):  # frozen: untouched
        assert bool((net[2].weight == 1.0).all()) and bool((net[2].bias == 1.0).all())


# -- the trainer wires the keys ------------------------------------------------------------------
def test_trainer_applies_drop_path_decay_all_augmentation_and_the_tile_cap(tmp_path):
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig
    from v2pe_train.model import StochasticDepth
    from v2pe_train.train import Trainer

    data = tmp_path / "d"
    build(BuildConfig(length=2048, min_length=512, num_samples=1, shard_size=1, max_tiles=1, out=str(data), seed=3),
          show_progress=False)
    cfg = TrainConfig(model="tiny", data=[str(data)], out=str(tmp_path / "run"), max_seq_len=2048, precision="fp32",
                      drop_path_rate=0.1, weight_decay_all=True, data_augment=True, max_tiles_per_pack=7)
    trainer = Trainer(cfg)
    layers = trainer.model.model.vision_tower.encoder.layer
    assert all(isinstance(layer.drop_path, StochasticDepth) for layer in layers)
    decayed = [g for g in trainer.optimizer.param_groups if g["weight_decay"] > 0]
    assert sum(len(g["params"]) for g in decayed) == sum(1 for p in trainer.model.parameters() if p.requires_grad)
    assert trainer.loader.config.data_augment is True and trainer.loader.config.max_tiles_per_pack == 7


# -- the InternVL writer's meta.json -------------------------------------------------------------
def test_internvl_meta_root_and_data_augment_are_written_as_asked(tmp_path):
    from v2pe_common.formats.internvl import meta_entries, read_internvl_samples
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig

    args = dict(length=2048, min_length=512, num_samples=2, shard_size=1, max_tiles=1, seed=3,
                formats=["wds", "internvl"])
    build(BuildConfig(**args, out=str(tmp_path / "rel")), show_progress=False)
    build(BuildConfig(**args, out=str(tmp_path / "abs"), internvl_root="absolute", internvl_augment=True),
          show_progress=False)
    (name, rel), = json.loads((tmp_path / "rel" / "internvl" / "meta.json").read_text()).items()
    assert rel["root"] == "." and rel["annotation"] == f"{name}.jsonl" and rel["data_augment"] is False
    (_, ab), = json.loads((tmp_path / "abs" / "internvl" / "meta.json").read_text()).items()
    root = (tmp_path / "abs" / "internvl").resolve()
    assert ab["root"] == str(root) and ab["annotation"] == str(root / f"{name}.jsonl") and ab["data_augment"] is True
    assert [e[1:] for e in meta_entries(root / "meta.json")] == [(root, root / f"{name}.jsonl")]
    assert len(list(read_internvl_samples(root))) == 2
    # the defaults keep a build's identity (and build_id) as it was before the keys existed
    assert "internvl_root" not in BuildConfig(**args).identity()
    assert BuildConfig(**args, internvl_root="absolute").identity()["internvl_root"] == "absolute"
    with pytest.raises(ConfigError, match="internvl_root"):
        BuildConfig.from_dict({**args, "internvl_root": "upward"})


# -- recipes -------------------------------------------------------------------------------------
PUBLISHED_32K = dict(  # V2PE's published 32K run: its shell/internlm2_2b/*.sh and zero_stage3_config.json
    lr=5e-6, min_lr=0.0, warmup_ratio=0.03, weight_decay=0.05, weight_decay_all=True, betas=[0.9, 0.999],
    eps=1e-8, max_steps=20000, max_seq_len=34000, max_tiles_per_pack=135, drop_path_rate=0.1, data_augment=True,
    loss_reduction="square", position_mode="v2pe_rnd", gradient_checkpointing=True, freeze_vision=False,
    freeze_projector=False, freeze_language=False, grad_accum=1, grad_clip=1.0, save_every=2500, cp=1)


def test_the_32k_recipe_matches_the_published_one_point_by_point():
    cfg = TrainConfig.from_yaml(RECIPES / "train_32k.yaml", {"model": "m", "data": ["d"]})
    assert {k: _by_name(cfg)[k] for k in PUBLISHED_32K} == PUBLISHED_32K


def _by_name(cfg) -> dict:
    """Every key of a training config by its name alone (lr, not optim.lr), as the published scripts name them."""
    from v2pe_train.config import saved_settings

    return saved_settings(cfg.to_dict())


def test_both_256k_recipes_are_the_32k_recipe_plus_ring_over_8():
    paper = TrainConfig.from_yaml(RECIPES / "train_256k_paper.yaml", {"model": "m", "data": ["d"]})
    released = TrainConfig.from_yaml(RECIPES / "train_256k_released.yaml", {"model": "m", "data": ["d"]})
    default = TrainConfig.from_yaml(RECIPES / "train_256k.yaml", {"model": "m", "data": ["d"]})
    assert default.to_dict() == paper.to_dict()  # `make train-256k` runs the paper's recipe
    assert paper.parallel.cp == released.parallel.cp == 8
    assert released.data.max_seq_len == 34000 and released.data.max_tiles_per_pack == 135  # the released script
    assert paper.data.max_seq_len == 262144  # the paper's 256K-token samples
    same = {k: v for k, v in PUBLISHED_32K.items() if k not in ("max_seq_len", "max_tiles_per_pack", "cp")}
    for cfg in (paper, released):
        assert {k: _by_name(cfg)[k] for k in same} == same


def test_the_loader_augments_when_asked_and_keeps_tokens():
    """`data_augment` reaches the loader's tiles: the same build read with and without it gives the same
    tokens and different pixels, and the same pixels again with the same seed."""
    import tempfile

    import torch

    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig
    from v2pe_train.data import LoaderConfig, PackedLoader

    with tempfile.TemporaryDirectory() as tmp:
        build(BuildConfig(length=2048, min_length=512, max_tiles=2, num_samples=2, shard_size=2, out=tmp, seed=9),
              show_progress=False)

        def batches(augment):
            return list(PackedLoader(LoaderConfig(paths=[tmp], shuffle=False, pixel_dtype="fp32",
                                                  data_augment=augment)))

        plain, aug, again = batches(False), batches(True), batches(True)
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(plain, aug))
    assert any(not torch.equal(a.pixel_values, b.pixel_values) for a, b in zip(plain, aug))
    assert all(torch.equal(a.pixel_values, b.pixel_values) for a, b in zip(aug, again))


def test_long_mr_recipes_share_subsets_by_v2pe_rows_times_repeat_time():
    """V2PE's loader draws a subset in proportion to its rows x repeat_time: the shares are derived here from
    the counts the recipe's header quotes from V2PE's meta file, and checked against the published figures."""
    import re

    import yaml

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "recipes" / "long_mr_32k.yaml").read_text()
    quoted = {m[0]: float(m[1]) * float(m[2])
              for m in re.findall(r"#   v2pe: (\w+) rows (\d+) repeat ([\d.]+)", text)}
    assert len(quoted) == 8
    total = sum(quoted.values())
    derived = {k: v / total for k, v in quoted.items()}
    # the figures: 7.1 %, 15.9 % for each 4.5x subset of 30K rows, 10.6 %, 10.6 %, 8.0 %
    assert round(100 * derived["text_retrieval"], 1) == 7.1
    assert {round(100 * derived[k], 1) for k in ("image_retrieval", "text_counting", "text_reasoning",
                                                 "image_counting")} == {15.9}
    assert round(100 * derived["image_reasoning_jigsaw"], 1) == round(100 * derived["image_reasoning_colour_pair"], 1) == 10.6
    assert round(100 * derived["text_retrieval_fake"], 1) == 8.0
    for name in ("long_mr_32k", "long_mr_128k", "long_mr_256k"):
        shares = yaml.safe_load((repo / "recipes" / f"{name}.yaml").read_text())["options"]["subset"]
        total = sum(shares.values())
        assert {k: v / total for k, v in shares.items()} == pytest.approx(derived), name
