"""What `from_pretrained` needs next to the weights, and `v2pe-train export`: a clean inference folder.

A folder written here holds `config.json` (the grown vocabulary and the tokenizer's `<IMG_CONTEXT>` id),
`generation_config.json`, the tokenizer the run trained with (image tokens included) and
`chat_template.jinja`, so `InternVLForConditionalGeneration.from_pretrained(dir)`, `AutoTokenizer` and
`V2PEGenerator.load(dir)` load it offline. Training checkpoints get the same files; `export` adds nothing
of the run's state (optimizer, scheduler, RNG, loader position) and writes the weights in the
`save_pretrained` layout.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from torch import nn

from v2pe_common.template import get_template
from v2pe_common.tokenizer import TextTokenizer

from .checkpoint import CheckpointError, _read_json, checkpoints, step_dir
from .config import saved_settings

DEFAULT_TEMPLATE = "internlm2-chat"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


class ExportError(ValueError):
    """The run or step to export does not exist or is not a v2pe checkpoint; the message says which."""


def chat_template(name: str | None = None) -> str:
    """A Jinja chat template rendering messages the way the trainer's `ChatTemplate` does.

    Turn text is stripped as in training; an image content part becomes `<IMG_CONTEXT>` followed by a
    newline, the placeholder transformers' InternVL processor expands into `<img>` + context tokens + `</img>`.
    """
    template = get_template(name or DEFAULT_TEMPLATE)
    sep = json.dumps(template.turn_sep)  # a Jinja string literal: "\n" must stay an escape, not a raw newline
    system = json.dumps(template.system, ensure_ascii=False)
    # No whitespace control ({%- -%}) anywhere: it would also eat the newlines that belong to the format.
    return (
        ("{{ bos_token }}" if template.add_bos else "")
        + "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% else %}{% set system = " + system + " %}{% endif %}"
        "{% if system %}<|im_start|>system\n{{ system }}<|im_end|>{{ " + sep + " }}{% endif %}"
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] | trim }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}<IMG_CONTEXT>\n{% elif part['type'] == 'text' %}{{ part['text'] | trim }}"
        "{% endif %}{% endfor %}{% endif %}<|im_end|>{{ " + sep + " }}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def save_model_config(model: nn.Module, directory: Path) -> None:
    """config.json and generation_config.json as `save_pretrained` writes them, without touching `model`."""
    config = copy.deepcopy(model.config)
    # save_pretrained records these two; a pipeline or AutoModel picks the class from `architectures`.
    config.architectures = [type(model).__name__]
    config.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    config.save_pretrained(str(directory))
    if model.can_generate():
        model.generation_config.save_pretrained(str(directory))


def save_tokenizer(tokenizer: TextTokenizer, directory: Path, template: str | None = None) -> None:
    """The tokenizer (with the image tokens the model's embeddings were grown for) and the chat template.

    The template goes in as its own file, which AutoTokenizer reads, rather than onto `tokenizer.hf`: that
    object is shared (load_tokenizer caches it) and belongs to the caller.
    """
    tokenizer.hf.save_pretrained(str(directory))
    (Path(directory) / CHAT_TEMPLATE_FILE).write_text(chat_template(template))


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

    from .eval.run import load_generator
    from .model import save_model

    source = _checkpoint(Path(run), step)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; export into a new or empty folder")
    meta = _read_json(source / "meta.json")
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
        save_model(gen.model, tmp, gen.tokenizer, template=config.get("template"))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
