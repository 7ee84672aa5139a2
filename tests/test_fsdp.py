"""FSDP2 (fully_shard over a dp_shard x cp mesh, gloo on CPU) trains like one process, and its sharded
checkpoints load at another world size."""

import json

import pytest
import torch

from tests.distributed import run_distributed
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.config import ConfigError, TrainConfig
from v2pe_train.parallel.mesh import MeshPlan, Topology
from v2pe_train.train import Trainer


@pytest.fixture(scope="module")
def long_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "one"
    build(BuildConfig(length=4096, min_length=2048, num_samples=1, shard_size=1, max_tiles=3, out=str(out), seed=2),
          show_progress=False)
    return str(out)


@pytest.fixture(scope="module")
def four_samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "four"
    build(BuildConfig(length=3072, min_length=1024, num_samples=4, shard_size=4, max_tiles=2, out=str(out), seed=11),
          show_progress=False)
    return str(out)


def full(tensor):
    """A DTensor shard gathered to the whole tensor; a plain tensor as it is."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().clone()


def _cp_worker(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=world))
    assert trainer.fsdp and not isinstance(trainer.loss_module, torch.nn.parallel.DistributedDataParallel)
    batch = next(iter(trainer.loader))
    total, denom, _ = trainer.backward([batch])
    grads = {n: full(p.grad) for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(total), denom, grads


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fsdp_with_cp2_gives_the_loss_and_gradients_of_one_process(long_sample, tmp_path, checkpointing):
    """Ring attention over the mesh's cp group, FSDP sharding over dp_shard x cp, optionally recomputing."""
    base = dict(model="tiny", data=[long_sample], max_seq_len=4096, position_mode="v2pe_rnd", lr=1e-3, max_steps=1,
                loss_reduction="square", precision="fp32", seed=3, ring_backend="torch")
    one = Trainer(TrainConfig(**base, out=str(tmp_path / "a")))
    batch = next(iter(one.loader))
    one_total, one_denom, _ = one.backward([batch])
    one_grads = {n: p.grad.detach().clone() for n, p in one.model.named_parameters() if p.grad is not None}
    results = run_distributed(_cp_worker, world=2, timeout=240,
                              args=({**base, "out": str(tmp_path / "b"), "cp": 2, "data_parallel": "fsdp",
                                     "gradient_checkpointing": checkpointing},))
    assert results[0][1] == results[1][1] == pytest.approx(one_denom)
    fsdp_loss = (results[0][0] + results[1][0]) / one_denom  # each rank sums the CE of its zigzag half
    assert fsdp_loss == pytest.approx(float(one_total) / one_denom, rel=1e-5)
    assert set(results[0][2]) == set(one_grads)
    for name, g in one_grads.items():
        torch.testing.assert_close(results[0][2][name], g, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(results[1][2][name], results[0][2][name], rtol=0, atol=0, msg=name)


def _fit_worker(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    result = trainer.fit(progress=False)
    return result.losses, {k: full(v) for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("accum", [1, 2])
def test_fsdp_over_two_ranks_trains_like_one_process_on_the_same_global_batch(four_samples, tmp_path, accum):
    # Rank r takes samples r, r+2, ...; one process with 2 x accum micro-batches sees the same global batch
    # each step. accum = 2 checks that gradient accumulation without sync still reduces the sum once.
    base = dict(model="tiny", data=[four_samples], max_seq_len=3072, position_mode="v2pe_fix", stride=64, lr=1e-3,
                warmup_ratio=0.0, max_steps=2, save_every=100, loss_reduction="square", precision="fp32", seed=5,
                attention="mask")
    single = Trainer(TrainConfig(**base, out=str(tmp_path / "one"), grad_accum=2 * accum))
    one = single.fit(progress=False)
    (losses0, params0), (losses1, params1) = run_distributed(
        _fit_worker, world=2, timeout=240,
        args=({**base, "out": str(tmp_path / "two"), "data_parallel": "fsdp", "grad_accum": accum},))
    assert losses0 == losses1
    torch.testing.assert_close(torch.tensor(losses0), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(params0[name], value, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(params1[name], params0[name], rtol=0, atol=0, msg=name)


def test_the_mesh_plan_splits_the_world_into_replicate_shard_and_cp():
    assert MeshPlan.for_topology(Topology(rank=0, world=8, cp=2)).shape == (1, 4, 2)
    assert MeshPlan.for_topology(Topology(rank=0, world=8, cp=2), dp_replicate=2).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="dp_replicate=3 must divide the data-parallel degree 4"):
        MeshPlan.for_topology(Topology(rank=0, world=8, cp=2), dp_replicate=3)


def test_an_unknown_data_parallel_mode_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="data_parallel"):
        TrainConfig(model="tiny", data_parallel="zero3")


def full_state(trainer):
    """(model, optimizer) state as whole tensors keyed by parameter name, whatever the sharding."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model, optim = get_state_dict(trainer.model, trainer.optimizer, options=StateDictOptions(full_state_dict=True))
    return ({k: full(v) for k, v in model.items()},
            {k: {n: full(t) if torch.is_tensor(t) else t for n, t in v.items()} for k, v in optim["state"].items()})


def assert_same_state(a, b):
    (model_a, optim_a), (model_b, optim_b) = a, b
    assert model_a.keys() == model_b.keys() and optim_a.keys() == optim_b.keys()
    assert optim_a and all("exp_avg" in v for v in optim_a.values())  # Adam moments, not an unstepped optimizer
    for name in model_a:
        torch.testing.assert_close(model_a[name], model_b[name], rtol=0, atol=0, msg=name)
    for name in optim_a:
        assert optim_a[name].keys() == optim_b[name].keys(), name
        for key in optim_a[name]:
            torch.testing.assert_close(optim_a[name][key], optim_b[name][key], rtol=0, atol=0, msg=f"{name} {key}")


def ckpt_config(data, out):
    return dict(model="tiny", data=[data], out=str(out), max_seq_len=3072, position_mode="v2pe_fix", stride=64,
                lr=1e-3, warmup_ratio=0.0, max_steps=4, save_every=2, loss_reduction="square", precision="fp32",
                seed=5, attention="mask", data_parallel="fsdp")


def _train_two_steps(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    trainer.fit(max_steps=2, progress=False)
    return full_state(trainer), trainer.scheduler.get_last_lr()


def _resume(rank, world, group, cfg):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    assert trainer.resume()
    return trainer.step, full_state(trainer), trainer.scheduler.get_last_lr()


def test_a_sharded_checkpoint_of_two_ranks_resumes_in_one_process_with_equal_model_and_optimizer(four_samples, tmp_path):
    cfg = ckpt_config(four_samples, tmp_path / "run")
    (saved, lr), _ = run_distributed(_train_two_steps, world=2, timeout=240, args=(cfg,))
    step = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert (step / "dcp" / ".metadata").is_file() and not (step / "optimizer.pt").exists()
    assert len(list((step / "dcp").glob("*.distcp"))) == 2  # each rank wrote its own shards
    one = Trainer(TrainConfig(**cfg))
    assert one.resume() and one.step == 2
    assert one.scheduler.get_last_lr() == lr
    assert_same_state(full_state(one), saved)
    # The export beside the shards is the whole model, gathered once: from_pretrained loads it as trained.
    from transformers import InternVLForConditionalGeneration

    assert json.loads((step / "config.json").read_text())["architectures"] == ["InternVLForConditionalGeneration"]
    exported = InternVLForConditionalGeneration.from_pretrained(step).state_dict()
    for name, value in saved[0].items():
        torch.testing.assert_close(exported[name], value, rtol=0, atol=0, msg=name)
    # Training goes on from the restored state: the next steps run and log after step 2.
    assert len(one.fit(progress=False).losses) == 2


def test_a_sharded_checkpoint_of_one_process_resumes_on_two_ranks_with_equal_model_and_optimizer(four_samples, tmp_path):
    cfg = ckpt_config(four_samples, tmp_path / "run")
    one = Trainer(TrainConfig(**cfg))
    one.fit(max_steps=2, progress=False)
    saved = full_state(one)
    results = run_distributed(_resume, world=2, timeout=240, args=(cfg,))
    for step, state, lr in results:
        assert step == 2 and lr == one.scheduler.get_last_lr()
        assert_same_state(state, saved)


def _fit(rank, world, group, cfg, max_steps, resume):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    if resume:
        assert trainer.resume()
    return trainer.fit(max_steps=max_steps, progress=False).losses


@pytest.mark.slow
def test_a_sharded_run_resumed_at_the_same_world_size_repeats_the_uninterrupted_losses_bit_for_bit(four_samples, tmp_path):
    full_run = run_distributed(_fit, world=2, timeout=240, args=(ckpt_config(four_samples, tmp_path / "full"), None, False))
    cut = ckpt_config(four_samples, tmp_path / "cut")
    first = run_distributed(_fit, world=2, timeout=240, args=(cut, 2, False))
    rest = run_distributed(_fit, world=2, timeout=240, args=(cut, None, True))
    assert len(full_run[0]) == 4
    assert first[0] + rest[0] == full_run[0]  # same floats: loader, RNG, model and optimizer all restored


def test_a_sharded_checkpoint_without_its_dcp_index_is_refused_naming_the_folder(four_samples, tmp_path):
    from v2pe_train.checkpoint import CheckpointError

    cfg = {**ckpt_config(four_samples, tmp_path / "run"), "max_steps": 1, "save_every": 1}
    Trainer(TrainConfig(**cfg)).fit(progress=False)
    (tmp_path / "run" / "checkpoints" / "step_00000001" / "dcp" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match=r"dcp: missing or incomplete \(no \.metadata\)"):
        Trainer(TrainConfig(**cfg)).resume()


# -- a rank whose micro-batch has no tile ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiles_and_text(tmp_path_factory):
    """Two one-sample shards: rank 0 reads one with images, rank 1 one without any."""
    from tests.test_cp_tiles import text_only
    from tests.test_loader import SAMPLES, write_shard

    out = tmp_path_factory.mktemp("tileless")
    write_shard(out / "tiles.tar", [SAMPLES[4]])
    write_shard(out / "text.tar", [text_only(1)])
    return [str(out / "tiles.tar"), str(out / "text.tar")]


def first_batch(shard):
    from tests.test_loader import TOK
    from v2pe_train.data import LoaderConfig, PackedLoader

    return next(iter(PackedLoader(LoaderConfig(paths=[shard], pixel_dtype="fp32", shuffle=False), TOK)))


def _tileless_worker(rank, world, group, cfg, shards):
    trainer = Trainer(TrainConfig(**cfg), Topology(rank=rank, world=world, cp=1))
    total, denom, _ = trainer.backward([first_batch(shards[rank])])
    return float(total), denom, {n: full(p.grad) for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("data_parallel,attention", [("fsdp", "mask"), ("fsdp", "varlen"), ("ddp", "mask")])
def test_a_rank_without_tiles_runs_the_step_with_the_others_and_gets_the_one_process_gradients(
        tiles_and_text, tmp_path, data_parallel, attention):
    """Rank 1's pack has no tile while rank 0's has: the vision tower's gathers (FSDP) and reductions (DDP)
    still match, so the step ends (a hang fails at the deadline), rank 1's loss is its text-only loss, and
    the gradients are those of one process on both packs."""
    base = dict(model="tiny", data=tiles_and_text, precision="fp32", seed=2, attention=attention, lr=1e-3,
                loss_reduction="token", max_steps=1)
    batches = [first_batch(s) for s in tiles_and_text]
    assert batches[0].total_tiles > 0 and batches[1].total_tiles == 0
    single = Trainer(TrainConfig(**base, out=str(tmp_path / "one")))
    _, denom, _ = single.backward(batches)
    grads = {n: p.grad.detach().clone() for n, p in single.model.named_parameters() if p.grad is not None}
    text_loss, _, _ = Trainer(TrainConfig(**base, out=str(tmp_path / "text"))).backward(batches[1:])
    results = run_distributed(_tileless_worker, world=2, timeout=60,
                              args=({**base, "out": str(tmp_path / "two"), "data_parallel": data_parallel},
                                    tiles_and_text))
    assert results[0][1] == results[1][1] == pytest.approx(denom)
    assert results[1][0] == pytest.approx(float(text_loss), rel=1e-6)
    assert any("vision_tower" in n for n in grads) and set(results[0][2]) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(results[0][2][name], g, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(results[1][2][name], results[0][2][name], rtol=0, atol=0, msg=name)
