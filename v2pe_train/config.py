"""The training recipe: one tree of typed sections, loaded from YAML, validated at the boundary (pydantic).

    model:      what is trained (preset or checkpoint, tokenizer, frozen parts)
    data:       what is read and how it is packed (v2pe_train.data.options.DataConfig)
    sample:     how a record becomes ids, V2PE positions, targets, pixels (.data.options.SampleConfig)
    optim:      optimizer, schedule, loss, precision
    parallel:   context parallelism, data parallelism, attention kernels, activation checkpointing
    checkpoint: how often checkpoints are written and how many are kept
    out, seed, log_every: the run itself

Every key is addressed as `section.key` (a recipe's nested mapping, or `optim.lr=1e-3` on the command line).
Recipes written before the sections (flat `lr: 1e-3`) still load; each such key logs one deprecation line
naming its new place. A run's id and identity are computed over the flat legacy names, so runs and their
checkpoints written before the sections keep their ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from v2pe_common.recipe import ConfigError, read_recipe, unknown_key

from .data.options import DataConfig, SampleConfig, Section, choice

log = logging.getLogger("v2pe_train.config")

LOSS_REDUCTIONS = ("token", "square")
PRECISIONS = ("auto", "fp32", "bf16")


class ModelConfig(Section):
    name: str = Field("tiny", min_length=1, description="'tiny' (random init, CPU-sized), '2b' / '8b' presets, a "
                      "local native InternVL checkpoint folder, or a Hub id org/name")
    tokenizer: Optional[str] = Field(None, description="tokenizer folder; default: the model folder's, or the bundled "
                                     "one for tiny")
    freeze_vision: bool = Field(False, description="keep the vision tower's weights fixed")
    freeze_projector: bool = Field(False, description="keep the projector's weights fixed")
    freeze_language: bool = Field(False, description="keep the language model's weights fixed")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth of the vision tower, in [0, 1); the "
                                  "reference uses 0.1")


    @field_validator("name", mode="before")
    @classmethod
    def _named(cls, value):
        if value is None:
            raise ValueError("give 'tiny', a preset ('2b', '8b'), a native InternVL checkpoint folder or a Hub id "
                             "(recipes leaving it null expect --model)")
        return value


class OptimConfig(Section):
    """Defaults: the published V2PE 32K recipe."""

    lr: float = Field(5e-6, gt=0, allow_inf_nan=False, description="peak learning rate (AdamW)")
    min_lr: float = Field(0.0, ge=0, allow_inf_nan=False, description="learning rate the cosine decays to, in [0, lr]")
    weight_decay: float = Field(0.05, ge=0, allow_inf_nan=False, description="AdamW weight decay")
    weight_decay_all: bool = Field(False, description="decay every trainable parameter, norms and biases too, as the "
                                   "reference's DeepSpeed AdamW; false: matrices only (common practice)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, two numbers in [0, 1)")
    eps: float = Field(1e-8, ge=0, allow_inf_nan=False, description="AdamW epsilon")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of max_steps warming the lr up linearly from 0, "
                                "in [0, 1)")
    max_steps: int = Field(20000, ge=1, le=10**12, description="optimizer steps of the cosine schedule; may grow on "
                           "--resume to extend a run")
    grad_clip: float = Field(1.0, gt=0, allow_inf_nan=False, description="gradient norm clip")
    grad_accum: int = Field(1, ge=1, le=10**6, description="micro-batches (packs) per optimizer step and rank")
    loss_reduction: str = Field("square", description="token (mean over target tokens) or square (the reference's: "
                                "each sample weighted 1/sqrt(its targets))")
    precision: str = Field("auto", description="auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16")

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, value):
        # A string is a sequence too: "ab" must not pass as two betas.
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and 0 <= b < 1 for b in value)
        if not ok:
            raise ValueError(f"must be two finite numbers in [0, 1), got {value!r}")
        return tuple(float(b) for b in value)

    _reduction = choice("loss_reduction", LOSS_REDUCTIONS)

    _precision = choice("precision", PRECISIONS)

    @model_validator(mode="after")
    def _min_lr(self):
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: must lie in [0, lr], got {self.min_lr} with lr {self.lr}")
        return self


class ParallelConfig(Section):
    cp: int = Field(1, ge=1, le=4096, description="context-parallel degree (ring attention); world size = dp x cp")
    data_parallel: str = Field("ddp", description="ddp (the model replicated) or fsdp (FSDP2: parameters, gradients "
                               "and optimizer state sharded; checkpoints through torch.distributed.checkpoint)")
    ring_backend: str = Field("auto", description="attention kernels: auto / torch (torch's own: flash on sm80+ in "
                              "bf16, else SDPA) or flash (ring-flash-attn, the gpu extra)")
    attention: str = Field("auto", description="how packed samples are kept apart with cp = 1: mask (an L x L block "
                           "mask), varlen (cu_seqlens), auto (varlen on CUDA)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")

    _dp = choice("data_parallel", ("ddp", "fsdp"))

    _backend = choice("ring_backend", ("auto", "torch", "flash"))

    _attention = choice("attention", ("auto", "mask", "varlen"))


class CheckpointConfig(Section):
    save_every: int = Field(2500, ge=1, le=10**12, description="steps between checkpoints")
    keep_last: int = Field(2, ge=1, le=10**6, description="checkpoints kept (the newest)")


# A run's defaults where they differ from the data stream's own (which packs without a limit and keeps δ = 1):
# a section given in part keeps them for the keys it leaves out.
RUN_DEFAULTS = {"data": {"max_seq_len": 34000}, "sample": {"position_mode": "v2pe_rnd"}}


class TrainConfig(Section):
    """Every key of a training recipe; `v2pe-train config show` lists them with their help."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=lambda: DataConfig(**RUN_DEFAULTS["data"]))
    sample: SampleConfig = Field(default_factory=lambda: SampleConfig(**RUN_DEFAULTS["sample"]))
    optim: OptimConfig = Field(default_factory=OptimConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    out: str = Field("runs/tiny", description="run folder: checkpoints, log.jsonl, TensorBoard events")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="initialisation, data order and augmentation seed")
    log_every: int = Field(1, ge=1, le=10**12, description="steps between log.jsonl / TensorBoard rows")

    def __init__(self, **values):
        """Keyword arguments by section (`optim=OptimConfig(...)`, `optim={"lr": ...}`), dotted or by their
        legacy flat names (`lr=1e-3`); a bad value raises ConfigError naming the key."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, raw):
        if not isinstance(raw, dict):
            return raw
        tree = nest(raw, deprecate=False)
        for section, defaults in RUN_DEFAULTS.items():
            if isinstance(tree.get(section), dict):
                tree[section] = {**defaults, **tree[section]}
        return tree

    @model_validator(mode="after")
    def _one_source(self):
        if self.data.paths and self.data.datasets is not None:
            raise ValueError("data.datasets: give data.paths (each source read once) or data.datasets (a mixture), "
                             "not both")
        return self

    def to_dict(self) -> dict:
        """The nested mapping, as a recipe writes it (saved in every checkpoint's meta.json)."""
        d = self.model_dump(mode="python")
        d["optim"]["betas"] = list(self.optim.betas)
        return d

    def flat(self) -> dict:
        """{dotted key: value} of every leaf ('optim.lr': 5e-06, 'out': 'runs/tiny')."""
        return flatten(self.to_dict())

    def identity(self) -> dict:
        """The keys that make a run what it is, by their legacy flat names: a checkpoint resumes only under
        the same values (names kept, so the ids of runs written before the sections do not change)."""
        return {LEGACY.get(k, k): v for k, v in self.flat().items() if k not in RESUMABLE_KEYS}

    def identity_changes(self, saved: dict, *, resuming: bool = False) -> list[str]:
        """'key: <saved> saved, <now> now' for each identity key that differs from a saved config (nested, or
        flat as written before the sections). A key the saved config lacks counts as its default. When
        `resuming`, an EXTENSIBLE_KEYS value raised above the saved one is not a change."""
        defaults = type(self)().identity()
        now = self.identity()
        was_all = saved_settings(saved)

        def differs(k: str) -> bool:
            was = was_all.get(k, defaults[k])
            return was != now[k] and not (resuming and k in _EXTENSIBLE_NAMES and isinstance(was, int) and now[k] > was)

        return [f"{DOTTED.get(k, k)}: {was_all.get(k, defaults[k])!r} saved, {now[k]!r} now"
                for k in sorted(now) if differs(k)]

    def run_id(self) -> str:
        """The run's id (its checkpoints carry it): the identity less EXTENSIBLE_KEYS, so an extended run
        keeps its id and its older checkpoints stay its own for `keep_last`."""
        key = {k: v for k, v in self.identity().items() if k not in _EXTENSIBLE_NAMES}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict, where: str = "recipe", *overrides: dict) -> TrainConfig:
        """A recipe's mapping (nested, dotted `optim.lr` keys, or legacy flat keys) as a validated config, each
        of `overrides` (command-line settings, flags) on top, key by key; a ConfigError names `where` and the key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping of keys to values")
        try:
            tree = nest(raw, deprecate=True, where=where)
            for layer in overrides:
                for key, value in nest(layer, deprecate=True, where="command line").items():
                    if isinstance(value, dict) and isinstance(tree.get(key), dict):
                        tree[key] = {**tree[key], **value}
                    else:
                        tree[key] = value
            return cls.model_validate(tree)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_first_error(exc)}") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None):
        """The recipe at `path` with the non-None `overrides` on top."""
        return cls.from_dict(read_recipe(path), str(path), {k: v for k, v in (overrides or {}).items()
                                                             if v is not None})


SECTIONS = {"model": ModelConfig, "data": DataConfig, "sample": SampleConfig, "optim": OptimConfig,
            "parallel": ParallelConfig, "checkpoint": CheckpointConfig}
TOP_KEYS = ("out", "seed", "log_every")
KEYS = [f"{s}.{k}" for s, c in SECTIONS.items() for k in c.model_fields] + list(TOP_KEYS)  # every key, dotted
# Legacy flat key -> its dotted place; a few were renamed as they moved (model -> model.name, ...).
DOTTED = {"model": "model.name", "data": "data.paths", "data_format": "data.format",
          **{k: f"{s}.{k}" for s, c in SECTIONS.items() for k in c.model_fields
             if (s, k) not in {("model", "name"), ("data", "paths"), ("data", "format")}}}
LEGACY = {v: k for k, v in DOTTED.items()}
# Keys a resumed run may change: bookkeeping that leaves every batch, gradient and update as they were.
# Everything else (optim.lr, seed, data, optim.max_steps, model, data.num_workers, ...) is the run's identity.
RESUMABLE_KEYS = frozenset({"out", "log_every", "checkpoint.save_every", "checkpoint.keep_last", "data.strict",
                            "data.verify_shards"})
# Keys a resume may raise: users extend a finished run. The cosine schedule is then recomputed over the new
# total from the step reached (the lr rises again where the old schedule had decayed), as transformers'
# Trainer does when resumed with more steps; lowering them would cut a schedule short and stays refused.
EXTENSIBLE_KEYS = frozenset({"optim.max_steps"})
_EXTENSIBLE_NAMES = frozenset(LEGACY.get(k, k) for k in EXTENSIBLE_KEYS)  # as the identity names them


def saved_settings(saved: dict) -> dict:
    """A saved config or identity (nested, or flat as written before the sections) by legacy flat names;
    keys this version does not know are left out (a reader takes what it needs, with a default)."""
    out = {}
    for key, value in (saved or {}).items():
        if key in SECTIONS and isinstance(value, dict):
            out.update({LEGACY.get(f"{key}.{k}", k): v for k, v in value.items()})
        else:
            out[key] = value
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k in SECTIONS and not prefix:
            out.update(flatten(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def nest(raw: dict, *, deprecate: bool, where: str = "recipe") -> dict:
    """`raw` with dotted keys (`optim.lr`) and legacy flat keys (`lr`) moved into their sections.

    A flat key whose name is also a section (`model: tiny`, `data: [out/a]`) is the legacy key when its
    value is not a mapping. Unknown keys raise a ConfigError with the closest known key.
    """
    tree: dict = {}
    for key, value in raw.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                dotted = f"{key}.{sub}"
                if dotted not in KEYS:
                    raise unknown_key(dotted, KEYS)
                tree.setdefault(key, {})[sub] = v
            continue
        if key in SECTIONS and isinstance(value, Section):
            tree[key] = value
            continue
        if "." in key:
            dotted = key
        elif key in TOP_KEYS:
            tree[key] = value
            continue
        elif key in DOTTED:
            dotted = DOTTED[key]
            if deprecate:
                log.warning("%s: key %r is now %r (flat keys still load; write the section)", where, key, dotted)
        else:
            raise unknown_key(key, KEYS)
        if dotted not in KEYS:
            raise unknown_key(dotted, KEYS)
        section, sub = dotted.split(".", 1)
        if isinstance(tree.get(section), Section):
            tree[section] = tree[section].model_dump()
        tree.setdefault(section, {})[sub] = value
    return tree


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    msg = err["msg"].removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if sep and key in SECTIONS and head in SECTIONS[key].model_fields:  # a section's check across its keys
        key, msg = f"{key}.{head}", rest
    msg = msg.removeprefix(f"{key.rpartition('.')[2]} ")  # "tiling_backend must be ..." under its own key
    if err["type"] == "extra_forbidden":
        return str(unknown_key(key, KEYS))
    given = "" if err["type"] == "value_error" else f", got {err.get('input')!r}"
    return f"{key}: {msg}{given}" if key else f"{msg}{given}"


def describe(cfg: TrainConfig) -> list[dict]:
    """Each key of `cfg`: dotted name, type, value, default and one-line meaning, section by section."""
    defaults = TrainConfig().flat()
    values = cfg.flat()
    rows = []
    for section, model in SECTIONS.items():
        for name, f in model.model_fields.items():
            key = f"{section}.{name}"
            rows.append({"key": key, "type": _type_name(f.annotation), "value": values[key],
                         "default": defaults[key], "help": f.description or ""})
    for name in TOP_KEYS:
        f = TrainConfig.model_fields[name]
        rows.append({"key": name, "type": _type_name(f.annotation), "value": values[name], "default": defaults[name],
                     "help": f.description or ""})
    return rows


def _type_name(annotation) -> str:
    """'int', 'str | None', 'tuple[float, float]': the annotation as a recipe writer reads it."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if getattr(annotation, "__origin__", None) is None or len(args) == len(annotation.__args__):
        return getattr(annotation, "__name__", None) if not args else str(annotation).replace("typing.", "")
    return f"{_type_name(args[0])} | None"


