"""The build recipe: one typed config, loaded from YAML, validated at the boundary with errors naming the key."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from v2pe_common.control import MODES as CONTROL_MODES
from v2pe_common.recipe import ConfigError, check_type, construct, read_recipe, unknown_key
from v2pe_common.lengths import format_length, parse_length
from v2pe_common.template import TEMPLATES

from .depth import parse_grid
from .task_registry import TASKS
from .writers.formats import FORMATS, task_format_error

SPLITS = ("train", "val", "test")
# Byte-capped shards are built from tasks of this many samples, each rolled into parts by size.
SAMPLES_PER_BYTE_TASK = 32
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)\s*$", re.I)
_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


# The range of every numeric key, checked before anything is opened (README, build options): wide enough for
# any real build, narrow enough that no value makes a run allocate or loop without end.
LIMITS = {
    "length": (1, 2**24),  # tokens per sample: 16M, 16 times the longest bin V2PE trains or tests
    "num_samples": (0, 10**9),
    "seed": (0, 2**63 - 1),
    "paste_grid": (1, 8),
    "shard_size": (1, 10**6),
    "shard_bytes": (1, 2**40),
    "workers": (1, 1024),
    "num_shards": (1, 10**6),
    "max_tiles": (1, 64),
}
MODES = ("concat", "paste")
EXECUTORS = ("local", "ray")
SOURCE_KINDS = ("synthetic", "docvqa", "infovqa", "chartqa", "generic")
# Page-like sets are concatenated, small-image sets pasted onto canvases (V2PE's image/ and paste/ subsets).
DEFAULT_MODE = {"synthetic": "concat", "docvqa": "concat", "infovqa": "concat", "chartqa": "paste", "generic": "concat"}
DEFAULT_SOURCE = "synthetic"
# The tar shards the trainer streams, plus the parquet shards `datasets.load_dataset(OUT)` and the Hub read.
DEFAULT_FORMATS = ("wds", "parquet")
_SOURCE_KEYS = {"name", "kind", "path", "mode", "share", "columns", "config", "kinds"}
_SOURCE_TYPES = {"name": str, "path": str, "mode": str, "columns": dict, "config": str, "kinds": list}


def parse_source(text: str) -> dict:
    """'synthetic', 'docvqa=/data/DocVQA' or 'docvqa=hub:lmms-lab/DocVQA' -> a source entry."""
    kind, _, path = text.partition("=")
    return {"kind": kind.strip(), **({"path": path.strip()} if path else {})}


def normalize_sources(entries: list, mode: str | None) -> list[dict]:
    """Fill defaults and check every key of every source entry; errors name `sources[i].key`."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError("sources: expected a non-empty list of source entries")
    out = []
    for i, raw in enumerate(entries):
        where = f"sources[{i}]"
        entry = parse_source(raw) if isinstance(raw, str) else dict(raw) if isinstance(raw, dict) else None
        if entry is None:
            raise ConfigError(f"{where}: expected a mapping or 'kind=path', got {raw!r}")
        unknown = set(entry) - _SOURCE_KEYS
        if unknown:
            raise ConfigError(f"{where}: {unknown_key(sorted(unknown)[0], _SOURCE_KEYS)}")
        kind = entry.get("kind") or entry.get("name")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}.kind: unknown source {kind!r}; choose one of {list(SOURCE_KINDS)}")
        entry["kind"] = kind
        entry.setdefault("name", kind)
        for key, kinds in _SOURCE_TYPES.items():
            if entry.get(key) is not None and not isinstance(entry[key], kinds):
                raise ConfigError(f"{where}.{key}: expected {kinds.__name__}, got {entry[key]!r}")
        if kind != "synthetic" and not entry.get("path"):
            raise ConfigError(f"{where}.path: source {kind!r} needs the path of its local copy (or hub:ID)")
        entry["mode"] = entry.get("mode") or mode or DEFAULT_MODE[kind]
        if entry["mode"] not in MODES:
            raise ConfigError(f"{where}.mode: choose one of {list(MODES)}")
        share = entry.setdefault("share", 1.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or share <= 0:
            raise ConfigError(f"{where}.share: expected a positive number, got {share!r}")
        entry["share"] = float(share)
        out.append(entry)
    return out


@dataclass(kw_only=True, slots=True)
class BuildConfig:
    task: str = "long_vqa"
    length: int = 64 * 1024
    min_length: int | None = None  # default: 7/8 of length
    num_samples: int = 64
    seed: int = 0
    split: str = "train"
    source: str = DEFAULT_SOURCE  # shorthand for a single entry of `sources`: 'synthetic' or 'docvqa=PATH'
    mode: str | None = None  # concat | paste; default per source kind
    sources: list | None = None  # the mix: [{kind, path, mode, share, ...}]; overrides `source`
    paste_grid: int = 3  # paste canvases are paste_grid x paste_grid cells of 448 px
    formats: list | None = None  # wds, parquet, internvl, mmniah (default DEFAULT_FORMATS)
    strict: bool = False  # the first bad source row or unavailable source is an error
    depth: float | str | None = None  # a number in [0, 1], a grid "0:1:0.2" (long_mr), or None: uniform
    options: dict | None = None  # the task's own typed options (long_mr: subset, num_needles, haystack, needles)
    shard_size: int = 8  # samples per shard task
    shard_bytes: int | None = None  # optional size cap: a task's output rolls into parts
    workers: int = 1
    # Scale-out: this run writes the shard tasks i with i % num_shards == shard_index and leaves the
    # manifest to `merge`; `executor` runs tasks on local processes or a Ray cluster. None change the bytes.
    num_shards: int = 1
    shard_index: int = 0
    executor: str = "local"
    out: str = ""
    tokenizer: str | None = None
    template: str = "internlm2-chat"
    max_tiles: int = 12
    image_format: str = "jpg"
    # The InternVL layout's meta.json: `root`/`annotation` relative to its folder (movable) or absolute (the
    # reference trainer resolves them from its working directory), and the `data_augment` flag it carries.
    internvl_root: str = "relative"
    internvl_augment: bool = False
    # Text from a source holding a control token (`<IMG_CONTEXT>`, `<|im_start|>`, ...): skip the row
    # (counted as special_token) or neutralise the token so it reads as plain text (v2pe_common.control).
    control_tokens: str = "skip"
    # build.json, the manifest and the card name local sources `local:NAME` (real paths stay in the hidden
    # .v2pe/paths.json, see privacy.py); true publishes the paths as given.
    publish_paths: bool = False

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{key}: {msg}")

        def bounded(key: str) -> None:
            lo, hi = LIMITS[key]
            value = getattr(self, key)
            need(value is None or lo <= value <= hi, key, f"must lie in [{lo}, {hi}], got {value!r}")

        need(self.task in TASKS, "task", f"unknown task {self.task!r}; choose one of {list(TASKS)}")
        for key in LIMITS:
            bounded(key)
        if self.min_length is None:
            self.min_length = self.length * 7 // 8
        need(0 <= self.min_length <= self.length, "min_length", f"must lie in [0, length={self.length}]")
        need(self.split in SPLITS, "split", f"choose one of {list(SPLITS)}")
        need(self.mode is None or self.mode in MODES, "mode", f"choose one of {list(MODES)}")
        self.sources = normalize_sources(self.sources or [self.source], self.mode)
        if isinstance(self.formats, str):
            self.formats = [f.strip() for f in self.formats.split(",") if f.strip()]
        self.formats = list(self.formats or DEFAULT_FORMATS)
        bad = [f for f in self.formats if f not in FORMATS]
        need(not bad and self.formats, "formats", f"unknown format {bad[:1]}; choose from {list(FORMATS)}")
        need("wds" in self.formats, "formats", "wds shards are always written (the other formats sit beside them)")
        why = task_format_error(self.formats, self.task)
        need(why is None, "formats", why)
        if isinstance(self.depth, str):
            parse_grid(self.depth)
        else:
            need(self.depth is None or 0.0 <= self.depth <= 1.0, "depth", "must lie in [0, 1]")
        need(0 <= self.shard_index < self.num_shards, "shard_index",
             f"must lie in [0, num_shards={self.num_shards}), got {self.shard_index}")
        need(self.executor in EXECUTORS, "executor", f"choose one of {list(EXECUTORS)}")
        need(self.template in TEMPLATES, "template", f"choose one of {sorted(TEMPLATES)}")
        need(self.image_format in ("jpg", "png"), "image_format", "choose jpg or png")
        need(self.internvl_root in ("relative", "absolute"), "internvl_root", "choose relative or absolute")
        need(self.control_tokens in CONTROL_MODES, "control_tokens", f"choose one of {list(CONTROL_MODES)}")
        if not self.out:
            self.out = f"out/{self.task}_{format_length(self.length)}"

    def sources_untouched(self) -> bool:
        """Whether `source`, `sources` and `mode` keep their defaults: tasks that read inputs of their own
        (long_mr's haystack, milebench's folders) refuse a build that sets them."""
        return self.mode is None and self.sources == normalize_sources([DEFAULT_SOURCE], None)

    # Arguments that change the bytes of the output; where and how it is run (`workers`, `out`, the
    # scale-out keys) do not, so every array task and the one-machine build share one build_id.
    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        if d["options"] is None:  # builds without task options keep the identity (and build_id) they had
            d.pop("options")
        for key in ("workers", "num_shards", "shard_index", "executor"):
            d.pop(key)
        d.pop("out")
        d.pop("source")  # folded into `sources`
        d.pop("strict")  # stops a build early but never changes its bytes
        for key, default in (("internvl_root", "relative"), ("internvl_augment", False), ("control_tokens", "skip"),
                             ("publish_paths", False)):
            if d[key] == default:  # builds that keep the defaults keep the identity (and build_id) they had
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, raw: dict, where: str = "recipe") -> BuildConfig:
        return construct(cls, raw, where, _kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None):
        return cls.from_dict(read_recipe(path, overrides), where=str(path))


