"""The experiment's one typed recipe: `scales/<name>.yaml` -> `ExperimentConfig`, errors naming the key.

A scale fixes everything a result depends on: the data (lengths, counts, haystack shape, seeds), the
model shape, where each run starts (`pretrain`: a rung of the learning ladder, trained once per seed and
shared by every position mode, or scratch), the training run per position mode and seed, and the
evaluation strides. The keys shared with the ladder are in experiments/stage_config.py. `toy` exists so
the code path runs inside `make test`; `cpu` is the documented run on a 2-core machine; `gpu` the run
for one lent GPU, and `gpu_dry` its every stage at toy size on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from v2pe_common.recipe import ConfigError, construct, read_recipe
from v2pe_train.positions import MODES
from v2pe_train.positions import STRIDES as POSITION_STRIDES

from ..ladder.config import chain
from ..stage_config import MODEL_KEYS, StageConfig, field_defaults, known_key

SCALES_DIR = Path(__file__).parent / "scales"
STRIDES = ("default", *POSITION_STRIDES)  # an evaluation stride: one of the method's, or the model's own


@dataclass(frozen=True)
class ExperimentConfig(StageConfig):
    eval_multiples: list = field(default_factory=lambda: [1, 2, 4, 8])
    # A ladder rung (experiments/ladder/rungs, or a YAML path) trained once per seed, with the rungs it starts
    # from, before the per-mode runs; it must be text-only so that position modes do not differ in it. None:
    # every run starts from a random initialisation (or `init_model`).
    pretrain: str | None = None
    # Keys of the pretrain chain's rungs set by the scale (e.g. sizes and steps); the experiment's seeds,
    # device, precision, threads, parallel, template and model shape (MODEL_KEYS) apply to them always.
    pretrain_set: dict = field(default_factory=dict)
    # --- training: one run per (mode, seed), same data and data order for every mode
    modes: list = field(default_factory=lambda: ["default", "v2pe_rnd"])
    fix_stride: int | None = None  # the stride of a v2pe_fix run, if `modes` has one
    # --- evaluation
    strides: dict = field(default_factory=lambda: {"default": ["default"], "v2pe_rnd": ["default", 64, 16, 4]})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eval_multiples or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                          for m in self.eval_multiples):
            raise ConfigError(f"eval_multiples: expected positive ints, got {self.eval_multiples!r}")
        if 1 not in self.eval_multiples:
            raise ConfigError("eval_multiples: must hold 1 (the training length is the control)")
        if not self.modes or any(m not in MODES for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"modes: distinct values of {list(MODES)}, got {self.modes!r}")
        if "v2pe_fix" in self.modes and self.fix_stride not in STRIDES[1:]:
            raise ConfigError(f"fix_stride: a v2pe_fix run needs one of {list(STRIDES[1:])}, got {self.fix_stride!r}")
        for mode in self.modes:
            strides = self.strides.get(mode)
            if not strides or any(s not in STRIDES for s in strides):
                raise ConfigError(f"strides.{mode}: a list of {list(STRIDES)}, got {strides!r}")
        unknown = sorted(set(self.strides) - set(self.modes))
        if unknown:
            raise ConfigError(f"strides: {unknown[0]!r} is not one of the modes {self.modes}")
        if self.pretrain is not None:
            if self.init_model:
                raise ConfigError("pretrain: a run fine-tuning init_model starts from it, not from a pretrain rung")
            for rung in self.pretrain_chain():
                if rung.haystack.get("images", [0, 0]) != [0, 0] or rung.subsets != ["text_retrieval"]:
                    raise ConfigError(f"pretrain: rung {rung.name!r} must be text-only text_retrieval "
                                      "(position modes would differ on images), with haystack images [0, 0]")
                if rung.train_len > self.train_len:
                    raise ConfigError(f"pretrain: rung {rung.name!r} trains at {rung.train_len} tokens, beyond "
                                      f"the experiment's train_len {self.train_len}")

    def pretrain_chain(self) -> list:
        """The pretrain rung and those it starts from (first to last), with this experiment's shared keys."""
        if self.pretrain is None:
            return []
        shared = ("seeds", "device", "precision", "threads", "parallel", "template", "num_workers", *MODEL_KEYS)
        common = {**self.pretrain_set, **{k: getattr(self, k) for k in shared}}
        return chain(self.pretrain, common=common)

    def runs(self) -> list[str]:
        """Run names, `<mode>_s<seed>`, in the order they are trained."""
        return [f"{mode}_s{seed}" for seed in self.seeds for mode in self.modes]

    def eval_lengths(self) -> list[int]:
        return [self.train_len * m for m in sorted(set(self.eval_multiples))]


def load_config(scale: str, overrides: dict | None = None) -> ExperimentConfig:
    """A scale by name (`scales/<name>.yaml`) or a YAML path, with `overrides` on top."""
    path = Path(scale) if scale.endswith((".yaml", ".yml")) else SCALES_DIR / f"{scale}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in SCALES_DIR.glob("*.yaml"))
        raise ConfigError(f"scale {scale!r}: no file {path}; choose one of {names} or give a YAML path")
    return construct(ExperimentConfig, read_recipe(path, overrides), str(path), known_key)


# What `--dry-run` shrinks: every stage of a scale (its subsets, haystack, pretrain chain, modes, strides and
# model shape) at toy size on the CPU, so a GPU scale's code path is checked on a machine without one.
DRY_RUN = {"train_len": 2048, "train_samples": 8, "eval_samples": 2, "eval_multiples": [1, 2], "steps": 2,
           "save_every": 2, "max_seq_len": None, "device": "cpu", "precision": "fp32", "parallel": 2, "threads": 1,
           "build_workers": 1, "num_workers": 0}  # two processes at a time: the runs are start-up bound
DRY_RUN_PRETRAIN = {"train_samples": 8, "eval_samples": 2, "steps": 2, "save_every": 2}


def dry_run(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` at toy size on the CPU, one seed; the report says CONTROL FAILED (2 steps learn nothing)."""
    return dataclasses.replace(cfg, name=f"{cfg.name}-dry-run", seeds=cfg.seeds[:1],
                               **{**DRY_RUN, "train_len": min(cfg.train_len, DRY_RUN["train_len"])},
                               pretrain_set={**cfg.pretrain_set, **DRY_RUN_PRETRAIN})


def defaults() -> dict:
    """Every key's default: what a settings file written before a key existed means."""
    return field_defaults(ExperimentConfig)
