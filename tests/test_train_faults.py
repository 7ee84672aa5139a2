"""How training runs and checkpoints fail: a run folder holds one run, resume never runs code from a checkpoint
nor resumes other settings, a full disk costs only the checkpoint being written, and every refusal is one
line (exit status 2 for usage errors, 1 for runtime failures)."""

import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from unittest import mock

import pytest
import torch
from typer.testing import CliRunner

from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train import checkpoint as ckpt
from v2pe_train.cli import app
from v2pe_train.config import ConfigError, TrainConfig
from v2pe_train.optim import build_optimizer, cosine_with_warmup
from v2pe_train.train import Trainer, TrainError, UsageError, preflight, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "small"
    build(BuildConfig(length=1024, min_length=512, num_samples=2, shard_size=4, max_tiles=1, out=str(out), seed=11),
          show_progress=False)
    return str(out)


def cfg(data, out, **kw):
    args = dict(model="tiny", data=[data], out=str(out), max_seq_len=1024, position_mode="v2pe_rnd", lr=3e-3,
                warmup_ratio=0.0, weight_decay=0.0, max_steps=2, save_every=1, precision="fp32", seed=5)
    args.update(kw)
    return TrainConfig(**args)


def steps(run: Path) -> list[int]:
    return [s for s, _ in ckpt.checkpoints(run)]


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args):
    return CliRunner().invoke(app, ["train", *args, "--quiet"])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- a run folder holds one run ----------------------------------------------------------------------


def test_a_new_run_into_a_folder_holding_a_run_is_refused_naming_what_differs_and_touches_nothing(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run), progress=False)
    before = digest_tree(run / ckpt.CKPT_DIR)
    with pytest.raises(UsageError, match=r"lr: 0\.003 saved, 0\.001 now.*--overwrite"):
        train(cfg(data, run, lr=1e-3), progress=False)
    with pytest.raises(UsageError, match="this config; pass --resume"):
        train(cfg(data, run), progress=False)
    assert digest_tree(run / ckpt.CKPT_DIR) == before
    assert logged_steps(run) == [1, 2]


def test_overwrite_deletes_the_earlier_runs_files_only_and_keep_last_keeps_the_new_checkpoints(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run, max_steps=4, keep_last=2), progress=False)
    assert steps(run) == [3, 4]
    (run / "notes.txt").write_text("mine")
    losses = train(cfg(data, run, max_steps=2, lr=1e-3, keep_last=2), overwrite=True, progress=False).losses
    assert len(losses) == 2
    assert steps(run) == [1, 2]  # the earlier run's steps 3 and 4 neither survive nor push these out
    assert logged_steps(run) == [1, 2]
    assert json.loads((run / "run.json").read_text())["identity"]["lr"] == 1e-3
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_refuses_a_checkpoint_of_other_settings_naming_each_key_but_allows_bookkeeping_changes(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run, max_steps=3), max_steps=1, progress=False)
    with pytest.raises(ckpt.RunMismatchError) as err:
        train(cfg(data, run, max_steps=3, lr=1e-3, seed=6), resume=True, progress=False)
    message = str(err.value)
    assert "\n" not in message and "step_00000001" in message
    assert "lr: 0.003 saved, 0.001 now" in message and "seed: 5 saved, 6 now" in message
    with pytest.raises(ckpt.RunMismatchError, match="max_steps: 3 saved, 2 now"):
        train(cfg(data, run, max_steps=2), resume=True, progress=False)
    result = train(cfg(data, run, max_steps=3, log_every=2, keep_last=1, strict=True), resume=True, progress=False)
    assert result.step == 3 and len(result.losses) == 2
    assert steps(run) == [3]


