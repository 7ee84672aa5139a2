"""The training loop: one process or torchrun, data parallel over dp ranks, exact resume.

Gradients are synchronised by DDP over all ranks, with each rank's loss scaled by world / (global
weight sum): the summed gradient is then exactly the gradient of the global-batch loss, however the batch
is split across ranks, context-parallel shards or accumulation steps. With `data_parallel: fsdp` the model
is sharded by FSDP2 instead (parallelize.py), whose reduce-scatter averages over the same world, so the same
scale holds.

A run folder holds one run. `RUN/run.json` records its identity (the config less `RESUMABLE_KEYS`); a new
run into a folder holding run files is refused unless `overwrite` (which deletes the earlier run's files,
`RUN_FILES`, and nothing else), and `resume` refuses a checkpoint whose identity differs, naming each key
(`max_steps` may grow: the run is extended under the schedule of the new total).
On resume, `log.jsonl` is cut back to the resumed step and TensorBoard events after it are purged, so the
steps replayed after a kill are logged once.
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

from v2pe_common.tokenizer import is_hub_id, load_tokenizer, resolve_hub_id
from v2pe_common.schema import MANIFEST_FILE

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import LoaderConfig, TrainDataLoader
from .distributed import Topology, all_reduce_sum, barrier, groups, init_distributed, topology_from_env
from .loss import shift_labels, token_weights, weighted_ce_sum
from .model import PRESETS, build_model, builds_on_meta, forward, materialise
from .optim import build_optimizer, cosine_with_warmup
from .parallel import ContextParallel, empty_image_term
from .parallelize import apply_fsdp, build_mesh, shard_rank
from .parallelize import cp_group as mesh_cp_group

logger = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """The run cannot start or continue: the message says what is missing or went wrong."""


class UsageError(TrainError):
    """The command line or recipe asks for what cannot be done (missing input, a folder holding another run)."""


RUN_FILE = "run.json"
# Everything a run writes into its folder: what --overwrite removes, and what marks a folder as taken.
RUN_FILES = (RUN_FILE, "config.json", "log.jsonl", "data_errors.json", "tb", ckpt.CKPT_DIR)


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step run by this call
    run_dir: str = ""


class LossModule(nn.Module):
    """Everything between a batch and the weighted CE sum, inside one forward so DDP sees all of it."""

    def __init__(self, model: nn.Module, context_parallel: ContextParallel | None = None, *,
                 encode_empty: bool = False):
        super().__init__()
        self.model = model
        self.cp = context_parallel
        self.encode_empty = encode_empty  # see parallel.empty_image_term

    def forward(self, input_ids, position_ids, pixel_values, sample_lengths, shifted, weights, total_tiles=None):
        """`total_tiles`: the pack's tile count when `pixel_values` hold only this cp rank's share of them."""
        if self.cp is not None:
            cu = [0]
            for n in sample_lengths[0]:
                cu.append(cu[-1] + int(n))
            return self.cp(input_ids, position_ids, pixel_values, cu, shifted, weights, total_tiles=total_tiles)
        # before the language model, where a pack with tiles runs the tower: FSDP's gathers go in one order
        extra = empty_image_term(self.model, input_ids.device) if pixel_values is None and self.encode_empty else None
        hidden = forward(self.model, input_ids, position_ids, pixel_values=pixel_values,
                         sample_lengths=sample_lengths, return_hidden=True)
        ce = weighted_ce_sum(hidden, self.model.lm_head, shifted, weights)
        return ce if extra is None else ce + extra


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


def resolve_tokenizer(cfg: TrainConfig) -> str | None:
    if cfg.model.tokenizer:
        return cfg.model.tokenizer
    if cfg.model.name not in PRESETS and any((Path(cfg.model.name) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return cfg.model.name
    if is_hub_id(cfg.model.name):  # a Hub model repo carries its tokenizer; load_tokenizer fetches just those files
        return cfg.model.name
    return None


def eval_benchmarks(data: str) -> str:
    """The evaluation benchmarks and their datasets a build's manifest declares (its sources' `eval_benchmark`),
    as one phrase ("MileBench (MileBench/ALFRED, ...)"), or "" for none. A build's copies and their files
    (OUT/internvl/annotations/*.jsonl: three levels down) are looked up through the build folder above them;
    data with no manifest above it is checked record by record by the loader (`allow_eval_data`)."""
    path = Path(data)
    for folder in (path, *path.parents[:3]):
        manifest = folder / MANIFEST_FILE
        if manifest.is_file():
            try:
                sources = json.loads(manifest.read_text()).get("sources") or []
            except (OSError, ValueError):
                return ""  # the loader reports an unreadable manifest
            marked = {}
            for s in sources:
                if isinstance(s, dict) and s.get("eval_benchmark"):
                    marked.setdefault(s["eval_benchmark"], []).append(str(s.get("dataset", s.get("name", "?"))))
            return "; ".join(f"{b} ({', '.join(names)})" for b, names in marked.items())
    return ""


def preflight(cfg: TrainConfig, *, require_gpu: bool = False) -> None:
    """Fail at once, with what is missing, before any process group or model exists (raises UsageError)."""
    if require_gpu and not torch.cuda.is_available():
        raise UsageError("this recipe needs a CUDA GPU and none is visible; on a CPU machine run `make train-tiny`")
    model_dir = cfg.model.name
    if is_hub_id(cfg.model.name):  # its configs only, at once; the weights come when the model is built
        try:
            model_dir = resolve_hub_id(cfg.model.name, ("*.json",), "model")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if cfg.model.name not in PRESETS and not (Path(model_dir) / "config.json").is_file():
        raise UsageError(f"model: no checkpoint at {cfg.model.name!r} (expected a native InternVL folder with config.json; "
                         "convert remote-code checkpoints with `v2pe-train convert`, or run `make train-tiny`)")
    if cfg.parallel.cp > 1 and cfg.data.max_seq_len < 2 * cfg.parallel.cp:
        raise UsageError(f"cp: {cfg.parallel.cp} ranks need sequences of at least {2 * cfg.parallel.cp} tokens (2 zigzag chunks a rank); "
                         f"max_seq_len is {cfg.data.max_seq_len}")
    if cfg.parallel.ring_backend == "flash":
        from importlib.util import find_spec

        if not torch.cuda.is_available() or find_spec("flash_attn") is None or find_spec("ring_flash_attn") is None:
            raise UsageError("ring_backend: 'flash' needs CUDA plus flash-attn and ring-flash-attn "
                             "(pip install -e '.[gpu]'); use 'auto' or 'torch' on this machine")
    if not cfg.data.paths and not cfg.data.datasets:
        raise UsageError("data: no data given (pass v2pe-data build folders with --data / DATA=...)")
    for d in cfg.data.paths + [spec["path"] for spec in cfg.data.datasets or []]:
        import glob

        if not Path(d).exists() and not glob.glob(d):
            raise UsageError(f"data: {d!r} does not exist (build it with `v2pe-data build`, or run `make train-tiny`)")
    if not cfg.data.allow_eval_data:
        for d in cfg.data.paths + [spec["path"] for spec in cfg.data.datasets or []]:
            found = eval_benchmarks(d)
            if found:
                raise UsageError(f"data: {d!r} holds records built from the evaluation benchmark {found}: training on "
                                 "them contaminates that benchmark's scores (V2PE trained on the tasks' training "
                                 "splits, not on the benchmark); set allow_eval_data: true in the recipe to train "
                                 "on it anyway")
    try:
        load_tokenizer(resolve_tokenizer(cfg))  # cached: the Trainer gets this same object
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_run_dir(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (UsageError) a new run into a folder holding run files, unless `overwrite`; reads only."""
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite deletes it: give one of them")
    out = Path(cfg.out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if resume or overwrite or not found:
        return
    latest = ckpt.latest_checkpoint(out)
    where = f"{out} holds a run (latest checkpoint {latest.name})" if latest else f"{out} holds a run"
    try:
        saved = json.loads((out / RUN_FILE).read_text()).get("identity")
    except (OSError, ValueError, AttributeError):
        saved = None
    changes = cfg.identity_changes(saved) if isinstance(saved, dict) else None
    if changes == []:
        raise UsageError(f"{where} of this config; pass --resume to continue it, or --overwrite to delete it "
                         "and start again")
    what = "; ".join(changes) if changes else f"run files {found}, no readable {RUN_FILE}"
    raise UsageError(f"{where} with other settings ({what}); choose a new --out, or pass --overwrite to delete "
                     "that run and start afresh")


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def attention_summary(cfg: TrainConfig, cp: int, ring: bool, device: torch.device, head_dim: int | None = None) -> str:
    """Which attention path the text model runs, e.g. 'sdpa (cp=1, dense mask)' or 'ring torch kernels (cp=2, zigzag)'.

    The kernels come from the ring's own `choose_backend`, for the dtype the attention sees (bf16 under
    CUDA autocast), so this line names what the ring will run; a fallback adds why.
    """
    if not ring:
        return "sdpa (cp=1, dense mask)"
    from .ring.select import choose_backend, describe, device_capability

    dtype = torch.bfloat16 if device.type == "cuda" and cfg.optim.precision in ("auto", "bf16") else torch.float32
    choice = choose_backend(device, dtype, head_dim, device_capability(device), cfg.parallel.ring_backend)
    kernels = describe(choice)
    if choice.name == "torch_flash" and cp == 1:
        kernels = "torch varlen_attn"
    layout = "zigzag" if cp > 1 else "varlen, one rank"
    note = f"; {choice.reason}" if choice.fallback else ""
    return f"ring {kernels} kernels (cp={cp}, {layout}{note})"


def loader_config(cfg: TrainConfig, topo: Topology, device: torch.device) -> LoaderConfig:
    """The loader settings of a run: what the trainer reads, and what `v2pe-train inspect` shows."""
    return LoaderConfig.of(cfg.data, cfg.sample, seed=cfg.seed, num_epochs=None, dp_rank=topo.dp_rank,
                           dp_size=topo.dp, cp_rank=topo.cp_rank, cp_size=topo.cp,
                           pixel_dtype="bf16" if device.type == "cuda" else "fp32")


class Trainer:
    def __init__(self, cfg: TrainConfig, topo: Topology | None = None):
        self.cfg = cfg
        self.topo = topo or topology_from_env(cfg.parallel.cp)
        self.device = init_distributed(self.topo)
        torch.manual_seed(cfg.seed)
        self.run_dir = Path(cfg.out)
        self.tokenizer = load_tokenizer(resolve_tokenizer(cfg))
        # FSDP needs a process group: one process keeps the plain model (and DCP checkpoints, to reshard).
        self.fsdp = cfg.parallel.data_parallel == "fsdp" and self.topo.world > 1
        # A large preset about to be sharded is built on meta: no rank ever holds all its fp32 weights.
        on_meta = self.fsdp and builds_on_meta(cfg.model.name, self.tokenizer)
        self.model = build_model(cfg.model.name, self.tokenizer, freeze_vision=cfg.model.freeze_vision,
                                 freeze_projector=cfg.model.freeze_projector, freeze_language=cfg.model.freeze_language,
                                 seed=cfg.seed, drop_path_rate=cfg.model.drop_path_rate,
                                 device="meta" if on_meta else None)
        if not on_meta:
            self.model = self.model.to(self.device)
        if cfg.parallel.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        context_parallel = None
        mesh = build_mesh(self.topo, self.device) if self.fsdp else None
        varlen = cfg.parallel.attention == "varlen" or (cfg.parallel.attention == "auto" and self.device.type == "cuda")
        if self.topo.cp > 1 or varlen:
            # Under DDP with cp = 1 the group is this rank alone (groups() gives singletons): never the world.
            if mesh is not None:
                cp_group = mesh_cp_group(mesh)
            else:
                cp_group = groups(self.topo)[0] if self.topo.world > 1 else None
            pad_id = self.tokenizer.hf.pad_token_id
            context_parallel = ContextParallel(self.model, cp_group, self.topo.cp_rank, self.topo.cp,
                                               pad_id=0 if pad_id is None else pad_id, backend=cfg.parallel.ring_backend,
                                               encode_empty=self.topo.dp > 1)
        if self.topo.rank == 0:
            text = self.model.config.text_config
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            logger.info("attention: %s", attention_summary(cfg, self.topo.cp, context_parallel is not None, self.device,
                                                           head_dim=head_dim))
        # With dp > 1 ranks read different packs: a tile-less one still runs the vision tower, or FSDP's
        # gathers / DDP's reductions of the ranks stop matching and the step hangs (a cp group shares its pack).
        self.loss_module: nn.Module = LossModule(self.model, context_parallel, encode_empty=self.topo.dp > 1)
        if self.fsdp:
            apply_fsdp(self.loss_module, self.model, mesh, self.device)
            if on_meta:
                materialise(self.model, self.device, root=self.loss_module, seed=cfg.seed, stream=shard_rank(mesh))
        elif self.topo.world > 1:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        try:
            self.optimizer = build_optimizer(self.model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
                                             eps=cfg.optim.eps, decay_all=cfg.optim.weight_decay_all)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.scheduler = cosine_with_warmup(self.optimizer, total_steps=cfg.optim.max_steps, warmup_ratio=cfg.optim.warmup_ratio,
                                            min_lr_ratio=cfg.optim.min_lr / cfg.optim.lr)
        self.loader = TrainDataLoader(loader_config(cfg, self.topo, self.device), self.tokenizer,
                                      num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda")
        self.step = 0
        self.run_id = cfg.run_id()

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
        cfg = self.cfg
        prepared = []
        for b in micro_batches:
            lengths = [b.sample_lengths.tolist()]
            shifted = shift_labels(b.labels)
            prepared.append((b, lengths, shifted, token_weights(shifted, lengths, cfg.optim.loss_reduction)))
        local_w = torch.stack([w.sum() for *_, w in prepared]).sum().to(torch.float64)
        # Every rank of a cp group holds the whole sequence's weights: count them once.
        denom = float(all_reduce_sum(local_w.to(self.device)).item()) / self.topo.cp
        if denom == 0:
            raise TrainError(f"step {self.step}: the global batch has no supervised tokens")
        scale = self.topo.world / denom  # DDP averages over the world; this makes it the global-loss gradient
        total = torch.zeros((), dtype=torch.float64)
        tokens = 0
        for i, (b, lengths, shifted, w) in enumerate(prepared):
            last = i == len(prepared) - 1
            sync = contextlib.nullcontext() if (last or self.topo.world == 1) else self._no_sync()
            with sync, _autocast(self.device, cfg.optim.precision), _naming(b, self.step):
                sliced = b.tile_range is not None  # this cp rank's share of the pack's tiles, maybe none
                ce = self.loss_module(b.input_ids.to(self.device), b.position_ids.to(self.device),
                                      b.pixel_values.to(self.device) if sliced or b.pixel_values.numel() else None,
                                      lengths, shifted.to(self.device), w.to(self.device),
                                      b.total_tiles if sliced else None)
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
