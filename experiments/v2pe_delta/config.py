"""The experiment's one typed recipe: `scales/<name>.yaml` -> `ExperimentConfig`, errors naming the key.

A scale fixes everything a result depends on: the data (lengths, counts, haystack shape, seeds), the
model shape, the training run per position mode and seed, and the evaluation strides. `toy` exists so the
code path runs inside `make test`; `cpu` is the documented run on a 2-core machine; `gpu` scales it up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common.recipe import ConfigError, check_type, construct, read_recipe

SCALES_DIR = Path(__file__).parent / "scales"
MODES = ("default", "v2pe_fix", "v2pe_rnd")
STRIDES = ("default", 1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    # --- data: Long-MR retrieval at L for training, L x eval_multiples for evaluation
    train_len: int  # L, tokens (counted with the experiment's tokenizer and InternVL tiling, as the trainer counts)
    train_samples: int
    eval_samples: int  # per evaluation length; a multiple of the depth grid's size covers it evenly
    min_len_ratio: float = 0.75  # every sample of a set has between ratio x len and len tokens
    eval_multiples: list = field(default_factory=lambda: [1, 2, 4, 8])
    depth_grid: str = "0:1:0.25"
    subsets: list = field(default_factory=lambda: ["text_retrieval"])
    haystack: dict = field(default_factory=lambda: {"kind": "synthetic", "paragraphs": [1, 1], "sentences": [1, 1],
                                                    "images": [1, 6]})
    max_tiles: int = 1
    template: str = "chatml"
    data_seed: int = 0
    eval_seed: int = 1000
    build_workers: int = 1
    # --- model: the tiny preset's vision tower and a Qwen2-style language model of this shape, or
    # `init_model`, a native InternVL folder (e.g. a converted InternVL2-2B) every run fine-tunes instead;
    # the data is then counted with that model's tokenizer, as V2PE fine-tunes a pretrained model
    init_model: str | None = None
    hidden_size: int = 64
    num_layers: int = 2
    head_dim: int = 32
    rope_theta: float = 10000.0
    # --- training: one run per (mode, seed), same data and data order for every mode
    modes: list = field(default_factory=lambda: ["default", "v2pe_rnd"])
    fix_stride: int | None = None  # the stride of a v2pe_fix run, if `modes` has one
    seeds: list = field(default_factory=lambda: [0])
    steps: int = 4000
    lr: float = 3.0e-3
    warmup_ratio: float = 0.05
    train_on_prompt: bool = True  # every text token a target: a model from scratch learns the language first
    max_seq_len: int | None = None  # default: train_len (one sample a step)
    precision: str = "fp32"
    save_every: int = 500
    device: str = "cpu"
    threads: int = 1  # torch threads of each training / evaluation process
    parallel: int = 2  # training or evaluation processes at once
    # --- evaluation
    strides: dict = field(default_factory=lambda: {"default": ["default"], "v2pe_rnd": ["default", 64, 16, 4]})
    eval_mode: str = "generate"
    control_threshold: float = 0.8  # both models must reach this accuracy at L, or nothing can be concluded

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        positive = ("train_len", "train_samples", "eval_samples", "max_tiles", "hidden_size", "num_layers",
                    "head_dim", "steps", "save_every", "threads", "parallel", "build_workers")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)!r}")
        if self.hidden_size % self.head_dim:
            raise ConfigError(f"hidden_size: {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if not 0 < self.min_len_ratio < 1:
            raise ConfigError(f"min_len_ratio: must be in (0, 1), got {self.min_len_ratio!r}")
        if not self.eval_multiples or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                          for m in self.eval_multiples):
            raise ConfigError(f"eval_multiples: expected positive ints, got {self.eval_multiples!r}")
        if 1 not in self.eval_multiples:
            raise ConfigError("eval_multiples: must hold 1 (the training length is the control)")
        if not self.modes or any(m not in MODES for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"modes: distinct values of {list(MODES)}, got {self.modes!r}")
        if "v2pe_fix" in self.modes and self.fix_stride not in STRIDES[1:]:
            raise ConfigError(f"fix_stride: a v2pe_fix run needs one of {list(STRIDES[1:])}, got {self.fix_stride!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"seeds: expected a list of ints, got {self.seeds!r}")
        for mode in self.modes:
            strides = self.strides.get(mode)
            if not strides or any(s not in STRIDES for s in strides):
                raise ConfigError(f"strides.{mode}: a list of {list(STRIDES)}, got {strides!r}")
        unknown = sorted(set(self.strides) - set(self.modes))
        if unknown:
            raise ConfigError(f"strides: {unknown[0]!r} is not one of the modes {self.modes}")
        if self.eval_mode not in ("generate", "teacher_forced"):
            raise ConfigError(f"eval_mode: generate or teacher_forced, got {self.eval_mode!r}")
        if self.max_seq_len is not None and self.max_seq_len < self.train_len:
            raise ConfigError(f"max_seq_len: {self.max_seq_len} cannot hold one sample of train_len {self.train_len}")

    @property
    def seq_len(self) -> int:
        return self.max_seq_len or self.train_len

    def runs(self) -> list[str]:
        """Run names, `<mode>_s<seed>`, in the order they are trained."""
        return [f"{mode}_s{seed}" for seed in self.seeds for mode in self.modes]

    def eval_lengths(self) -> list[int]:
        return [self.train_len * m for m in sorted(set(self.eval_multiples))]


def field_defaults() -> dict:
    """Every key's default (the required ones None): what a settings file written before a key existed means."""
    out = {}
    for f in dataclasses.fields(ExperimentConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def _coerce(key: str, value, known: dict) -> dict:
    if key not in known:
        raise ConfigError(f"unknown key {key!r}; known keys: {sorted(known)}")
    return {key: value}


def load_config(scale: str, overrides: dict | None = None) -> ExperimentConfig:
    """A scale by name (`scales/<name>.yaml`) or a YAML path, with `overrides` on top."""
    path = Path(scale) if scale.endswith((".yaml", ".yml")) else SCALES_DIR / f"{scale}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))
        raise ConfigError(f"scale {scale!r}: no file {path}; choose one of {names} or give a YAML path")
    return construct(ExperimentConfig, read_recipe(path, overrides), str(path), _coerce)