def migrate(text: str) -> str:
    """A flat recipe's text rewritten into sections, its comments kept beside their keys.

    A top-level `key: value` line (with the lines indented under it and the comment lines just above it) moves
    under its section, renamed (`lr:` -> `optim:` / `  lr:`); comments before the first key stay on
    top (the file's header). The result loads to the same config (checked), so a recipe is migrated or left as it was.
    """
    import yaml

    lines = text.splitlines()
    header: list[str] = []
    blocks: list[tuple[str, list[str]]] = []  # (dotted key, its lines), in file order
    pending: list[str] = []
    for line in lines:
        top = line[:1] not in ("", " ", "\t", "#", "-") and ":" in line
        if top:
            key = line.split(":", 1)[0].strip()
            blocks.append((key, pending + [line]))
            pending = []
        elif line.startswith((" ", "\t", "-")) and blocks and not pending:
            blocks[-1][1].append(line)
        elif not blocks:  # the file's own comments, before its first key
            header.append(line)
        else:
            pending.append(line)
    out = list(header)
    grouped: dict[str, list[str]] = {}
    tops: list[str] = []
    for key, block in blocks:
        value = yaml.safe_load("\n".join(b for b in block if not b.lstrip().startswith("#")))
        dotted = key if key in TOP_KEYS or (key in SECTIONS and isinstance(value.get(key), dict)) else DOTTED.get(key)
        if dotted is None:
            raise unknown_key(key, list(DOTTED) + list(TOP_KEYS))
        if "." not in dotted:
            tops += block
            continue
        section, leaf = dotted.split(".", 1)
        renamed = [leaf + b[len(key):] if b.startswith(key + ":") else b for b in block]
        grouped.setdefault(section, []).extend("  " + b if b.strip() else b for b in renamed)
    for section in SECTIONS:
        if section in grouped:
            out += [f"{section}:", *grouped[section]]
    out += tops + pending
    result = "\n".join(out).rstrip("\n") + "\n"
    if nest(yaml.safe_load(result) or {}, deprecate=False) != nest(yaml.safe_load(text) or {}, deprecate=False):
        raise ConfigError("the migrated recipe would load differently; left as it was")
    return result
