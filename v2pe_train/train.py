"""The training loop: one process or torchrun, data parallel over dp ranks, exact resume.

Gradients are synchronised by DDP over all ranks, with each rank's loss scaled by world / (global
weight sum): the summed gradient is then exactly the gradient of the global-batch loss, however the batch
is split across ranks, context-parallel shards or accumulation steps. With `data_parallel: fsdp` the model
is sharded by FSDP2 instead (parallel/apply.py), whose reduce-scatter averages over the same world, so the
same scale holds.

The run folder's contract (run.json, what --overwrite deletes) is in preflight.py; `resume` refuses a
checkpoint whose identity differs, naming each key (`max_steps` may grow: the run is extended under the
schedule of the new total). On resume, `log.jsonl` is cut back to the resumed step and TensorBoard events
after it are purged, so the steps replayed after a kill are logged once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from v2pe_common.tokenizer import TextTokenizer, load_tokenizer

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import LoaderConfig, TrainDataLoader
from .errors import TrainError, UsageError
from .loss import loss_batch
from .model import build_model, builds_on_meta, resolve_tokenizer
from .objective import loss
from .optim import build_optimizer, cosine_with_warmup
from .parallel.apply import describe_attention, parallelize
from .parallel.mesh import Topology, all_reduce_sum, barrier, build_mesh, init_distributed, topology_from_env
from .preflight import RUN_FILE, RUN_FILES, check_run_dir, preflight

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step run by this call
    run_dir: str = ""


@contextlib.contextmanager
def _naming(batch, step: int):
    """A model error about the data (image tokens against image features) names the pack's samples and shards."""
    try:
        yield
    except ValueError as exc:
        if "image" not in str(exc).lower():
            raise
        where = ", ".join(batch.where or batch.ids)
        raise TrainError(f"step {step}: {' '.join(str(exc).split())} in the pack of {where}") from None


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_config(cfg: TrainConfig, topo: Topology, device: torch.device) -> LoaderConfig:
    """The loader settings of a run: what the trainer reads, and what `v2pe-train inspect` shows."""
    return LoaderConfig.of(cfg.data, cfg.sample, seed=cfg.seed, num_epochs=None, dp_rank=topo.dp_rank,
                           dp_size=topo.dp, cp_rank=topo.cp_rank, cp_size=topo.cp,
                           pixel_dtype="bf16" if device.type == "cuda" else "fp32")


def build_train_model(cfg: TrainConfig, tokenizer: TextTokenizer, device: torch.device, *, on_meta: bool) -> nn.Module:
    """The single-device model in train mode: on `device`, or on meta (`on_meta`) for FSDP to shard first."""
    m = cfg.model
    model = build_model(m.name, tokenizer, freeze_vision=m.freeze_vision, freeze_projector=m.freeze_projector,
                        freeze_language=m.freeze_language, seed=cfg.seed, drop_path_rate=m.drop_path_rate,
                        device="meta" if on_meta else None)
    if not on_meta:
        model = model.to(device)
    return model.train()


def build_schedule(cfg: TrainConfig, model: nn.Module):
    """(optimizer, lr scheduler) of a run; a recipe asking for what the optimizer refuses is a UsageError."""
    try:
        o = cfg.optim
        optimizer = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                                    decay_all=o.weight_decay_all)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    scheduler = cosine_with_warmup(optimizer, total_steps=cfg.optim.max_steps, warmup_ratio=cfg.optim.warmup_ratio,
                                   min_lr_ratio=cfg.optim.min_lr / cfg.optim.lr)
    return optimizer, scheduler