def test_a_finished_run_resumed_with_more_max_steps_goes_on_under_the_schedule_of_the_new_total(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run, max_steps=2, keep_last=2), progress=False)  # cosine over 2 steps: the lr is 0 at its end
    trainer = Trainer(cfg(data, run, max_steps=4, keep_last=2))
    assert trainer.resume() and trainer.step == 2
    # no warmup, cosine over 4 steps: the 3rd step trains at 3e-3 * (1 + cos(pi * 2 / 4)) / 2, not at the old 0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-3)
    result = trainer.fit(progress=False)
    assert result.step == 4 and len(result.losses) == 2
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["lr"] == pytest.approx(3e-3 * (1 - 0.5 ** 0.5) / 2)  # logged: the lr after the step
    assert json.loads((run / "run.json").read_text())["identity"]["max_steps"] == 4
    assert steps(run) == [3, 4]  # the extended run keeps its id, so keep_last prunes its earlier checkpoints
    with pytest.raises(ckpt.RunMismatchError, match="max_steps: 4 saved, 3 now"):
        train(cfg(data, run, max_steps=3), resume=True, progress=False)  # a shorter schedule stays refused
    with pytest.raises(UsageError, match="max_steps: 4 saved, 6 now"):
        train(cfg(data, run, max_steps=6), progress=False)  # without --resume, a longer run is another run


