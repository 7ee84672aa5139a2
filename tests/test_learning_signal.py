"""What the trainer feeds the model for a retrieval task, checked where a silent bug would stop learning.

The answer of a packed sample must see its own needle and nothing of the samples packed beside it (in both
attention paths); the end-of-turn target is there unless `train_on_eos` is off; the prompt evaluation
answers equals the training sequence up to the answer; and `v2pe-train inspect` shows all of it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from v2pe_common import encoding
from v2pe_common.formats import read_records
from v2pe_common.template import get_template
from v2pe_common.tokenizer import load_tokenizer
from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_train.config import TrainConfig
from v2pe_train.data import LoaderConfig, PackedLoader
from v2pe_train.data.shards import iter_samples, resolve_sources
from v2pe_train.loss import shift_labels
from v2pe_train.train import Trainer

TOK = load_tokenizer()
TEXT_HAYSTACK = {"kind": "synthetic", "paragraphs": [1, 1], "sentences": [1, 2], "images": [0, 0]}


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    """Six Long-MR text-retrieval records of 120-400 tokens (bundled tokenizer, ChatML)."""
    out = tmp_path_factory.mktemp("retrieval") / "build"
    build(BuildConfig(task="long_mr", length=400, min_length=120, num_samples=6, shard_size=6, out=str(out),
                      seed=3, template="chatml", max_tiles=1,
                      options={"subset": "text_retrieval", "haystack": TEXT_HAYSTACK}), show_progress=False)
    return str(out)


def _first_pack(data: str, **kw):
    loader = PackedLoader(LoaderConfig(paths=[data], max_seq_len=2048, shuffle=False, num_epochs=1,
                                       pixel_dtype="fp32", **kw), TOK)
    return next(iter(loader))


def test_the_end_of_turn_marker_is_a_target_unless_train_on_eos_is_off():
    convs = [{"from": "human", "value": "What is the password?"}, {"from": "gpt", "value": "falcon"}]
    template = get_template("chatml")
    eot = TOK.encode("<|im_end|>")[0]
    on = encoding.encode(convs, [], TOK, template)
    off = encoding.encode(convs, [], TOK, template, supervise_end_of_turn=False)
    answer = TOK.encode("falcon")
    assert np.array_equal(on.input_ids, off.input_ids)
    assert on.labels[on.labels != -100].tolist() == answer + [eot]
    assert off.labels[off.labels != -100].tolist() == answer
    # with the prompt supervised too, no end-of-turn marker anywhere is a target
    both = encoding.encode(convs, [], TOK, template, supervise_prompt=True, supervise_end_of_turn=False)
    assert eot in both.input_ids.tolist() and eot not in both.labels.tolist()


def test_the_loader_applies_train_on_eos_to_every_sample(retrieval):
    eot = TOK.encode("<|im_end|>")[0]
    with_eos, without = _first_pack(retrieval), _first_pack(retrieval, train_on_eos=False)
    assert with_eos.num_samples == without.num_samples == 6
    assert int((with_eos.labels == eot).sum()) == 6 and int((without.labels == eot).sum()) == 0
    assert int(without.num_supervised.sum()) == int(with_eos.num_supervised.sum()) - 6


@pytest.mark.parametrize("attention", ["mask", "varlen"])
def test_an_answer_sees_its_own_needle_and_nothing_of_the_samples_packed_beside_it(retrieval, tmp_path, attention):
    """The gradient of one sample's answer loss reaches every token before it in its own sample (the needle
    included) and is exactly zero on every token of the other samples in the pack."""
    trainer = Trainer(TrainConfig(model="tiny", data=[retrieval], out=str(tmp_path / "run"), max_seq_len=2048,
                                  position_mode="default", precision="fp32", seed=0, attention=attention,
                                  template="chatml"))
    batch = _first_pack(retrieval)
    bounds = batch.cu_seqlens.tolist()
    k = 2  # a sample in the middle of the pack
    labels = batch.labels.clone()
    labels[0, :bounds[k]] = -100
    labels[0, bounds[k + 1]:] = -100
    answer_at = int((labels[0] != -100).nonzero()[0])
    seen = []
    embed = trainer.model.get_input_embeddings()

    def keep(_module, _inputs, out):
        out.retain_grad()
        seen.append(out)

    hook = embed.register_forward_hook(keep)
    shifted = shift_labels(labels)
    weights = (shifted != -100).float()
    try:
        ce = trainer.loss_module(batch.input_ids, batch.position_ids, None, [batch.sample_lengths.tolist()],
                                 shifted, weights)
        ce.backward()
    finally:
        hook.remove()
    assert len(seen) == 1 and float(ce.detach()) > 0
    local = seen[0].grad.reshape(-1, seen[0].shape[-1]).abs().sum(-1)
    grad = torch.zeros(batch.num_tokens)
    if attention == "varlen":  # the ring path pads each sample and orders rows by its own index set
        cp = trainer.loss_module.cp
        layout, _, idx, *_ = cp.shard(bounds, batch.input_ids, batch.position_ids, shifted, weights)
        origin = layout.pad(torch.arange(batch.num_tokens), -1)[idx]
        grad[origin[origin >= 0]] = local[origin >= 0]
    else:
        grad = local
    assert torch.all(grad[bounds[k]:answer_at] > 0), "a token before the answer in its own sample is not seen"
    outside = torch.cat([grad[:bounds[k]], grad[bounds[k + 1]:]])
    assert torch.count_nonzero(outside) == 0, "the answer's loss reaches another sample of the pack"
    # the needle sentence lies inside the reachable span
    needle = _records(retrieval)[batch.ids[k]][0]["meta"]["needles"][0]["text"]
    assert needle in TOK.hf.decode(batch.input_ids[0, bounds[k]:answer_at].tolist())


def _records(data: str) -> dict:
    """{id: (record, images)} of a one-shard build."""
    return {key: (rec, imgs) for key, rec, imgs in read_records(iter_samples(resolve_sources([data])[0]))}


def test_the_evaluated_prompt_is_the_training_sequence_up_to_the_answer(retrieval):
    from v2pe_train.eval.inference import V2PEGenerator

    gen = V2PEGenerator.load("tiny", seed=0)
    batch = _first_pack(retrieval)
    bounds = batch.cu_seqlens.tolist()
    by_id = _records(retrieval)
    for k, sample_id in enumerate(batch.ids):
        record, images = by_id[sample_id]
        prompt = gen.prepare(record, images)
        ids = batch.input_ids[0, bounds[k]:bounds[k + 1]].tolist()
        answer_at = bounds[k] + int((batch.labels[0, bounds[k]:bounds[k + 1]] != -100).nonzero()[0])
        assert prompt.input_ids.tolist() == ids[:answer_at - bounds[k]]
        assert prompt.answer_ids.tolist() == TOK.encode(record["conversations"][-1]["value"])


def test_inspect_prints_each_token_with_its_position_and_marks_the_targets(retrieval, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: tiny\ndata: [{retrieval}]\nmax_seq_len: 2048\ntrain_on_eos: false\n"
                      "template: chatml\n")
    proc = subprocess.run([sys.executable, "-m", "v2pe_train", "inspect", "--recipe", str(recipe), "--rows", "2000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    records = _records(retrieval)
    headers = [line for line in lines if line.startswith("-- sample long_mr-train-")]
    answers = {key: len(TOK.encode(rec["conversations"][-1]["value"])) for key, (rec, _) in records.items()}
    targets = [line for line in lines if line.endswith("-> target")]
    assert lines[1].startswith("pack of ") and "6 sample(s)" in lines[1]
    assert f"{sum(answers.values())} target(s)" in lines[1] and len(targets) == sum(answers.values())
    assert not any("<|im_end|>" in line for line in targets)  # train_on_eos: false
    assert len(headers) == 6
    for header in headers:  # each sample's targets are its answer's tokens
        key = header.split()[2].rstrip(":")
        assert f"{answers[key]} target(s))" in header
    first_rows = [lines[lines.index(h) + 2] for h in headers]  # positions restart at 0 for every sample
    assert all(row.split()[1] == "0.000" for row in first_rows)
