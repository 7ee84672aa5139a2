"""Foreign InternVL lines (no `meta` of ours): tiles and tokens counted at load, with the data side's accounting.

The released V2PE-Data and any InternVL fine-tuning JSONL carry only `image` and `conversations`. The
InternVL codec reads each image's size from its header (`ForeignRecord`); here the sample is planned
exactly as a record of ours would have been counted by v2pe-data: tiles by `v2pe_common.tiling` with the
meta entry's `max_dynamic_patch` (the loader's tiling otherwise, default 12 tiles with a thumbnail),
tokens by `v2pe_common.encoding.encode` under the loader's template (default internlm2-chat, the
reference's). Turns holding a control token are skipped as `special_token` (or neutralised, as the
loader's `control_tokens` says). Every assistant turn is supervised (the template's rule for multi-turn), a single image
without `<image>` gets one prepended, text-only lines have no tiles. There is no recorded count to check
against: the count made here is the sequence length.
"""

from __future__ import annotations

import dataclasses

from v2pe_common import encoding
from v2pe_common.formats.internvl import ForeignRecord
from v2pe_common.template import get_template
from v2pe_common.tiling import TilingConfig, num_tiles

from .stats import SampleError

DEFAULT_TEMPLATE = "internlm2-chat"  # the reference trainer's template for InternLM2-based V2PE


def foreign_tiling(base: TilingConfig | None, max_dynamic_patch: int | None) -> TilingConfig:
    """The loader's tiling (default InternVL's) with the meta entry's tile cap, when it gives one."""
    tiling = base or TilingConfig()
    if max_dynamic_patch is None or max_dynamic_patch == tiling.max_tiles:
        return tiling
    return dataclasses.replace(tiling, max_tiles=max_dynamic_patch, min_tiles=min(tiling.min_tiles, max_dynamic_patch))


def plan(processor, record: ForeignRecord):
    """`SampleProcessor.plan` for a foreign line: (record, encoded sample, tiling); SampleError("schema") when
    the conversations cannot be encoded (a placeholder count that differs from the images, an unknown role)."""
    tiling = foreign_tiling(processor.tiling, record["max_dynamic_patch"])
    template = processor.template or get_template(DEFAULT_TEMPLATE)
    tiles = [num_tiles(w, h, tiling) for w, h in record["image_sizes"]]
    conversations = processor.screen_turns(record["conversations"])
    if conversations is not record["conversations"]:
        record = ForeignRecord({**record, "conversations": conversations})
    try:
        enc = encoding.encode(conversations, tiles, processor.tokenizer, template, tiling,
                              supervise_prompt=processor.train_on_prompt,
                              supervise_end_of_turn=processor.train_on_eos)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SampleError("schema", f"cannot encode the conversations: {exc}") from None
    processor.check_image_tokens(enc, tiling)
    processor.check_limits(enc)
    return record, enc, tiling
