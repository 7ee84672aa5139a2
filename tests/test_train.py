"""The training loop: the loss falls on a small fixed set, resume is exact, DDP equals one process."""

import json
from pathlib import Path

import pytest
import torch

from tests.distributed import run_distributed
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train import checkpoint as ckpt
from v2pe_train.config import TrainConfig
from v2pe_train.parallel.mesh import Topology
from v2pe_train.train import Trainer, TrainError, preflight, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    build(BuildConfig(length=3072, min_length=1024, num_samples=4, shard_size=4, max_tiles=2, out=str(out), seed=11),
          show_progress=False)
    return str(out)


@pytest.fixture(scope="module")
def one_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "one"
    build(BuildConfig(length=3072, min_length=1024, num_samples=1, shard_size=4, max_tiles=2, out=str(out), seed=11),
          show_progress=False)
    return str(out)


def cfg(data, out, **kw):
    args = dict(model="tiny", data=[data], out=str(out), max_seq_len=3072, position_mode="v2pe_rnd", lr=3e-3,
                warmup_ratio=0.0, weight_decay=0.0, max_steps=12, save_every=100, loss_reduction="square",
                precision="fp32", seed=5)
    args.update(kw)
    return TrainConfig(**args)


def test_loss_falls_clearly_on_a_small_fixed_set(one_sample, tmp_path):
    losses = train(cfg(one_sample, tmp_path / "run", lr=1e-2, max_steps=8), progress=False).losses
    assert len(losses) == 8
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 9))
    assert any((tmp_path / "run" / "tb").iterdir())


def test_resuming_after_step_k_repeats_the_uninterrupted_losses_bit_for_bit(data, tmp_path):
    full = train(cfg(data, tmp_path / "full", max_steps=4, save_every=2), progress=False).losses
    first = train(cfg(data, tmp_path / "cut", max_steps=4, save_every=2), max_steps=2, progress=False).losses
    assert ckpt.latest_checkpoint(tmp_path / "cut").name == "step_00000002"
    rest = train(cfg(data, tmp_path / "cut", max_steps=4, save_every=2), resume=True, progress=False).losses
    assert first + rest == full  # exact equality: same floats, not approximately


def test_a_checkpoint_of_another_model_refuses_to_load(data, tmp_path):
    train(cfg(data, tmp_path / "run", max_steps=1, save_every=1), progress=False)
    trainer = Trainer(cfg(data, tmp_path / "run", max_steps=1, freeze_vision=True))
    trainer.model.model.language_model.layers = trainer.model.model.language_model.layers[:1]
    with pytest.raises(ckpt.CheckpointError, match="another model"):
        trainer.resume()


def _ddp_run(rank, world, group, config_dict):
    trainer = Trainer(TrainConfig(**config_dict), Topology(rank=rank, world=world, cp=1))
    result = trainer.fit(progress=False)
    return result.losses, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("attention", ["mask", "varlen"])
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(data, tmp_path, attention):
    # One shard of 4 samples, split by sample across 2 ranks: rank r takes samples r, r+2, ...
    # A single process with grad_accum=2 sees the same global batch at every step. With "varlen" each
    # rank's attention must stay on its own samples (a singleton group, never the DDP world).
    base = dict(model="tiny", data=[data], max_seq_len=3072, position_mode="v2pe_fix", stride=64, lr=1e-3,
                warmup_ratio=0.0, max_steps=2, save_every=100, loss_reduction="square", precision="fp32", seed=5,
                attention=attention)
    single = Trainer(TrainConfig(**base, out=str(tmp_path / "one"), grad_accum=2))
    one = single.fit(progress=False)
    two = run_distributed(_ddp_run, world=2, args=({**base, "out": str(tmp_path / "two")},), timeout=240)
    (losses0, params0), (losses1, params1) = two
    assert losses0 == losses1
    torch.testing.assert_close(torch.tensor(losses0), torch.tensor(one.losses), rtol=1e-5, atol=1e-6)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(params0[name], value, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(params1[name], params0[name], rtol=0, atol=0, msg=name)


def test_preflight_says_what_is_missing(tmp_path):
    with pytest.raises(TrainError, match="no checkpoint at"):
        preflight(TrainConfig(model=str(tmp_path / "nope"), data=[str(tmp_path)]))
    with pytest.raises(TrainError, match="does not exist"):
        preflight(TrainConfig(model="tiny", data=[str(tmp_path / "missing")]))
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="make train-tiny"):
            preflight(TrainConfig(model="tiny", data=[str(tmp_path)]), require_gpu=True)


