"""Checkpoints and `v2pe-train export` folders load with stock transformers and give the trainer's logits."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

import pytest
import torch

from tests.conftest import BIN
from v2pe_common.formats import read_records
from v2pe_common.template import get_template
from v2pe_common.tokenizer import load_tokenizer, tokenizer_hash
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train import checkpoint as ckpt
from v2pe_train.config import TrainConfig
from v2pe_train.data.shards import iter_samples, resolve_sources
from v2pe_train.eval.inference import V2PEGenerator, v2pe_position_ids
from v2pe_train.eval.run import load_generator
from v2pe_train.export import ExportError, export
from v2pe_train.model import forward
from v2pe_train.rope import install_float64_rope
from v2pe_train.train import Trainer, train
from tests.deadline import CLI_DEADLINE

RUN_STATE = ("optimizer.pt", "scheduler.pt", "rng_rank0.pt", "loader_rank0.json", "meta.json")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny two-step training run with a checkpoint at each step."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    build(BuildConfig(length=3072, min_length=1024, num_samples=2, shard_size=4, max_tiles=2, out=str(data), seed=11),
          show_progress=False)
    cfg = TrainConfig(model="tiny", data=[str(data)], out=str(root / "run"), max_seq_len=3072,
                      position_mode="v2pe_rnd", lr=3e-3, warmup_ratio=0.0, max_steps=2, save_every=1,
                      precision="fp32", seed=5)
    train(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def trained(run):
    """The trainer's own model at the latest step (restored by resume) and one real V2PE batch."""
    trainer = Trainer(run)
    assert trainer.resume()
    batch = next(iter(trainer.loader))
    trainer.model.eval()
    with torch.no_grad():
        logits = forward(trainer.model, batch.input_ids, batch.position_ids, pixel_values=batch.pixel_values,
                         sample_lengths=[batch.sample_lengths.tolist()])
    return trainer, batch, logits


def _from_pretrained_logits(directory, batch):
    from transformers import InternVLForConditionalGeneration

    model, info = InternVLForConditionalGeneration.from_pretrained(str(directory), output_loading_info=True)
    install_float64_rope(model)
    model.eval()
    with torch.no_grad():
        logits = forward(model, batch.input_ids, batch.position_ids, pixel_values=batch.pixel_values,
                         sample_lengths=[batch.sample_lengths.tolist()])
    return model, info, logits


def _assert_clean_load(info):
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_a_checkpoint_loads_with_from_pretrained_and_gives_the_trainers_logits(run, trained):
    trainer, batch, expected = trained
    step_dir = ckpt.latest_checkpoint(run.out)
    model, info, logits = _from_pretrained_logits(step_dir, batch)
    _assert_clean_load(info)
    assert model.config.image_token_id == trainer.tokenizer.img_context_id
    assert model.config.text_config.vocab_size == trainer.tokenizer.vocab_size
    assert (step_dir / "chat_template.jinja").is_file()
    assert batch.input_ids.eq(trainer.tokenizer.img_context_id).any()  # the batch exercises the vision path
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_a_checkpoint_holds_the_run_tokenizer_with_its_image_tokens(run, trained):
    from transformers import AutoTokenizer

    trainer = trained[0]
    tok = AutoTokenizer.from_pretrained(str(ckpt.latest_checkpoint(run.out)), local_files_only=True)
    assert len(tok) == trainer.tokenizer.vocab_size
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == trainer.tokenizer.img_context_id
    text = "Where is the needle?"
    assert tok.encode(text, add_special_tokens=False) == trainer.tokenizer.encode(text)
    turns = [("human", " Hi "), ("gpt", "Hello."), ("human", "How many images?\n"), ("gpt", "2")]
    trained_text = tok.bos_token + "".join(p for p, _ in get_template("internlm2-chat").pieces(
        [{"from": r, "value": v} for r, v in turns]))
    messages = [{"role": "user" if r == "human" else "assistant", "content": v} for r, v in turns]
    assert tok.apply_chat_template(messages, tokenize=False) == trained_text
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert trained_text.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")


def test_export_writes_a_clean_folder_that_from_pretrained_and_the_generator_load(run, trained, tmp_path):
    trainer, batch, expected = trained
    out = export(run.out, tmp_path / "model")
    assert not [name for name in RUN_STATE if (out / name).exists()]
    model, info, logits = _from_pretrained_logits(out, batch)
    _assert_clean_load(info)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    gen = V2PEGenerator.load(out)
    params = dict(gen.model.named_parameters())
    assert all(torch.equal(params[k], p) for k, p in trainer.model.named_parameters())


def test_the_documented_inference_call_on_an_export_answers_as_the_run_does(run, tmp_path):
    """README: `V2PEGenerator.load(dir)` + `generate(prompt, stride=64)` on an export = the run's own checkpoint."""
    out = export(run.out, tmp_path / "model")
    record, images = next(read_records(iter_samples(resolve_sources(run.data.paths)[0])))[1:]
    ours = V2PEGenerator.load(out)
    theirs = load_generator(run.out)
    a = ours.generate(ours.prepare(record, images), stride=64, max_new_tokens=4, return_logits=True)[0]
    b = theirs.generate(theirs.prepare(record, images), stride=64, max_new_tokens=4, return_logits=True)[0]
    assert a.logits.shape[0] >= 1 and a.token_ids == b.token_ids
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


