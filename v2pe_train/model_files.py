"""The files `from_pretrained`, `AutoTokenizer` and `AutoImageProcessor` need next to the weights: config.json,
generation_config.json, the tokenizer the run trained with (image tokens included, named for InternVL's
processor), `chat_template.jinja`, `preprocessor_config.json` (InternVL's tiling as transformers' GotOcr2 image
processor) and `processor_config.json` (`AutoProcessor` -> `InternVLProcessor`, where torchvision is installed).

Written by checkpoints (checkpoint.py), `model.save_model` and `v2pe-train export` (export.py) alike.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from v2pe_common.buildfolder import MANIFEST_FILE
from v2pe_common.template import get_template
from v2pe_common.tiling import IMG_CONTEXT, IMG_END, IMG_START, TOKENS_PER_TILE, TilingConfig, image_processor
from v2pe_common.tokenizer import TextTokenizer

DEFAULT_TEMPLATE = "internlm2-chat"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
PROCESSOR_FILE = "processor_config.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
# The Pillow class by name: it loads without torchvision and gives the pixels the builder's counts assume;
# the generic name would pick the torchvision class where that is installed (another resize).
IMAGE_PROCESSOR_TYPE = "GotOcr2ImageProcessorPil"
# Named tokens InternVLProcessor reads off the tokenizer. It also wants a `video_token`: pointing it at the
# context token (already in the vocabulary; the image alternative of its pattern matches first) loads the
# processor without adding a token the embeddings do not have. Videos are not supported.
IMAGE_TOKEN_NAMES = {"start_image_token": IMG_START, "end_image_token": IMG_END,
                     "context_image_token": IMG_CONTEXT, "video_token": IMG_CONTEXT}


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
    config_path = Path(directory) / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, **IMAGE_TOKEN_NAMES}, indent=2, ensure_ascii=False) + "\n")
    (Path(directory) / CHAT_TEMPLATE_FILE).write_text(chat_template(template))


def save_processor(directory: Path, max_tiles: int = TilingConfig().max_tiles) -> None:
    """`preprocessor_config.json`: InternVL's tiling (448-px tiles, 1..`max_tiles` of them plus a thumbnail,
    ImageNet mean/std) as transformers' GotOcr2 processor, the same one `v2pe_common.tiling` counts with;
    and `processor_config.json` for `AutoProcessor` (256 context tokens a tile)."""
    directory = Path(directory)
    image_processor(TilingConfig(max_tiles=max_tiles)).save_pretrained(str(directory))
    path = directory / IMAGE_PROCESSOR_FILE
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "image_processor_type": IMAGE_PROCESSOR_TYPE}, indent=2, sort_keys=True)
                    + "\n")
    processor = {"processor_class": "InternVLProcessor", "image_seq_length": TOKENS_PER_TILE}
    (directory / PROCESSOR_FILE).write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")


def folder_max_tiles(folder: str | Path, default: int) -> int:
    """`max_patches` of a model folder's image processor config (`save_processor`); `default` without one."""
    try:
        return int(json.loads((Path(folder) / IMAGE_PROCESSOR_FILE).read_text())["max_patches"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def run_max_tiles(settings: dict) -> int:
    """Tiles per image at most in a run's data: the largest `tiling.max_tiles` of the build manifests its
    (flat, `saved_settings`) config reads; InternVL's default 12 when none can be read (a foreign JSONL,
    a build moved away since)."""
    paths = list(settings.get("data") or [])
    paths += [d.get("path") for d in settings.get("datasets") or [] if isinstance(d, dict)]
    found = []
    for path in paths:
        manifest = Path(str(path)) / MANIFEST_FILE
        try:
            found.append(int(json.loads(manifest.read_text())["tiling"]["max_tiles"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(found, default=TilingConfig().max_tiles)
