"""What the data stream reads and how it turns a record into a training sample: two typed sections, each key
declared once. The training recipe holds them as its `data` and `sample` sections; `LoaderConfig` is both plus
the run's layout; `SampleProcessor` takes the `sample` section as it is.

Validated by pydantic: YAML's strings for numbers ('1e-3') are read as numbers, a bad value names its key.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from v2pe_common.control import MODES as CONTROL_MODES
from v2pe_common.lengths import parse_length

from ..positions import MODES as POSITION_MODES
from ..positions import STRIDES
from .fast_tiling import BACKENDS as TILING_BACKENDS
from .mixture import parse_datasets
from .shards import FORMATS


class Section(BaseModel):
    """A recipe section: unknown keys refused, assignments validated, instances compared by value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, raw):
        # pydantic's lax mode reads `max_steps: true` as 1; a recipe meaning a number never writes a bool
        if isinstance(raw, dict):
            for name, value in raw.items():
                field = cls.model_fields.get(name)
                kinds = getattr(field.annotation, "__args__", (field.annotation,)) if field else ()
                if isinstance(value, bool) and bool not in kinds and ({int, float} & set(kinds)):
                    raise ValueError(f"{name}: expected a number, got {value!r}")
        return raw


def choice(key: str, allowed) -> Any:
    """A field validator refusing a value outside `allowed` (`_mode = choice("position_mode", MODES)` in a
    section's body); the ValueError names the key, which pydantic puts on a line of its own."""

    def check(cls, value):
        if value not in allowed:
            raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return value

    return field_validator(key)(check)


class DataConfig(Section):
    """Which samples are read and how they are packed."""

    paths: list[str] = Field(default_factory=list, description="v2pe-data build folders (manifest.json), shard "
                             "files (.tar, .parquet, .jsonl), globs or InternVL meta.json files")
    format: str = Field("wds", description="which copy of a build to read: wds, parquet or internvl (never two: the "
                        "same samples)")
    datasets: Optional[list] = Field(None, description="a train-time mixture instead of paths: [{path, weight?, "
                                     "repeat_time?, format?}] (v2pe_train/data/mixture.py)")
    max_seq_len: Optional[int] = Field(None, ge=1, le=2**24, description="tokens per packed sequence (34k, 64k also "
                                       "read); null: one sample per batch, no limit")
    max_tiles_per_pack: Optional[int] = Field(None, ge=1, le=10**6, description="tiles per pack at most (the "
                                              "reference's num_images_expected, 135); null: tokens alone decide")
    num_workers: int = Field(0, ge=0, le=256, description="data loader worker processes per rank")
    strict: bool = Field(False, description="stop at the first bad shard, image or record instead of skipping and "
                         "counting it")
    verify_shards: bool = Field(True, description="check each shard's sha256 against its manifest before reading it")
    allow_eval_data: bool = Field(False, description="read records built from an evaluation benchmark (MileBench); "
                                  "refused by default: training on them contaminates its scores")

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value):
        if isinstance(value, (str, os.PathLike)):
            return [os.fspath(value)]
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value] if isinstance(value, (list, tuple)) \
            else value

    @field_validator("max_seq_len", mode="before")
    @classmethod
    def _length(cls, value):
        return None if value is None else parse_length(value)

    _format = choice("format", FORMATS)

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value):
        if value is not None:
            parse_datasets(value)  # ValueError naming the entry and its key
        return value


class SampleConfig(Section):
    """How one record becomes token ids, V2PE positions, targets and pixels."""

    position_mode: str = Field("default", description="default (δ = 1), v2pe_fix (one stride) or v2pe_rnd (a random "
                               "stride per image)")
    stride: Optional[int] = Field(None, description="v2pe_fix's stride in {1, 2, 4, ..., 256} (δ = stride / 256)")
    template: Optional[str] = Field(None, description="chat template; default: the one recorded in the data")
    data_augment: bool = Field(False, description="re-encode every training tile as JPEG at quality 75..100")
    train_on_prompt: bool = Field(False, description="every text token is a target (system, user turns), not only "
                                  "the replies")
    train_on_eos: bool = Field(True, description="the end-of-turn marker closing each reply is a target (the "
                               "reference's rule)")
    tiling_backend: str = Field(
        "reference", description="reference (transformers' processor, pixel-exact with the data side) or fast "
        "(torch resize, ~4.4x the tiles/s, within 2 levels)")
    control_tokens: str = Field("skip", description="a turn holding a control token (<IMG_CONTEXT>, <|im_start|>, "
                                "...): skip the sample (counted as special_token) or neutralise the token")

    _mode = choice("position_mode", POSITION_MODES)

    _backend = choice("tiling_backend", TILING_BACKENDS)

    _control = choice("control_tokens", CONTROL_MODES)

    @model_validator(mode="after")
    def _stride(self):
        if self.position_mode == "v2pe_fix" and self.stride not in STRIDES:
            raise ValueError(f"stride: v2pe_fix needs stride in {list(STRIDES)}, got {self.stride!r}")
        return self

