"""The training recipe: one typed config, loaded from YAML, validated at the boundary with errors naming the key."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from v2pe_common.control import MODES as CONTROL_MODES
from v2pe_common.recipe import ConfigError, check_type, construct, read_recipe, setting, unknown_key
from v2pe_common.lengths import parse_length

from .positions import MODES as POSITION_MODES
from .positions import STRIDES

LOSS_REDUCTIONS = ("token", "square")
PRECISIONS = ("auto", "fp32", "bf16")
# Keys a resumed run may change: bookkeeping that leaves every batch, gradient and update as they were.
# Everything else (lr, seed, data, max_steps, model, num_workers, ...) is the run's identity.
RESUMABLE_KEYS = frozenset({"out", "log_every", "save_every", "keep_last", "strict", "verify_shards"})
# Keys a resume may raise: users extend a finished run. The cosine schedule is then recomputed over the new
# total from the step reached (the lr rises again where the old schedule had decayed), as transformers'
# Trainer does when resumed with more steps; lowering them would cut a schedule short and stays refused.
EXTENSIBLE_KEYS = frozenset({"max_steps"})
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
    """Every key of a training recipe; `v2pe-train config show` lists them with their help."""

    # what to train
    model: str = setting("tiny", "'tiny' (random init, CPU-sized), '2b' / '8b' presets, or a local native InternVL "
                                 "checkpoint folder")
    tokenizer: str | None = setting(None, "tokenizer folder; default: the model folder's, or the bundled one for tiny")
    data: list[str] = setting(list, "v2pe-data build folders (manifest.json) or tar files")
    data_format: str = setting("wds", "which copy of a build to read: wds, parquet or internvl")
    datasets: list | None = setting(None, "a train-time mixture instead of data: [{path, weight?, repeat_time?, "
                                          "format?}] (v2pe_train/data/mixture.py)")
    out: str = setting("runs/tiny", "run folder: checkpoints, log.jsonl, TensorBoard events")
    # sequence and positions
    max_seq_len: int = setting(34000, "tokens per packed sequence (34k, 64k also read)")
    max_tiles_per_pack: int | None = setting(None, "tiles per pack at most (the reference's num_images_expected, 135); "
                                                   "null: tokens alone decide")
    position_mode: str = setting("v2pe_rnd", "default (δ = 1), v2pe_fix (one stride) or v2pe_rnd (a random stride "
                                             "per image)")
    stride: int | None = setting(None, "v2pe_fix's stride in {1, 2, 4, ..., 256} (δ = stride / 256)")
    template: str | None = setting(None, "chat template; default: the one recorded in the data")
    # optimisation (defaults: the published V2PE 32K recipe)
    lr: float = setting(5e-6, "peak learning rate (AdamW)")
    min_lr: float = setting(0.0, "learning rate the cosine decays to, in [0, lr]")
    weight_decay: float = setting(0.05, "AdamW weight decay")
    weight_decay_all: bool = setting(False, "decay every trainable parameter, norms and biases too, as the reference's "
                                            "DeepSpeed AdamW; false: matrices only (common practice)")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas, two numbers in [0, 1)")
    eps: float = setting(1e-8, "AdamW epsilon")
    warmup_ratio: float = setting(0.03, "share of max_steps warming the lr up linearly from 0, in [0, 1)")
    max_steps: int = setting(20000, "optimizer steps of the cosine schedule; may grow on --resume to extend a run")
    grad_clip: float = setting(1.0, "gradient norm clip")
    grad_accum: int = setting(1, "micro-batches (packs) per optimizer step and rank")
    loss_reduction: str = setting("square", "token (mean over target tokens) or square (the reference's: each sample "
                                            "weighted 1/sqrt(its targets))")
    precision: str = setting("auto", "auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")
    freeze_vision: bool = setting(False, "keep the vision tower's weights fixed")
    freeze_projector: bool = setting(False, "keep the projector's weights fixed")
    freeze_language: bool = setting(False, "keep the language model's weights fixed")
    drop_path_rate: float = setting(0.0, "stochastic depth of the vision tower, in [0, 1); the reference uses 0.1")
    data_augment: bool = setting(False, "re-encode every training tile as JPEG at quality 75..100")
    train_on_prompt: bool = setting(False, "every text token is a target (system, user turns), not only the replies")
    train_on_eos: bool = setting(True, "the end-of-turn marker closing each reply is a target (the reference's rule)")
    tiling_backend: str = setting("reference", "reference (transformers' processor, pixel-exact with the data side) or "
                                               "fast (torch resize, ~4.4x the tiles/s, within 2 levels)")
    control_tokens: str = setting("skip", "a turn holding a control token (<IMG_CONTEXT>, <|im_start|>, ...): skip the "
                                          "sample (counted as special_token) or neutralise the token")
    # parallelism
    cp: int = setting(1, "context-parallel degree (ring attention); world size = dp x cp")
    ring_backend: str = setting("auto", "attention kernels: auto / torch (torch's own: flash on sm80+ in bf16, else "
                                        "SDPA) or flash (ring-flash-attn, the gpu extra)")
    attention: str = setting("auto", "how packed samples are kept apart with cp = 1: mask (an L x L block mask), "
                                     "varlen (cu_seqlens), auto (varlen on CUDA)")
    data_parallel: str = setting("ddp", "ddp (the model replicated) or fsdp (FSDP2: parameters, gradients and "
                                        "optimizer state sharded; checkpoints through torch.distributed.checkpoint)")
    # bookkeeping
    seed: int = setting(0, "initialisation, data order and augmentation seed")
    log_every: int = setting(1, "steps between log.jsonl / TensorBoard rows")
    save_every: int = setting(2500, "steps between checkpoints")
    keep_last: int = setting(2, "checkpoints kept (the newest)")
    strict: bool = setting(False, "stop at the first bad shard, image or record instead of skipping and counting it")
    verify_shards: bool = setting(True, "check each shard's sha256 against its manifest before reading it")
    allow_eval_data: bool = setting(False, "train on builds made from an evaluation benchmark (MileBench); refused by "
                                           "default: it contaminates its scores")
    num_workers: int = setting(0, "data loader worker processes per rank")

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
        need(self.position_mode != "v2pe_fix" or self.stride in STRIDES, "stride",
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

    def identity_changes(self, saved: dict, *, resuming: bool = False) -> list[str]:
        """'key: <saved> saved, <now> now' for each identity key that differs from a saved config.

        A key the saved config lacks (written before the key existed) counts as its default. When
        `resuming`, an EXTENSIBLE_KEYS value raised above the saved one is not a change.
        """
        defaults = type(self)().to_dict()
        now = self.identity()

        def differs(k: str) -> bool:
            was = saved.get(k, defaults[k])
            return was != now[k] and not (resuming and k in EXTENSIBLE_KEYS and isinstance(was, int)
                                          and now[k] > was)

        return [f"{k}: {saved.get(k, defaults[k])!r} saved, {now[k]!r} now" for k in sorted(now) if differs(k)]

    def run_id(self) -> str:
        """The run's id (its checkpoints carry it): the identity less EXTENSIBLE_KEYS, so an extended run
        keeps its id and its older checkpoints stay its own for `keep_last`."""
        import hashlib
        import json

        key = {k: v for k, v in self.identity().items() if k not in EXTENSIBLE_KEYS}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict, where: str = "recipe") -> TrainConfig:
        return construct(cls, raw, where, _kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None):
        return cls.from_dict(read_recipe(path, overrides), where=str(path))


def describe(cfg: TrainConfig) -> list[dict]:
    """Each key of `cfg`: name, type, value, default and one-line meaning, in the recipe's order."""
    defaults = TrainConfig()
    return [{"key": f.name, "type": str(f.type), "value": getattr(cfg, f.name),
             "default": getattr(defaults, f.name), "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(TrainConfig)]


def _kwargs(key: str, value, known: dict) -> dict:
    if key not in known:
        raise unknown_key(key, known)
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