def parse_options(pairs: list[str]) -> dict:
    """['subset=text_retrieval', 'num_needles=[2, 4]'] -> {'subset': 'text_retrieval', 'num_needles': [2, 4]}.

    Values are read as YAML scalars or flow lists/maps; a value YAML cannot read stays the string given
    ('interleaved=/data/obelics' has a '=' of its own).
    """
    import yaml

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--option: expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def parse_shard_size(value: str | int) -> tuple[int, int | None]:
    """'16' -> (16 samples, no byte cap); '256MB' -> (SAMPLES_PER_BYTE_TASK, 256e6)."""
    text = str(value)
    match = _BYTES.match(text)
    if match:
        number, unit = match.groups()
        return SAMPLES_PER_BYTE_TASK, int(float(number) * _BYTE_UNITS[unit.lower()])
    if text.strip().isdigit() and int(text) > 0:
        return int(text), None
    raise ConfigError(f"shard_size: {value!r} is neither a sample count (16) nor a byte size (256MB)")


def _kwargs(key: str, value, known: dict) -> dict:
    """The keyword arguments one recipe key gives: aliases resolved, lengths parsed, types checked."""
    name = {"len": "length", "min_len": "min_length"}.get(key, key)
    if name not in known:
        raise unknown_key(key, known)
    if name == "shard_size" and isinstance(value, str):
        count, cap = parse_shard_size(value)
        return {"shard_size": count, "shard_bytes": cap}
    return {name: _coerce(name, value, known[name].type)}


def _coerce(name: str, value, annotation: str):
    if name == "depth" and isinstance(value, str):  # "0.5" from a command line, or a grid "0:1:0.2"
        try:
            return check_type(name, float(value), annotation)
        except ValueError:
            return value
    if name in ("length", "min_length") and value is not None:
        try:
            return parse_length(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if name == "formats" and isinstance(value, str):  # 'wds,parquet' as on the command line
        value = [f.strip() for f in value.split(",") if f.strip()]
    if name in ("formats", "sources") and isinstance(value, list):
        kinds = (str,) if name == "formats" else (str, dict)
        bad = next((i for i, v in enumerate(value) if not isinstance(v, kinds)), None)
        if bad is not None:
            raise ConfigError(f"{name}[{bad}]: expected {' or '.join(k.__name__ for k in kinds)}, got {value[bad]!r}")
    return check_type(name, value, annotation)