def test_checkpoints_and_exports_carry_the_image_processor_and_the_builds_tokenizer_hash(run, tmp_path):
    """AutoImageProcessor loads (no torchvision) at the run's tile cap (its build's manifest says 2); the
    tokenizer names its image tokens for InternVLProcessor without growing, and hashes as the build's did."""
    from transformers import AutoImageProcessor, AutoTokenizer

    out = export(run.out, tmp_path / "model")
    manifest = json.loads((Path(run.data.paths[0]) / "manifest.json").read_text())
    assert manifest["tiling"]["max_tiles"] == 2
    for folder in (ckpt.latest_checkpoint(run.out), out):
        processor = AutoImageProcessor.from_pretrained(str(folder))
        assert type(processor).__name__ == "GotOcr2ImageProcessorPil" and processor.max_patches == 2
        assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == "InternVLProcessor"
        tok = AutoTokenizer.from_pretrained(str(folder))
        assert (tok.start_image_token, tok.end_image_token, tok.context_image_token) == ("<img>", "</img>",
                                                                                       "<IMG_CONTEXT>")
        assert len(tok) == load_tokenizer().vocab_size
        assert tokenizer_hash(folder) == manifest["tokenizer"]["sha256"] == load_tokenizer().sha256


def test_the_readme_transformers_snippet_gives_the_generators_prompt_and_reply(run, tmp_path):
    """README: AutoTokenizer's chat template + AutoImageProcessor + `<img>`/`<IMG_CONTEXT>` x 256 x tiles/`</img>`
    give `prepare_question`'s ids and pixels; stock generate() with `v2pe_position_ids` gives its reply."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, InternVLForConditionalGeneration

    out = export(run.out, tmp_path / "model")
    record, images = next(read_records(iter_samples(resolve_sources(run.data.paths)[0])))[1:]
    pictures = [Image.open(io.BytesIO(images[name])) for name in record["images"]]
    question = "What is the total?"
    # -- the README snippet --
    tok, proc = AutoTokenizer.from_pretrained(out), AutoImageProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [*[{"type": "image"}] * len(pictures), {"type": "text", "text": question}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pixels = proc(images=pictures, return_tensors="pt")
    head, *rest = text.split("<IMG_CONTEXT>")  # one placeholder per image, in order
    text = head + "".join(f"<img>{'<IMG_CONTEXT>' * 256 * n}</img>{part}"
                          for n, part in zip(pixels["num_patches"].tolist(), rest))
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    model = install_float64_rope(InternVLForConditionalGeneration.from_pretrained(out))
    reply = model.generate(input_ids=ids, pixel_values=pixels["pixel_values"], attention_mask=torch.ones_like(ids),
                           position_ids=v2pe_position_ids(ids, tok, stride=16), max_new_tokens=6, do_sample=False)
    # -- the same through the generator --
    assert len(pictures) >= 2  # placeholders replaced in order
    gen = V2PEGenerator.load(out)
    prompt = gen.prepare_question(question, images=[images[name] for name in record["images"]])
    assert ids[0].tolist() == prompt.input_ids.tolist()
    torch.testing.assert_close(pixels["pixel_values"], prompt.pixel_values, rtol=0, atol=0)
    ours = gen.generate(prompt, stride=16, max_new_tokens=6)[0]
    assert ours.token_ids and reply[0, ids.shape[1]:].tolist()[:len(ours.token_ids)] == ours.token_ids
    np.testing.assert_array_equal(v2pe_position_ids(ids, tok, stride=16)[0].numpy(), ours.prompt_positions)


def test_export_of_an_earlier_step_differs_and_a_missing_step_is_named(run, tmp_path):
    from safetensors.torch import load_file

    first = export(run.out, tmp_path / "step1", step=1)
    last = export(run.out, tmp_path / "last")
    a, b = load_file(str(first / "model.safetensors")), load_file(str(last / "model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ExportError, match="no checkpoint at step 7"):
        export(run.out, tmp_path / "nope", step=7)
    assert not (tmp_path / "nope").exists()


def test_export_refuses_a_folder_that_holds_files(run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty folder"):
        export(run.out, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_the_export_command_writes_the_folder_and_reports_usage_errors_with_exit_2(run, tmp_path):
    cli = [str(BIN / "v2pe-train"), "export"]
    done = subprocess.run(cli + [run.out, str(tmp_path / "m"), "--step", "2"], capture_output=True, text=True,
                          timeout=CLI_DEADLINE)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["architectures"] == [
        "InternVLForConditionalGeneration"]
    bad = subprocess.run(cli + [str(tmp_path / "absent"), str(tmp_path / "n")], capture_output=True, text=True,
                         timeout=CLI_DEADLINE)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ") and "no checkpoint" in bad.stderr


def test_export_of_a_damaged_checkpoint_names_the_file_and_writes_nothing(run, tmp_path):
    step = tmp_path / "step_00000002"
    shutil.copytree(ckpt.latest_checkpoint(run.out), step)
    weights = step / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors: unreadable") as caught:
        export(step, tmp_path / "model")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "model").exists() and not (tmp_path / ".model.tmp").exists()