class Trainer:
    def __init__(self, cfg: TrainConfig, topo: Topology | None = None):
        self.cfg = cfg
        self.topo = topo or topology_from_env(cfg.parallel.cp)
        self.device = init_distributed(self.topo)
        torch.manual_seed(cfg.seed)
        self.run_dir = Path(cfg.out)
        self.run_id = cfg.run_id()
        self.step = 0
        self.tokenizer = load_tokenizer(resolve_tokenizer(cfg))
        self.mesh = build_mesh(self.topo, self.device)  # None for one process
        # FSDP needs a process group: one process keeps the plain model (and DCP checkpoints, to reshard).
        self.fsdp = cfg.parallel.data_parallel == "fsdp" and self.mesh is not None
        # A large preset about to be sharded is built on meta: no rank ever holds all its fp32 weights.
        on_meta = self.fsdp and builds_on_meta(cfg.model.name, self.tokenizer)
        self.model = build_train_model(cfg, self.tokenizer, self.device, on_meta=on_meta)
        pad_id = self.tokenizer.hf.pad_token_id
        self.loss_module = parallelize(self.model, self.mesh, cfg, self.device, pad_id=pad_id or 0, on_meta=on_meta)
        if self.topo.rank == 0:
            logger.info("attention: %s", describe_attention(cfg, self.model, self.mesh, self.device))
        self.optimizer, self.scheduler = build_schedule(cfg, self.model)
        self.loader = TrainDataLoader(loader_config(cfg, self.topo, self.device), self.tokenizer,
                                      num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda")

    # -- the run folder and checkpoints ------------------------------------------------------------
    def save(self) -> Path:
        return ckpt.save_checkpoint(
            self.run_dir, self.step, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            loader_state=self.loader.state_dict(), rank=self.topo.rank, world=self.topo.world, barrier=barrier,
            extra={"config": self.cfg.to_dict()}, keep_last=self.cfg.checkpoint.keep_last, run_id=self.run_id,
            tokenizer=self.tokenizer, sharded=self.cfg.parallel.data_parallel == "fsdp")

    def clear_run_dir(self) -> None:
        """Delete an earlier run's files (RUN_FILES only; anything else in the folder stays)."""
        barrier()  # every rank has checked the folder before any file goes
        if self.topo.rank == 0:
            for name in RUN_FILES:
                target = self.run_dir / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
        barrier()

    def resume(self, path: Path | None = None) -> bool:
        """Load the latest (or the given) checkpoint of this run; False when there is none."""
        path = path or ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.step, loader_state = ckpt.load_checkpoint(path, model=self.model, optimizer=self.optimizer,
                                                       scheduler=self.scheduler, rank=self.topo.rank,
                                                       world=self.topo.world, config=self.cfg)
        self._follow_schedule()
        if loader_state is not None:
            self.loader.load_state_dict(loader_state)
        elif self.topo.rank == 0:
            logger.warning("resumed %s at world size %d from another world size: model, optimizer and schedule "
                           "are restored; the data stream restarts from the seed (each rank's split changed)",
                           path, self.topo.world)
        if self.topo.rank == 0:
            self._cut_log()
        return True

    def _follow_schedule(self) -> None:
        """Train the next step at this run's schedule. The optimizer holds the lr the saved schedule gave at the
        resumed step: the same number unless max_steps grew (an extended run), whose schedule runs over the new
        total."""
        sched = self.scheduler
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
        held = [group["lr"] for group in self.optimizer.param_groups]
        if lrs == held:
            return
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = lrs
        if self.topo.rank == 0:
            logger.warning("resumed at step %d under a schedule of %d steps: lr %.3g -> %.3g (max_steps grew)",
                           self.step, self.cfg.optim.max_steps, held[0], lrs[0])

    def _cut_log(self) -> None:
        """Keep log.jsonl rows up to the resumed step: the steps after it are trained (and logged) again."""
        log = self.run_dir / "log.jsonl"
        if not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a row cut short by the kill
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= self.step:
                kept.append(line + "\n")
        ckpt.write_text_atomic(log, "".join(kept))

    # -- one optimizer step ----------------------------------------------------------------------
    def backward(self, micro_batches) -> tuple[torch.Tensor, float, int]:
        """Accumulate the gradient of the global-batch loss; return (local CE sum, global weight sum, tokens)."""
        prepared = [(b, loss_batch(b, self.cfg.optim.loss_reduction)) for b in micro_batches]
        local_w = torch.stack([lb.weights.sum() for _, lb in prepared]).sum().to(torch.float64)
        # Every rank of a cp group holds the whole sequence's weights: count them once.
        denom = float(all_reduce_sum(local_w.to(self.device)).item()) / self.topo.cp
        if denom == 0:
            raise TrainError(f"step {self.step}: the global batch has no supervised tokens")
        scale = self.topo.world / denom  # DDP averages over the world; this makes it the global-loss gradient
        total = torch.zeros((), dtype=torch.float64)
        tokens = 0
        for i, (b, lb) in enumerate(prepared):
            last = i == len(prepared) - 1
            sync = contextlib.nullcontext() if (last or self.topo.world == 1) else self._no_sync()
            with sync, _autocast(self.device, self.cfg.optim.precision), _naming(b, self.step):
                ce = loss(self.loss_module, lb.to(self.device)).ce
            (ce * scale).backward()
            total += ce.detach().double().cpu()
            tokens += b.num_tokens
        return total, denom, tokens

    @contextlib.contextmanager
    def _no_sync(self):
        """Accumulate this micro-batch's gradient locally; the last micro-batch reduces the sum."""
        if not self.fsdp:
            with self.loss_module.no_sync():
                yield
            return
        self.loss_module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.loss_module.set_requires_gradient_sync(True)

    def train_step(self, micro_batches) -> tuple[float, float, int]:
        total, denom, tokens = self.backward(micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.cfg.optim.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor, already reduced over the shards
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = float(all_reduce_sum(total.to(self.device)).item()) / denom
        return loss, grad_norm, tokens

    def fit(self, max_steps: int | None = None, progress: bool = True) -> TrainResult:
        from tqdm import tqdm

        if max_steps is not None and max_steps < 0:
            raise UsageError(f"stop after {max_steps} steps: must be >= 0")
        stop = self.cfg.optim.max_steps if max_steps is None else min(max_steps, self.cfg.optim.max_steps)
        rank0 = self.topo.rank == 0
        writer = None
        if rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_text_atomic(self.run_dir / RUN_FILE, json.dumps(
                {"run_id": self.run_id, "identity": self.cfg.identity()}, indent=1, sort_keys=True))
            ckpt.write_text_atomic(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=1))
            from torch.utils.tensorboard import SummaryWriter

            # After a resume, events past the checkpoint (logged before the kill) are replaced, not doubled.
            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if self.step else None)
        result = TrainResult(step=self.step, run_dir=str(self.run_dir))
        it = iter(self.loader)
        bar = tqdm(total=stop, initial=self.step, disable=not (progress and rank0), unit="step", desc="train")
        while self.step < stop:
            t0 = time.perf_counter()
            micro = [next(it) for _ in range(self.cfg.optim.grad_accum)]
            loss, grad_norm, tokens = self.train_step(micro)
            dt = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise TrainError(f"step {self.step}: loss is {loss}; stopping (lower lr, check data)")
            result.losses.append(loss)
            if rank0:
                lr = self.scheduler.get_last_lr()[0]
                if self.step % self.cfg.log_every == 0:
                    for name, value in (("loss", loss), ("lr", lr), ("grad_norm", grad_norm),
                                        ("tokens_per_s", tokens * self.topo.dp / dt)):
                        writer.add_scalar(f"train/{name}", value, self.step)
                    with open(self.run_dir / "log.jsonl", "a") as fh:
                        fh.write(json.dumps({"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                             "tokens": tokens, "seconds": dt}) + "\n")
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / dt:.0f}", refresh=False)
                bar.update(1)
            if self.step % self.cfg.checkpoint.save_every == 0 or self.step == stop:
                self.save()
        bar.close()
        if writer:
            writer.close()
        stats = self.loader.stats
        if rank0 and any(stats.counts.values()):
            (self.run_dir / "data_errors.json").write_text(json.dumps(stats.state_dict(), indent=1))
        result.step = self.step
        return result


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, max_steps: int | None = None,
          progress: bool = True, require_gpu: bool = False) -> TrainResult:
    """Run (or with `resume` continue) the run in cfg.out up to step `max_steps` (default: the whole schedule).

    Raises UsageError when the inputs or the run folder forbid it, TrainError / CheckpointError / LoaderError
    when the run fails.
    """
    preflight(cfg, require_gpu=require_gpu)
    check_run_dir(cfg, resume=resume, overwrite=overwrite)
    trainer = Trainer(cfg)
    if overwrite:
        trainer.clear_run_dir()
    if resume and not trainer.resume():
        raise UsageError(f"--resume: no checkpoint under {Path(cfg.out) / ckpt.CKPT_DIR} "
                         "(start that run afresh with --overwrite)")
    return trainer.fit(max_steps=max_steps, progress=progress)
