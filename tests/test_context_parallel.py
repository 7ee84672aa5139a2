"""cp = 2 (zigzag ring over gloo, vision tiles split and gathered) equals cp = 1 on one long sample."""

import pytest
import torch

from tests.distributed import run_distributed
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.config import TrainConfig
from v2pe_train.parallel.mesh import Topology
from v2pe_train.parallel.context import ContextParallel
from v2pe_train.train import Trainer


@pytest.fixture(scope="module")
def long_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp") / "one"
    build(BuildConfig(length=4096, min_length=2048, num_samples=1, shard_size=1, max_tiles=3, out=str(out), seed=2),
          show_progress=False)
    return str(out)


def config(data, out, cp, reduction="square"):
    return dict(model="tiny", data=[data], out=str(out), max_seq_len=4096, position_mode="v2pe_rnd", lr=1e-3,
                max_steps=1, loss_reduction=reduction, precision="fp32", seed=3, cp=cp, ring_backend="torch")


def loss_and_grads(trainer):
    batch = next(iter(trainer.loader))
    total, denom, _ = trainer.backward([batch])
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(total), denom, grads, batch.num_tokens


def _cp_worker(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=world))
    assert isinstance(trainer.loss_module.module.cp, ContextParallel)
    return loss_and_grads(trainer)


@pytest.mark.parametrize("reduction", ["square", "token"])
def test_cp2_loss_and_parameter_gradients_equal_cp1(long_sample, tmp_path, reduction):
    one_loss, one_denom, one_grads, tokens = loss_and_grads(Trainer(TrainConfig(**config(long_sample, tmp_path / "a", 1, reduction))))
    results = run_distributed(_cp_worker, world=2, args=(config(long_sample, tmp_path / "b", 2, reduction),), timeout=240)
    assert tokens > 2048
    cp_loss = sum(r[0] for r in results)  # each rank's CE sum covers its zigzag half of the tokens
    assert results[0][1] == results[1][1] == pytest.approx(one_denom)
    assert cp_loss / one_denom == pytest.approx(one_loss / one_denom, rel=1e-5)
    for name, g in one_grads.items():
        torch.testing.assert_close(results[0][2][name], g, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(results[1][2][name], results[0][2][name], rtol=0, atol=0, msg=name)


def test_bad_parallel_configurations_fail_fast_with_one_message(tmp_path):
    from v2pe_train.train import TrainError, preflight

    with pytest.raises(ValueError, match="world size 3 is not divisible by cp=2"):
        Topology(rank=0, world=3, cp=2)
    with pytest.raises(TrainError, match="need sequences of at least 16 tokens"):
        preflight(TrainConfig(model="tiny", data=[str(tmp_path)], cp=8, max_seq_len=8))
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="'flash' needs CUDA"):
            preflight(TrainConfig(model="tiny", data=[str(tmp_path)], cp=2, ring_backend="flash"))


def test_dp_and_cp_ranks_follow_consecutive_cp_blocks():
    topo = [Topology(rank=r, world=4, cp=2) for r in range(4)]
    assert [(t.dp_rank, t.cp_rank) for t in topo] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {t.dp for t in topo} == {2}


def _dp_cp_worker(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=2))
    return loss_and_grads(trainer)


@pytest.mark.slow
def test_dp2_by_cp2_equals_one_process_on_the_same_global_batch(tmp_path_factory, tmp_path):
    """4 processes: 2 data-parallel groups of a 2-rank ring; one process with grad_accum=2 sees both samples."""
    data = tmp_path_factory.mktemp("dpcp") / "two"
    build(BuildConfig(length=4096, min_length=2048, num_samples=2, shard_size=2, max_tiles=3, out=str(data), seed=2),
          show_progress=False)
    one = Trainer(TrainConfig(**{**config(str(data), tmp_path / "a", 1), "grad_accum": 2}))
    it = iter(one.loader)
    total, denom, _ = one.backward([next(it), next(it)])
    grads = {n: p.grad.detach().clone() for n, p in one.model.named_parameters() if p.grad is not None}
    results = run_distributed(_dp_cp_worker, world=4, args=(config(str(data), tmp_path / "b", 2),), timeout=600)
    assert sum(r[0] for r in results) / results[0][1] == pytest.approx(float(total) / denom, rel=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(results[0][2][name], g, rtol=1e-5, atol=1e-5, msg=name)


def test_the_varlen_path_equals_the_block_mask_on_a_packed_batch(tmp_path_factory, tmp_path):
    """cp = 1 with attention 'varlen' (cu_seqlens, what GPUs use) == the L x L block mask, on a 2-sample pack."""
    data = tmp_path_factory.mktemp("varlen") / "pack"
    build(BuildConfig(length=3072, min_length=1024, num_samples=2, shard_size=2, max_tiles=2, out=str(data), seed=9),
          show_progress=False)
    results = {}
    for attention in ("mask", "varlen"):
        cfg = {**config(str(data), tmp_path / attention, 1), "max_seq_len": 8192, "attention": attention}
        trainer = Trainer(TrainConfig(**cfg))
        assert (trainer.loss_module.cp is not None) == (attention == "varlen")
        batch = next(iter(trainer.loader))
        assert batch.num_samples == 2  # both samples share the pack
        total, denom, _ = trainer.backward([batch])
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results[attention] = (float(total), denom, grads)
    assert results["varlen"][0] == pytest.approx(results["mask"][0], rel=1e-5)
    for name, g in results["mask"][2].items():
        torch.testing.assert_close(results["varlen"][2][name], g, rtol=1e-5, atol=1e-5, msg=name)
