"""What the model is trained on, token by token: a packed batch decoded with its targets and positions.

`v2pe-train inspect --recipe R` prints the first batches a run of recipe R reads (the same loader settings
as `train`): per packed sample its id and span, then one row per token with its index in the pack, its V2PE
position, the token, and `->` where the token is a training target. A run of image context tokens is one
row (count, first and last position), so a 1K-token sample with 3 images reads in a screen.
"""

from __future__ import annotations

from .data import Batch

IGNORE = -100


def _piece(tokenizer, token_id: int) -> str:
    text = tokenizer.hf.decode([token_id])
    return repr(text)[1:-1] if text.strip() != text or "\n" in text else text


def describe_batch(batch: Batch, tokenizer, *, max_rows: int | None = None) -> list[str]:
    """Rows describing `batch`: a header per packed sample, one row per token or image-context run."""
    ids = batch.input_ids[0].tolist()
    labels = batch.labels[0].tolist()
    positions = batch.position_ids[0].tolist()
    context = tokenizer.img_context_id
    bounds = batch.cu_seqlens.tolist()
    lines = [f"pack of {len(ids)} tokens, {batch.num_samples} sample(s), {int(batch.image_tiles.sum())} tile(s), "
             f"{sum(1 for x in labels if x != IGNORE)} target(s)"]
    rows = 0
    for k, sample_id in enumerate(batch.ids):
        start, stop = bounds[k], bounds[k + 1]
        targets = sum(1 for x in labels[start:stop] if x != IGNORE)
        lines.append(f"-- sample {sample_id}: tokens {start}..{stop - 1} of the pack ({stop - start} tokens, "
                     f"{targets} target(s))")
        lines.append(f"{'index':>7}  {'position':>10}  token")
        i = start
        while i < stop:
            if max_rows is not None and rows >= max_rows:
                lines.append(f"... ({len(ids) - i} more tokens; raise --rows to see them)")
                return lines
            if ids[i] == context:
                j = i
                while j < stop and ids[j] == context:
                    j += 1
                lines.append(f"{i:>7}  {positions[i]:>10.3f}  <IMG_CONTEXT> x {j - i} (positions "
                             f"{positions[i]:.3f} .. {positions[j - 1]:.3f})")
                i = j
            else:
                mark = "  -> target" if labels[i] != IGNORE else ""
                lines.append(f"{i:>7}  {positions[i]:>10.3f}  {_piece(tokenizer, ids[i])}{mark}")
                i += 1
            rows += 1
    return lines