def test_keep_last_prunes_by_step_number_never_the_new_checkpoint_nor_another_runs(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    scheduler = cosine_with_warmup(optimizer, total_steps=10, warmup_ratio=0.0)
    foreign = ckpt.step_dir(tmp_path, 50)
    foreign.mkdir(parents=True)
    (foreign / "meta.json").write_text(json.dumps({"step": 50, "run_id": "other"}))

    def save(step):
        return ckpt.save_checkpoint(tmp_path, step, model=model, optimizer=optimizer, scheduler=scheduler,
                                    loader_state={}, keep_last=2, run_id="mine")

    for step in (99_999_998, 99_999_999, 100_000_000):  # past 8 digits, names no longer sort like steps
        written = save(step)
        assert written.is_dir()
    assert steps(tmp_path) == [50, 99_999_999, 100_000_000]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_100000000"


# -- resume never runs code from a checkpoint ----------------------------------------------------------


class PlantedPayload:
    """Unpickling this creates the file at `marker`, through a shell command or a bare open()."""

    def __init__(self, marker: str, via: str):
        self.marker, self.via = marker, via

    def __reduce__(self):
        if self.via == "shell":
            return (os.system, (f"touch '{self.marker}'",))
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name,via", [("rng_rank0.pt", "shell"), ("optimizer.pt", "open"), ("scheduler.pt", "shell")])
def test_a_crafted_pickle_in_a_checkpoint_is_refused_by_name_and_never_runs(data, tmp_path, name, via):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    args = ["--model", "tiny", "--data", data, "--out", str(run), "--max-steps", "2"]
    assert cli(*args, "--stop-after", "1").exit_code == 0
    planted = ckpt.latest_checkpoint(run) / name
    torch.save({"state": PlantedPayload(str(marker), via)}, planted)
    result = cli(*args, "--resume")
    assert not marker.exists()
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(planted) in line and "refusing to load" in line and "weights_only=False" not in line


@pytest.mark.parametrize("name", ["optimizer.pt", "model.safetensors", "meta.json", "loader_rank0.json"])
def test_a_damaged_checkpoint_file_is_a_runtime_failure_naming_the_file(data, tmp_path, name):
    run = tmp_path / "run"
    args = ["--model", "tiny", "--data", data, "--out", str(run), "--max-steps", "2"]
    assert cli(*args, "--stop-after", "1").exit_code == 0
    damaged = ckpt.latest_checkpoint(run) / name
    damaged.write_bytes(damaged.read_bytes()[: len(damaged.read_bytes()) // 2])
    result = cli(*args, "--resume")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(damaged) in line and "unreadable" in line


def test_checkpoints_hold_only_tensors_and_plain_values(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run, max_steps=1), progress=False)
    for path in sorted(ckpt.latest_checkpoint(run).glob("*.pt")):
        torch.load(path, weights_only=True)  # raises on any pickled object beyond the safe set


# -- a full disk -------------------------------------------------------------------------------------


def test_a_full_disk_during_a_save_names_the_checkpoint_and_cause_and_keeps_earlier_ones(data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(cfg(data, run, max_steps=3))
    trainer.fit(max_steps=1, progress=False)
    earlier = digest_tree(ckpt.step_dir(run, 1))
    real_save = torch.save

    def disk_fills(obj, fh, *args, **kw):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with mock.patch("torch.save", side_effect=disk_fills), pytest.raises(ckpt.CheckpointError) as err:
        trainer.fit(max_steps=2, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(ckpt.step_dir(run, 2)) in message and "No space left on device" in message
    assert not any(p.name.endswith(".tmp") for p in (run / ckpt.CKPT_DIR).iterdir())
    assert steps(run) == [1] and digest_tree(ckpt.step_dir(run, 1)) == earlier
    assert torch.save is real_save
    assert train(cfg(data, run, max_steps=3), resume=True, progress=False).step == 3


# -- what the command line says and returns ------------------------------------------------------------


def test_usage_errors_exit_2_and_runtime_failures_exit_1_with_one_error_line(data, tmp_path):
    run = str(tmp_path / "run")
    base = ["--model", "tiny", "--data", data, "--out", run, "--max-steps", "2"]
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("model: tiny\nbetas: ab\n")
    for args, where in ((["--recipe", str(bad_recipe), "--check-only"], "betas"),
                        (["--model", "tiny", "--data", str(tmp_path / "missing"), "--check-only"], "data"),
                        ([*base, "--stop-after", "-1"], "stop-after")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert where in result.stderr
    assert cli(*base).exit_code == 0
    refused = cli(*base, "--lr", "0.01")
    assert refused.exit_code == 2 and "--overwrite" in one_error_line(refused)
    with mock.patch("torch.save", side_effect=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))):
        full = cli(*base, "--overwrite")
    assert full.exit_code == 1 and "No space left on device" in one_error_line(full)


def test_every_recipe_key_can_be_set_on_the_command_line_as_key_value(data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: tiny}}\ndata: {{paths: [{data}], max_seq_len: 1024}}\n"
                      "optim: {lr: 0.01, max_steps: 5, precision: fp32}\n")
    run = tmp_path / "run"
    done = cli("--recipe", str(recipe), "optim.lr=1e-3", "sample.train_on_eos=false", "optim.betas=[0.9, 0.95]",
               "optim.max_steps=3", "--out", str(run), "--max-steps", "1")  # a flag wins over KEY=VALUE over the recipe
    assert done.exit_code == 0, done.output
    identity = json.loads((run / "run.json").read_text())["identity"]
    assert (identity["lr"], identity["train_on_eos"], identity["betas"], identity["max_steps"]) == \
        (1e-3, False, [0.9, 0.95], 1)
    assert json.loads((run / "config.json").read_text())["data"]["max_seq_len"] == 1024  # the section kept
    for setting, said in (("optim.max_step=2", "unknown key 'optim.max_step'; did you mean 'optim.max_steps'?"),
                          ("optim.lr=fast", "optim.lr: Input should be a valid number"),
                          ("lr", "'lr': expected KEY=VALUE"), ("lr=", "'lr=': expected KEY=VALUE"),
                          ("data.paths=[a", "data.paths: '[a' is not a YAML value")):
        refused = cli("--recipe", str(recipe), setting, "--check-only")
        assert refused.exit_code == 2 and said in one_error_line(refused), (setting, refused.stderr)


@pytest.mark.parametrize("failure", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                     torch.distributed.DistBackendError("NCCL error: unhandled system error")])
def test_a_failure_of_the_machine_or_a_bug_keeps_its_traceback_where_ours_are_one_line(data, tmp_path, failure):
    base = ["--model", "tiny", "--data", data, "--out", str(tmp_path / "run"), "--max-steps", "2"]
    with mock.patch("v2pe_train.train.Trainer.train_step", side_effect=failure):
        result = cli(*base)
    assert result.exit_code == 1 and result.exception is failure  # raised through, so Python prints its traceback
    assert "error:" not in result.stderr
    bug = RuntimeError("expected a 4-D input")  # not one of ours: a bug, whose traceback the report needs
    with mock.patch("v2pe_train.train.Trainer.train_step", side_effect=bug):
        other = cli(*base, "--overwrite")
    assert other.exit_code == 1 and other.exception is bug and "error:" not in other.stderr
    ours = TrainError("step 1: loss is nan")
    with mock.patch("v2pe_train.train.Trainer.train_step", side_effect=ours):
        known = cli(*base, "--overwrite")
    assert known.exit_code == 1 and one_error_line(known) == "error: step 1: loss is nan"


