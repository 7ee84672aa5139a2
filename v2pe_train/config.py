"""The training recipe: one typed config, loaded from YAML, validated at the boundary with errors naming the key."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common.control import MODES as CONTROL_MODES
from v2pe_common.recipe import ConfigError, check_type, construct, read_recipe
from v2pe_common.lengths import parse_length

POSITION_MODES = ("default", "v2pe_fix", "v2pe_rnd")
LOSS_REDUCTIONS = ("token", "square")
PRECISIONS = ("auto", "fp32", "bf16")
# Keys a resumed run may change: bookkeeping that leaves every batch, gradient and update as they were.
# Everything else (lr, seed, data, max_steps, model, num_workers, ...) is the run's identity.
RESUMABLE_KEYS = frozenset({"out", "log_every", "save_every", "keep_last", "strict", "verify_shards"})
# The range of every integer key (README, training recipe): wide enough for any real run, narrow enough that no
# value forks the machine to death (num_workers) or fails deep inside a library without naming the key (seed).
LIMITS = {
    "max_seq_len": (1, 2**24),  # 16M tokens, as the data side's `length`
    "max_tiles_per_pack": (1, 10**6),
    "max_steps": (1, 10**12),
    "grad_accum": (1, 10**6),
    "cp": (1, 4096),
    "seed": (0, 2**63 - 1),
    "log_every": (1, 10**12),
    "save_every": (1, 10**12),
    "keep_last": (1, 10**6),
    "num_workers": (0, 256),
}


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    # what to train
    model: str = "tiny"  # "tiny" (random init, CPU-sized) or a local InternVL checkpoint directory (native layout)
    tokenizer: str | None = None  # default: the model directory's tokenizer, or the bundled one for tiny
    data: list[str] = field(default_factory=list)  # v2pe-data build folders (manifest.json) or tar files
    data_format: str = "wds"  # which copy of a build to read: wds, parquet or internvl
    # a train-time mixture instead of `data`: [{path, weight?, repeat_time?, format?}] (v2pe_train/data/mixture.py)
    datasets: list | None = None
    out: str = "runs/tiny"
    # sequence and positions
    max_seq_len: int = 34000
    max_tiles_per_pack: int | None = None  # the reference's num_images_expected (135); None: tokens alone decide
    position_mode: str = "v2pe_rnd"
    stride: int | None = None  # for v2pe_fix
    template: str | None = None  # override the template recorded in the data
    # optimisation (defaults: the published V2PE 32K recipe)
    lr: float = 5e-6
    min_lr: float = 0.0
    weight_decay: float = 0.05
    # False: decay matrices only (common practice); True: every trainable parameter, norms and biases too,
    # as the reference's DeepSpeed AdamW does.
    weight_decay_all: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    max_steps: int = 20000
    grad_clip: float = 1.0
    grad_accum: int = 1
    loss_reduction: str = "square"
    precision: str = "auto"  # bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    freeze_projector: bool = False
    freeze_language: bool = False
    drop_path_rate: float = 0.0  # stochastic depth of the vision tower (model.install_drop_path); reference 0.1
    data_augment: bool = False  # JPEG re-encoding of every training tile at quality 75..100 (SampleProcessor.tile)
    train_on_prompt: bool = False  # loss on every text token (system, user turns), not only the replies
    train_on_eos: bool = True  # the end-of-turn marker closing each reply is a target (the reference's rule)
    # "reference": transformers' processor, pixel-exact with the data side; "fast": torch resize, ~4.4x the
    # tiles/s per worker, within 2 levels of the reference on almost every tile (data/fast_tiling.py).
    tiling_backend: str = "reference"
    # A turn holding a control token (<IMG_CONTEXT>, <|im_start|>, ...; foreign InternVL lines are read here, not
    # by v2pe-data): skip the sample (counted as special_token) or neutralise the token (v2pe_common.control).
    control_tokens: str = "skip"
    # parallelism
    cp: int = 1  # context-parallel degree; world size = dp * cp
    # Kernels of the ring (and of cp = 1 varlen): auto / torch = torch's own (flash on sm80+ in bf16/fp16, else
    # mem-efficient SDPA, else the CPU flash op; see ring/select.py), flash = ring-flash-attn (the gpu extra).
    ring_backend: str = "auto"
    # How packed samples are kept apart with cp = 1: "mask" (an L x L block mask; fine on CPU and short packs),
    # "varlen" (cu_seqlens through the ring-attention function with one rank), "auto" = varlen on CUDA.
    attention: str = "auto"
    # How dp ranks hold the model: "ddp" replicates it (small models), "fsdp" shards parameters, gradients and
    # optimizer state over the world with FSDP2 and checkpoints through torch.distributed.checkpoint.
    data_parallel: str = "ddp"
    # bookkeeping
    seed: int = 0
    log_every: int = 1
    save_every: int = 2500
    keep_last: int = 2
    strict: bool = False
    verify_shards: bool = True  # check each shard's sha256 against its manifest before reading it
    # train on builds made from an evaluation benchmark (MileBench); refused by default: it contaminates its scores
    allow_eval_data: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{key}: {msg}")

        for f in dataclasses.fields(self):
            if f.type == "float":
                value = getattr(self, f.name)
                need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                     f.name, f"expected a finite number, got {value!r}")
        need(bool(self.model), "model", "give 'tiny' or a local checkpoint directory")
        need(isinstance(self.data, list) and all(isinstance(d, str) for d in self.data), "data",
             "must be a list of build folders or tar paths")
        if self.datasets is not None:
            from .data.mixture import parse_datasets

            try:
                parse_datasets(self.datasets)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            need(not self.data, "datasets", "give data (each source read once) or datasets (a mixture), not both")
        for key, (lo, hi) in LIMITS.items():
            value = getattr(self, key)
            need(value is None or lo <= value <= hi, key, f"must lie in [{lo}, {hi}], got {value!r}")
        need(self.tiling_backend in ("reference", "fast"), "tiling_backend", "choose reference or fast")
        need(self.control_tokens in CONTROL_MODES, "control_tokens",
             f"choose one of {list(CONTROL_MODES)}, got {self.control_tokens!r}")
        need(self.data_format in ("wds", "parquet", "internvl"), "data_format", "choose wds, parquet or internvl")
        need(self.position_mode in POSITION_MODES, "position_mode", f"choose one of {list(POSITION_MODES)}")
        need(self.position_mode != "v2pe_fix" or self.stride in (1, 2, 4, 8, 16, 32, 64, 128, 256), "stride",
             "v2pe_fix needs stride in {1, 2, 4, ..., 256}")
        need(self.lr > 0, "lr", "must be positive")
        need(0 <= self.min_lr <= self.lr, "min_lr", "must lie in [0, lr]")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must lie in [0, 1)")
        need(self.grad_clip > 0, "grad_clip", "must be positive")
        need(self.eps >= 0, "eps", "must be >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.drop_path_rate < 1, "drop_path_rate", f"must lie in [0, 1), got {self.drop_path_rate}")
        need(self.loss_reduction in LOSS_REDUCTIONS, "loss_reduction", f"choose one of {list(LOSS_REDUCTIONS)}")
        need(self.precision in PRECISIONS, "precision", f"choose one of {list(PRECISIONS)}")
        need(self.ring_backend in ("auto", "torch", "flash"), "ring_backend", "choose auto, torch or flash")
        need(self.attention in ("auto", "mask", "varlen"), "attention", "choose auto, mask or varlen")
        need(self.data_parallel in ("ddp", "fsdp"), "data_parallel", f"choose ddp or fsdp, got {self.data_parallel!r}")
        # A string is a sequence too: "ab" must not pass as two betas.
        betas_ok = isinstance(self.betas, (list, tuple)) and len(self.betas) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and 0 <= b < 1
            for b in self.betas)
        need(betas_ok, "betas", f"must be two finite numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def identity(self) -> dict:
        """The keys that make a run what it is: a checkpoint resumes only under the same values."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_KEYS}

    def identity_changes(self, saved: dict) -> list[str]:
        """'key: <saved> saved, <now> now' for each identity key that differs from a saved config.

        A key the saved config lacks (written before the key existed) counts as its default.
        """
        defaults = type(self)().to_dict()
        now = self.identity()
        return [f"{k}: {saved.get(k, defaults[k])!r} saved, {now[k]!r} now" for k in sorted(now)
                if saved.get(k, defaults[k]) != now[k]]

    @classmethod
    def from_dict(cls, raw: dict, where: str = "recipe") -> TrainConfig:
        return construct(cls, raw, where, _kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None):
        return cls.from_dict(read_recipe(path, overrides), where=str(path))


def _kwargs(key: str, value, known: dict) -> dict:
    if key not in known:
        raise ConfigError(f"unknown key {key!r}; known keys: {sorted(known)}")
    return {key: _coerce(key, value, known[key].type)}


def _coerce(key: str, value, annotation: str):
    """YAML gives strings for lengths ('34k') and one path for a list of data; the rest is type-checked."""
    if value is None:
        return None
    if key == "max_seq_len":
        try:
            return parse_length(value)
        except ValueError as exc:
            raise ConfigError(f"max_seq_len: {exc}") from None
    if key == "data" and isinstance(value, str):
        return [value]
    return check_type(key, value, annotation)
