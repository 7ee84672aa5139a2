"""Teacher-forced scoring (MM-NIAH-1M style): one forward pass, correct iff the argmax reproduces the answer.

For samples too long to generate on one device: the whole of prompt + answer + `<|im_end|>` goes through
the model once; the logits at positions a-1 .. b-2 predict the answer tokens a .. b-1, and the verdict is
exact equality of their argmax with the answer (for a choice question the answer is the option letter).

The pass is the trainer's own (`objective.loss`): with a cp group of W > 1 ranks the batch is cut once by
`parallel.context.cp_shard` (ids and float64 positions zigzag over the ring, the vision tiles encoded a share
per rank and gathered, ring attention in the language model). Its loss over the answer tokens is the
answer's negative log-likelihood, and the final hidden states of the rows each rank holds come back with
it to give the answer-span logits; those are summed over the ranks (every row lives on exactly one rank,
the others add exact zeros), so every rank returns the same verdict and logits. W = 1 is the plain
single-device forward (explicit mask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..loss import IGNORE_INDEX, LossBatch, shift_labels
from ..objective import LossModule, loss
from ..parallel.context import ContextParallel


@dataclass(slots=True)
class TeacherForced:
    correct: bool
    answer_ids: list[int]
    predicted_ids: list[int]  # argmax over the answer span
    nll: float  # sum over the answer tokens of -log p(token | everything before it), nats
    predicted_text: str = ""
    logits: torch.Tensor | None = None  # float32 [A, V] on the CPU, when asked for


@contextlib.contextmanager
def _attention_restored(model: nn.Module) -> Iterator[None]:
    """`ContextParallel` switches the language model to ring attention; give the caller's model back as it was."""
    cfg = model.config
    before = {"text_config": cfg.text_config._attn_implementation,
              "vision_config": cfg.vision_config._attn_implementation}
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _span_logits(model: nn.Module, ids, pos, pixels, span, *, group, rank, world, pad_id, backend):
    """(logits [A, V] float32, nll) of the answer span through `objective.loss`; identical on every rank."""
    a, b = span
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[a:b] = ids[a:b]
    shifted = shift_labels(labels[None])
    batch = LossBatch(ids[None], pos[None], pixels, [[ids.numel()]], shifted, (shifted != IGNORE_INDEX).float())
    if world == 1:
        out = loss(LossModule(model), batch, hidden=True)
        logits = model.lm_head(out.hidden[a - 1:b - 1]).float()
        return logits, float(F.cross_entropy(logits, ids[a:b], reduction="sum"))
    with _attention_restored(model):
        cp = ContextParallel(model, group, rank, world, pad_id=pad_id, backend=backend)
        out = loss(LossModule(model, cp), batch, hidden=True)
    rows = out.rows.to(ids.device)
    mine = (rows >= a - 1) & (rows < b - 1)
    logits = torch.zeros((b - a, model.lm_head.out_features), dtype=torch.float32, device=ids.device)
    logits[rows[mine] - (a - 1)] = model.lm_head(out.hidden[mine]).float()
    nll = torch.as_tensor(out.ce, dtype=torch.float32, device=ids.device).reshape(1)
    dist.all_reduce(logits, op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(nll, op=dist.ReduceOp.SUM, group=group)
    return logits, float(nll)


@torch.no_grad()
def teacher_forced(model: nn.Module, input_ids: torch.Tensor, positions: torch.Tensor,
                   pixel_values: torch.Tensor | None, span: tuple[int, int], *, group=None, rank: int = 0,
                   world: int = 1, pad_id: int = 0, backend: str = "auto",
                   return_logits: bool = False) -> TeacherForced:
    """Score the answer at `span` = (a, b) of a [L] sequence with float64 `positions` [L]; a >= 1."""
    a, b = span
    length = int(input_ids.numel())
    if not 1 <= a < b <= length or positions.shape != input_ids.shape:
        raise ValueError(f"answer span {span} must lie in [1, {length}] after a prompt; "
                         f"ids {tuple(input_ids.shape)}, positions {tuple(positions.shape)}")
    if world > 1 and length < 2 * world:
        raise ValueError(f"cp: {world} ranks need at least {2 * world} tokens, the sequence has {length}")
    device = next(model.parameters()).device
    ids = input_ids.to(device=device, dtype=torch.long)
    pos = positions.to(device=device, dtype=torch.float64)
    pixels = pixel_values if pixel_values is not None and pixel_values.numel() else None
    if pixels is not None:
        pixels = pixels.to(device=device, dtype=model.dtype)
    answer = ids[a:b]
    logits, nll = _span_logits(model, ids, pos, pixels, span, group=group, rank=rank, world=world, pad_id=pad_id,
                               backend=backend)
    predicted = logits.argmax(-1)
    return TeacherForced(correct=bool(torch.equal(predicted, answer)), answer_ids=answer.tolist(),
                         predicted_ids=predicted.tolist(), nll=nll,
                         logits=logits.cpu() if return_logits else None)
