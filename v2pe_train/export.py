"""`v2pe-train export`: a clean inference folder from a run's checkpoint.

A folder written here holds `config.json` (the grown vocabulary and the tokenizer's `<IMG_CONTEXT>` id),
`generation_config.json`, the tokenizer the run trained with (image tokens included), `chat_template.jinja`,
`preprocessor_config.json` and `processor_config.json`, so `InternVLForConditionalGeneration.from_pretrained(dir)`,
`AutoTokenizer`, `AutoImageProcessor` and `V2PEGenerator.load(dir)` load it offline (model_files.py writes
those files). Training checkpoints get the same files; `export` adds nothing of the run's state (optimizer,
scheduler, RNG, loader position) and writes the weights in the `save_pretrained` layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .checkpoint import CheckpointError, checkpoints, read_json, step_dir
from .config import saved_settings
from .errors import V2PETrainError
from .eval.run import load_generator
from .model import save_model
from .model_files import folder_max_tiles, run_max_tiles


class ExportError(V2PETrainError, ValueError):
    """The run or step to export does not exist or is not a v2pe checkpoint; the message says which."""

    reason = "export"


def _checkpoint(run: Path, step: int | None) -> Path:
    run = Path(run)
    if (run / "meta.json").is_file():  # a step folder itself
        if step is not None:
            raise ExportError(f"{run} is one checkpoint already; --step applies to a run folder")
        return run
    found = checkpoints(run)
    if not found:
        raise ExportError(f"{run}: no checkpoint (expected a v2pe-train run folder with checkpoints/step_*)")
    if step is None:
        return found[-1][1]
    if not step_dir(run, step).is_dir():
        raise ExportError(f"{run}: no checkpoint at step {step}; there are steps {[s for s, _ in found]}")
    return step_dir(run, step)


def export(run: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Write the run's latest (or step `step`) model to `out` for inference: config, weights in the
    `save_pretrained` layout, tokenizer and chat template; no optimizer, RNG or loader state.

    Raises ExportError for a missing run or step, CheckpointError for a checkpoint that cannot be read.
    """
    from safetensors import SafetensorError


    source = _checkpoint(Path(run), step)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; export into a new or empty folder")
    meta = read_json(source / "meta.json")
    config = saved_settings((meta.get("config") if isinstance(meta, dict) else None) or {})
    try:
        # The run's own model (its spec, seed and tokenizer) with this checkpoint's weights.
        gen = load_generator(source)
    except SafetensorError as exc:
        raise CheckpointError(f"{source / 'model.safetensors'}: unreadable: {' '.join(str(exc).split())}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: cannot load the model to export: {' '.join(str(exc).split())}") from None
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(gen.model, tmp, gen.tokenizer, template=config.get("template"),
                   # the checkpoint's own setting (written while the run's builds were at hand), else the builds now
                   max_tiles=folder_max_tiles(source, run_max_tiles(config)))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