def test_stop_after_zero_trains_nothing_and_says_so(data, tmp_path):
    result = train(cfg(data, tmp_path / "run", max_steps=2), max_steps=0, progress=False)
    assert result.step == 0 and result.losses == []
    assert steps(tmp_path / "run") == []
    said = cli("--model", "tiny", "--data", data, "--out", str(tmp_path / "cli"), "--max-steps", "2",
               "--stop-after", "0")
    assert said.exit_code == 0 and "nothing to train" in said.stdout


def test_steps_replayed_after_a_kill_are_logged_once(data, tmp_path):
    run = tmp_path / "run"
    train(cfg(data, run, max_steps=4, save_every=2), max_steps=3, progress=False)
    # As if killed after logging step 3 (mid-way through a fourth row) and before its checkpoint was written.
    ckpt.step_dir(run, 3).rename(run / "gone")
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"step": 4, "lo')
    train(cfg(data, run, max_steps=4, save_every=2), resume=True, progress=False)
    assert logged_steps(run) == [1, 2, 3, 4]


# -- inputs named in one line ----------------------------------------------------------------------------


def test_an_empty_tokenizer_folder_is_named_as_holding_no_tokenizer_files(tmp_path, data):
    empty = tmp_path / "tok"
    empty.mkdir()
    expected = f"tokenizer: {empty} holds no tokenizer files (tokenizer.json / tokenizer_config.json / *.model)"
    with pytest.raises(ValueError) as err:
        load_tokenizer(str(empty))
    assert str(err.value) == expected
    with pytest.raises(UsageError) as err:
        preflight(TrainConfig(model="tiny", data=[data], tokenizer=str(empty)))
    assert str(err.value) == expected


@pytest.mark.parametrize("text,key", [
    ('betas: "ab"', "betas"), ("betas: [0.9, 1.0]", "betas"), ("betas: [0.9]", "betas"),
    ("betas: [.nan, 0.9]", "betas"), ("lr: .inf", "lr"), ("min_lr: .nan", "min_lr"), ("eps: .inf", "eps"),
    ("weight_decay: -.inf", "weight_decay"), ("grad_clip: .inf", "grad_clip"), ("warmup_ratio: .nan", "warmup_ratio"),
])
def test_float_keys_must_be_finite_and_betas_two_numbers_in_0_1(tmp_path, text, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: tiny\n{text}\n")
    with pytest.raises(ConfigError, match=f"{key}: "):
        TrainConfig.from_yaml(recipe)
    value = {"lr": float("inf"), "min_lr": float("nan")}.get(key)
    if value is not None:  # the Python API holds the same line
        with pytest.raises(ConfigError, match=f"{key}: Input should be a finite number"):
            TrainConfig(**{key: value})


def test_shards_edited_on_purpose_train_with_no_verify_shards(data, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(data, edited)
    shard = sorted(edited.rglob("*.tar"))[0]
    # Re-packed with new timestamps: the same samples, no longer the bytes the manifest's sha256 names.
    packed = io.BytesIO()
    with tarfile.open(shard) as old, tarfile.open(fileobj=packed, mode="w", format=old.format) as new:
        for member in old.getmembers():
            payload = old.extractfile(member).read()
            member.mtime += 1
            new.addfile(member, io.BytesIO(payload))
    shard.write_bytes(packed.getvalue())
    common = ["--model", "tiny", "--data", str(edited), "--max-steps", "1", "--strict"]
    checked = cli(*common, "--out", str(tmp_path / "a"))
    assert checked.exit_code == 1 and "sha256" in one_error_line(checked)
    assert cli(*common, "--out", str(tmp_path / "b"), "--no-verify-shards").exit_code == 0