def test_recipes_in_the_repo_load_and_name_bad_keys(tmp_path):
    root = Path(__file__).resolve().parents[1] / "recipes"
    TrainConfig.from_yaml(root / "tiny.yaml")
    cfg = TrainConfig.from_yaml(root / "train_32k.yaml", {"model": "m", "data": ["d"]})
    assert cfg.data.paths == ["d"] and cfg.data.max_seq_len == 34000  # a flag sets one key, not the section
    assert len(TrainConfig.from_yaml(root / "train_32k_mix.yaml", {"model": "m"}).data.datasets) == 2
    from v2pe_train.config import ConfigError

    with pytest.raises(ConfigError, match="model.name: .*expect --model"):
        TrainConfig.from_yaml(root / "train_32k.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        TrainConfig.from_yaml(bad)
    bad.write_text("model: {name: tiny}\noptim: {lr: fast}\n")
    with pytest.raises(ConfigError, match="optim.lr: Input should be a valid number"):
        TrainConfig.from_yaml(bad)


def test_the_repo_recipes_are_written_in_sections():
    import yaml

    from v2pe_train.config import SECTIONS, TOP_KEYS

    for path in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("t*.yaml")):
        if path.name.startswith(("train_", "tiny")):
            keys = set(yaml.safe_load(path.read_text()))
            assert keys <= set(SECTIONS) | set(TOP_KEYS), f"{path.name}: flat keys {sorted(keys - set(SECTIONS))}"


def test_a_recipe_reads_1e_3_as_a_number_and_a_typo_gets_the_key_it_meant(tmp_path):
    from v2pe_train.config import ConfigError

    recipe = tmp_path / "r.yaml"
    # PyYAML reads 1e-3 and 5E-4 (no dot) as strings; users write them for learning rates
    recipe.write_text("model: {name: tiny}\noptim:\n  lr: 1e-3\n  min_lr: 5E-4\n  weight_decay: '.5'\n")
    cfg = TrainConfig.from_yaml(recipe)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.weight_decay) == (1e-3, 5e-4, 0.5)
    for text, message in (("optim: {lr: 1e-3x}", "optim.lr: Input should be a valid number.*got '1e-3x'"),
                          ("optim: {lr: nan}", "optim.lr: Input should be a finite number"),
                          ("optim: {max_steps: 1e3}", "optim.max_steps: Input should be a valid integer"),
                          ("optim: {max_steps: true}", "optim.max_steps: expected a number, got True"),
                          ("optim: {max_step: 10}", r"unknown key 'optim.max_step'; did you mean 'optim.max_steps'\?"),
                          ("optim.max_step: 10", r"unknown key 'optim.max_step'; did you mean 'optim.max_steps'\?"),
                          ("max_step: 10", r"unknown key 'max_step'; did you mean 'optim.max_steps'\?"),
                          ("sample: {position_mode: v2pe_fix}", r"sample.stride: v2pe_fix needs stride in \[1, 2"),
                          ("zzz: 10", "unknown key 'zzz'; known keys")):
        recipe.write_text(f"model: {{name: tiny}}\n{text}\n")
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_yaml(recipe)


def test_flat_recipes_still_load_with_one_deprecation_line_a_key_and_the_same_run_id(tmp_path, caplog):
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: tiny\ndata: [out/a]\nlr: 1e-3\ncp: 2\nmax_seq_len: 8k\nposition_mode: v2pe_fix\n"
                    "stride: 16\nsave_every: 5\nout: runs/x\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: {name: tiny}\ndata: {paths: [out/a], max_seq_len: 8192}\noptim: {lr: 0.001}\n"
                      "parallel: {cp: 2}\nsample: {position_mode: v2pe_fix, stride: 16}\n"
                      "checkpoint: {save_every: 5}\nout: runs/x\n")
    with caplog.at_level("WARNING", logger="v2pe_train.config"):
        old = TrainConfig.from_yaml(flat)
    moved = [r.getMessage() for r in caplog.records]
    assert f"{flat}: key 'lr' is now 'optim.lr' (flat keys still load; write the section)" in moved
    assert len(moved) == 8  # one line a flat key; `out` is a key of the top level
    new = TrainConfig.from_yaml(nested)
    assert old == new and old.run_id() == new.run_id()
    # a run saved before the sections (flat config) is the same run to a nested config
    assert new.identity_changes(old.identity()) == [] and new.identity_changes(new.to_dict()) == []
    assert new.identity_changes({**old.identity(), "lr": 0.5}) == ["optim.lr: 0.5 saved, 0.001 now"]


