"""The files `from_pretrained` and `AutoTokenizer` need next to the weights: config.json, generation_config.json,
the tokenizer the run trained with (image tokens included) and `chat_template.jinja`.

Written by checkpoints (checkpoint.py), `model.save_model` and `v2pe-train export` (export.py) alike.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from v2pe_common.template import get_template
from v2pe_common.tokenizer import TextTokenizer

DEFAULT_TEMPLATE = "internlm2-chat"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


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
