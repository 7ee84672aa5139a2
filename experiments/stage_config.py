"""The keys every experiment shares: one Long-MR training set, its evaluation set, a model and one training run.

`StageConfig` is the common part of a learning-ladder rung (experiments/ladder) and of the V2PE δ
experiment (experiments/v2pe_delta): both build their data with `v2pe-data build long_mr`, train with
`v2pe-train train` and score with `v2pe-train eval`, so the keys below mean the same in both. Each
subclass adds its own keys and checks; errors name the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common.recipe import ConfigError, check_type, unknown_key

EVAL_MODES = ("generate", "teacher_forced")
# whole_words: the bundled tokenizer plus every needle name and value as one token (commands.make_tokenizer);
# bundled: the bundled tokenizer as it is, which spells those words in 3-5 pieces.
VOCABULARIES = ("whole_words", "bundled")
VISION_HEAD_DIM = 16  # the tiny preset's vision heads (32 wide, 2 heads); wider towers get more heads
# The keys that shape a model from scratch: every stage of a curriculum shares them.
MODEL_KEYS = ("hidden_size", "num_layers", "head_dim", "rope_theta", "vision_hidden_size", "vision_layers",
              "vocabulary")


@dataclass(frozen=True)
class StageConfig:
    name: str
    # --- data: Long-MR at `train_len` for training; evaluation sets at the same length (and beyond, in δ)
    train_len: int = 1024  # L, tokens (counted with the tokenizer and InternVL tiling, as the trainer counts)
    train_samples: int = 3000
    eval_samples: int = 40  # per evaluation length; a multiple of the depth grid's size covers it evenly
    min_len_ratio: float = 0.75  # every sample of a set has between ratio x len and len tokens
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
    # `init_model`, a native InternVL folder every run fine-tunes instead (its tokenizer then counts the data)
    init_model: str | None = None
    vocabulary: str = "whole_words"  # the tokenizer of a model from scratch (VOCABULARIES)
    hidden_size: int = 64
    num_layers: int = 2
    head_dim: int = 32
    rope_theta: float = 10000.0
    vision_hidden_size: int = 32  # the vision tower (the tiny preset's: 1 layer of 32, 2 heads)
    vision_layers: int = 1
    # --- training: one run per seed (seed = initialisation and data order)
    seeds: list = field(default_factory=lambda: [0])
    steps: int = 1000
    lr: float = 5.0e-4
    warmup_ratio: float = 0.05
    # Samples packed per step: a pack holds whole samples up to max_seq_len tokens (default: train_len, so
    # one sample a step). Packing several gives each step several retrieval examples (learning.md).
    max_seq_len: int | None = None
    train_on_prompt: bool = False  # every text token a target, not only the answer
    train_on_eos: bool = True  # the end-of-turn marker after the answer is a target (the reference's rule)
    precision: str = "fp32"
    save_every: int = 500
    device: str = "cpu"
    threads: int = 1  # torch threads of each training / evaluation process
    num_workers: int = 0  # loader worker processes of each training run (decoding and tiling images)
    parallel: int = 2  # training or evaluation processes at once
    # --- evaluation
    eval_mode: str = "teacher_forced"
    control_threshold: float = 0.8  # accuracy at L a run must reach for the task to count as learned

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        positive = ("train_len", "train_samples", "eval_samples", "max_tiles", "hidden_size", "num_layers",
                    "head_dim", "vision_hidden_size", "vision_layers", "steps", "save_every", "threads", "parallel",
                    "build_workers")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)!r}")
        if self.hidden_size % self.head_dim:
            raise ConfigError(f"hidden_size: {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if self.vision_hidden_size % VISION_HEAD_DIM:
            raise ConfigError(f"vision_hidden_size: {self.vision_hidden_size} is not a multiple of {VISION_HEAD_DIM}")
        if not 0 < self.min_len_ratio < 1:
            raise ConfigError(f"min_len_ratio: must be in (0, 1), got {self.min_len_ratio!r}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"seeds: expected a list of ints, got {self.seeds!r}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be >= 0, got {self.num_workers!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be positive, got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.vocabulary not in VOCABULARIES:
            raise ConfigError(f"vocabulary: one of {list(VOCABULARIES)}, got {self.vocabulary!r}")
        if self.eval_mode not in EVAL_MODES:
            raise ConfigError(f"eval_mode: one of {list(EVAL_MODES)}, got {self.eval_mode!r}")
        if self.eval_mode == "generate" and not self.train_on_eos:
            raise ConfigError("eval_mode: a model trained without the end-of-turn target (train_on_eos: false) "
                              "never learns to stop, so its replies are scored teacher_forced")
        if not 0 < self.control_threshold <= 1:
            raise ConfigError(f"control_threshold: must lie in (0, 1], got {self.control_threshold!r}")
        if self.max_seq_len is not None and self.max_seq_len < self.train_len:
            raise ConfigError(f"max_seq_len: {self.max_seq_len} cannot hold one sample of train_len {self.train_len}")

    @property
    def seq_len(self) -> int:
        return self.max_seq_len or self.train_len


def field_defaults(cls) -> dict:
    """Every key's default (the required ones None): what a settings file written before a key existed means."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def known_key(key: str, value, known: dict) -> dict:
    """`construct`'s coercion for the experiments' configs: any known key, its type checked by the class."""
    if key not in known:
        raise unknown_key(key, known)
    return {key: value}


def parse_set(items: list[str]) -> dict:
    """`--set KEY=VALUE` options -> {key: YAML value}."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def remember_settings(cfg: StageConfig, path: Path, free: tuple[str, ...] = ()) -> list[str]:
    """The keys (other than `free` ones) in which `cfg` differs from the settings saved at `path`, if any;
    with none, `cfg`'s settings are (re)written there. A key the saved file lacks (added since) counts as its
    default, so a folder made before a key existed stays usable."""
    now = json.loads(json.dumps(vars(cfg)))
    if path.is_file():
        before = {**json.loads(json.dumps(field_defaults(type(cfg)))), **json.loads(path.read_text())}
        changed = sorted(k for k in set(before) | set(now) if k not in free and before.get(k) != now.get(k))
        if changed:
            return changed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1) + "\n")
    return []
