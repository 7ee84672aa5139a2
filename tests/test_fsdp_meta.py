"""A preset about to be sharded is built on the meta device, sharded, then each rank allocates and initialises
only its shards (`build_model(device="meta")`, `apply_fsdp`, `materialise`): no rank ever holds all of an
8B model's fp32 weights."""

from __future__ import annotations

import pytest
import torch

from tests.distributed import run_distributed
from tests.test_loader import SAMPLES, TOK, write_shard
from v2pe_train import model as model_mod
from v2pe_train.config import TrainConfig
from v2pe_train.parallel.mesh import Topology
from v2pe_train.model import build_model, builds_on_meta, materialise, preset_parameter_count
from v2pe_train.rope import Float64RotaryEmbedding


def full(t):
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def rope_of(model) -> torch.Tensor:
    return model.model.language_model.rotary_emb.inv_freq_on(torch.device("cpu")).clone()


@pytest.mark.parametrize("preset", ["tiny", "8b"])
def test_a_preset_built_on_meta_allocates_no_weight(preset):
    model = build_model(preset, TOK, device="meta", freeze_vision=True)
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.is_meta for t in tensors)
    assert sum(p.numel() for p in model.parameters()) == preset_parameter_count(preset, TOK.vocab_size, TOK.img_context_id)
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())  # freezes still apply
    assert isinstance(model.model.language_model.rotary_emb, Float64RotaryEmbedding)


def test_only_large_presets_are_built_on_meta_by_the_trainer(tmp_path):
    assert builds_on_meta("8b", TOK) and builds_on_meta("2b", TOK)
    assert not builds_on_meta("tiny", TOK)  # eager: its init equals a one-process run's
    assert not builds_on_meta(str(tmp_path), TOK)  # a checkpoint folder loads its weights


def _meta_worker(rank, world, group, seed):
    from v2pe_train.parallel.apply import apply_fsdp
    from v2pe_train.parallel.mesh import build_mesh, shard_rank

    device = torch.device("cpu")
    mesh = build_mesh(Topology(rank=rank, world=world, cp=1), device)
    out = []
    for _ in range(2):  # the same seed twice: the same shards
        model = build_model("tiny", TOK, device="meta", seed=seed, freeze_vision=True)
        apply_fsdp(model, model, mesh, device)
        materialise(model, device, seed=seed, stream=shard_rank(mesh))
        out.append({n: full(p) for n, p in model.named_parameters()})
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    # through the root's forward, as FSDP wants (its hooks gather the root group)
    logits = model(input_ids=ids, position_ids=torch.arange(6.0, dtype=torch.float64)[None],
                   attention_mask=torch.ones_like(ids), use_cache=False).logits
    logits.float().logsumexp(-1).sum().backward()
    grads_finite = all(torch.isfinite(full(p.grad)).all() for p in model.parameters() if p.grad is not None)
    return out, rope_of(model), bool(torch.isfinite(logits).all()) and grads_finite


def test_a_tiny_model_built_on_meta_sharded_and_materialised_runs_like_an_eager_one():
    """Forward and backward run, the parameter count and names match an eager build, the float64 rope equals
    the eager one, each rank drew its own shards, and the same seed gives the same weights. The weights are
    NOT the eager build's (see `materialise`), but drawn from the same distributions."""
    eager = build_model("tiny", TOK, seed=3)
    results = run_distributed(_meta_worker, world=2, args=(3,), timeout=90)
    (first, again), rope, ok = results[0]
    assert ok and results[1][2]
    for r in results:
        torch.testing.assert_close(r[1], rope_of(eager), rtol=0, atol=0)
        for name in first:
            torch.testing.assert_close(r[0][0][name], first[name], rtol=0, atol=0)  # all ranks: one model
    params = dict(eager.named_parameters())
    assert first.keys() == params.keys()
    assert sum(t.numel() for t in first.values()) == sum(p.numel() for p in params.values())
    for name, value in first.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0, msg=name)
        assert value.shape == params[name].shape
        if value.dim() == 2 and value.numel() >= 2048:  # the normal(0, 0.02) matrices
            half = value.shape[0] // 2
            assert not torch.equal(value[:half], value[half : 2 * half]), name  # rank 1 did not repeat rank 0
            assert value.std().item() == pytest.approx(params[name].std().item(), rel=0.2), name
            assert not torch.equal(value, params[name].detach())


def _trainer_worker(rank, world, group, cfg):
    from v2pe_train.train import Trainer

    model_mod.META_INIT_MIN_PARAMS = 0  # the tiny preset takes the large presets' path
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    assert not any(t.is_meta for t in trainer.model.parameters())
    result = trainer.fit(progress=False)
    return result.losses


def test_the_trainer_shards_a_meta_built_preset_and_trains_it(tmp_path):
    shard = tmp_path / "train-000000.tar"
    write_shard(shard, SAMPLES[:4])
    cfg = dict(model="tiny", data=[str(shard)], out=str(tmp_path / "run"), data_parallel="fsdp", precision="fp32",
               max_steps=2, save_every=100, lr=1e-3, seed=4, attention="mask")
    losses = run_distributed(_trainer_worker, world=2, args=(cfg,), timeout=120)
    assert losses[0] == losses[1] and len(losses[0]) == 2
    assert all(torch.isfinite(torch.tensor(x)) for x in losses[0])