def test_a_section_given_in_part_keeps_the_run_s_defaults_for_the_rest():
    cfg = TrainConfig.from_dict({"model": {"name": "tiny"}, "data": {"paths": ["a"]}, "sample": {"stride": None}})
    assert (cfg.data.max_seq_len, cfg.sample.position_mode) == (34000, "v2pe_rnd") == \
        (TrainConfig().data.max_seq_len, TrainConfig().sample.position_mode)
    assert TrainConfig(model="tiny", data=["x"]).run_id() == "9900e94147d5c3ec"  # the id it had before the sections


def test_settings_address_any_key_as_section_dot_key_over_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: tiny}\noptim: {lr: 1e-3, max_steps: 9}\n")
    cfg = TrainConfig.from_dict({"model": {"name": "tiny"}, "optim": {"lr": 1e-3, "max_steps": 9}}, "r",
                                {"optim.lr": "2e-4", "data.max_seq_len": "64k", "parallel.cp": 2})
    assert (cfg.optim.lr, cfg.optim.max_steps, cfg.data.max_seq_len, cfg.parallel.cp) == (2e-4, 9, 65536, 2)


def test_migrate_rewrites_a_flat_recipe_into_sections_keeping_its_comments(tmp_path):
    from typer.testing import CliRunner

    from v2pe_train.cli import app
    from v2pe_train.config import migrate

    text = ("# header line\nmodel: tiny   # the preset\n# the data, as built\ndata:\n  - out/a\nlr: 1e-3\n"
            "out: runs/x\ncp: 2\n")
    assert migrate(text) == ("# header line\nmodel:\n  name: tiny   # the preset\ndata:\n  # the data, as built\n"
                             "  paths:\n    - out/a\noptim:\n  lr: 1e-3\nparallel:\n  cp: 2\nout: runs/x\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    done = CliRunner().invoke(app, ["config", "migrate", str(recipe), "--write"])
    assert done.exit_code == 0, done.output
    assert TrainConfig.from_yaml(recipe) == TrainConfig.from_dict({"model": "tiny", "data": ["out/a"], "lr": 1e-3,
                                                                  "out": "runs/x", "cp": 2})


def test_config_show_lists_every_key_with_its_type_value_default_and_meaning(tmp_path):
    from typer.testing import CliRunner

    from v2pe_train.cli import app
    from v2pe_train.config import SECTIONS, TOP_KEYS, describe

    rows = describe(TrainConfig())
    assert all(r["help"] for r in rows)  # no key without its meaning
    assert len(rows) == sum(len(c.model_fields) for c in SECTIONS.values()) + len(TOP_KEYS)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: tiny}\noptim: {lr: 1e-3}\n")
    shown = CliRunner().invoke(app, ["config", "show", str(recipe), "optim.max_steps=7"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 * len(rows)
    by_key = {line.split(":")[0]: (line, lines[i + 1].strip()) for i, line in enumerate(lines) if i % 2 == 0}
    assert by_key["optim.lr"][0].split() == ["optim.lr:", "float", "0.001", "(default", "5e-06)"]
    assert by_key["optim.max_steps"][0].split()[:3] == ["optim.max_steps:", "int", "7"]
    assert by_key["data.max_seq_len"][0].split() == ["data.max_seq_len:", "int", "|", "None", "34000"]
    assert by_key["seed"][0].split() == ["seed:", "int", "0"] and "seed" in by_key["seed"][1]
    refused = CliRunner().invoke(app, ["config", "show", str(recipe), "optim.lrr=1"])
    assert refused.exit_code == 2 and "did you mean 'optim.lr'?" in refused.stderr
