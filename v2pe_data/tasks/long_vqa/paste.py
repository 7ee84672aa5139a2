"""Long-VQA, paste mode: small VQA images pasted with visible labels onto canvases; the question names one.

Canvases are square grids of 448-px cells (one InternVL tile each), so every canvas costs the same tokens
and the number of canvases follows from the length goal. The target cell is drawn uniformly over depth
(or fixed); its canvas, cell, label and box are recorded, with every pasted item's provenance.
"""

from __future__ import annotations

from ...plan import PlanError, SamplePlan, sample_record, text_cost
from ...records import Item
from ...seeding import stable_rng
from .canvas import CanvasLayout, canvas_item
from .concat import INSTRUCTION, MAX_REPLANS, TaskContext

DRAW_TRIES = 64


def conversations(question: str, answer: str, n_canvases: int, label: str) -> list[dict]:
    human = "<image>\n" * n_canvases + f"Question about the picture labelled {label}: {question}\n{INSTRUCTION}"
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def _draw(ctx: TaskContext, rng, avoid: str, used: set[str]) -> Item:
    """A distractor from another document than the target; distinct from the others while the source allows."""
    fallback = None
    for _ in range(DRAW_TRIES):
        item = ctx.source.item(rng.randrange(len(ctx.source)))
        if item.doc_id == avoid:
            continue
        if item.doc_id not in used:
            return item
        fallback = fallback or item
    if fallback is None:
        raise PlanError(f"source {ctx.source.name!r} has no document other than the target's ({avoid})")
    return fallback


def plan(ctx: TaskContext, index: int, layout: CanvasLayout = CanvasLayout()) -> SamplePlan:
    rejected: dict[str, int] = {}
    canvas_cost = ctx.acc.image_cost(Item("paste", ctx.split, "", "", layout.size, layout.size, "jpg", "", ("",),
                                          load=lambda: b""))
    for attempt in range(MAX_REPLANS):
        rng = stable_rng(ctx.seed, ctx.task, ctx.split, "paste", index, attempt)
        target = ctx.source.item(rng.randrange(len(ctx.source)))
        text = text_cost(lambda n: conversations(target.question, target.answers[0], n, "0"), ctx.acc)
        goal = rng.randint(ctx.budget.min_len, ctx.budget.max_len)
        n = 0
        while text(n + 1) + (n + 1) * canvas_cost <= goal:
            n += 1
        if n == 0:
            rejected["replanned_out_of_bin"] = rejected.get("replanned_out_of_bin", 0) + 1
            continue
        cells = n * layout.cells
        used = {target.doc_id}
        distractors = []
        for _ in range(cells - 1):
            item = _draw(ctx, rng, target.doc_id, used)
            used.add(item.doc_id)
            distractors.append(item)
        depth = ctx.depth if ctx.depth is not None else rng.random()
        t = min(int(depth * cells), cells - 1)  # every cell equally likely for a uniform depth
        pasted = distractors[:t] + [target] + distractors[t:]
        result = _record(ctx, index, layout, pasted, t, rejected)
        if result is not None:
            return result
        rejected["replanned_out_of_bin"] = rejected.get("replanned_out_of_bin", 0) + 1
    raise PlanError(
        f"sample {index}: no paste plan fits [{ctx.budget.min_len}, {ctx.budget.max_len}] tokens after "
        f"{MAX_REPLANS} draws"
    )


def _record(ctx: TaskContext, index: int, layout: CanvasLayout, pasted: list[Item], t: int,
            rejected: dict[str, int]) -> SamplePlan | None:
    target = pasted[t]
    sample_id = f"{ctx.task}-{ctx.split}-{index:08d}"
    labels = [str(i + 1) for i in range(len(pasted))]
    n = len(pasted) // layout.cells
    groups = [range(k * layout.cells, (k + 1) * layout.cells) for k in range(n)]
    canvases = [canvas_item(sample_id, k, ctx.split, layout, [pasted[i] for i in g], [labels[i] for i in g])
                for k, g in enumerate(groups)]
    conv = conversations(target.question, target.answers[0], n, labels[t])
    tiles = [ctx.acc.tiles(c) for c in canvases]
    counted = ctx.acc.count(conv, tiles)
    if not ctx.budget.contains(counted.total):
        return None
    t_canvas, t_cell = divmod(t, layout.cells)
    record = sample_record(
        id=sample_id, task=ctx.task, subset=f"{ctx.source.name}_paste", items=canvases, conversations=conv,
        answer=target.answers[0], seed=ctx.seed, index=index, split=ctx.split, mode="paste", budget=ctx.budget,
        acc=ctx.acc, tiles=tiles, counted=counted,
        sources=[{"dataset": "paste", "split": ctx.split, "id": c.id, "doc_id": c.doc_id,
                  "role": "target" if k == t_canvas else "context"} for k, c in enumerate(canvases)],
        pasted=[{**it.provenance("target" if i == t else "distractor"), "canvas": i // layout.cells,
                 "cell": i % layout.cells, "label": labels[i], "box": list(layout.box(i % layout.cells))}
                for i, it in enumerate(pasted)],
        canvas={"grid": layout.grid, "cell": layout.cell, "size": layout.size},
        target_index=t_canvas, target_cell=t_cell, target_label=labels[t],
        depth=t / (len(pasted) - 1) if len(pasted) > 1 else 0.0,
        answers=list(target.answers), question_type=target.question_type)
    return SamplePlan(record=record, items=canvases, rejected=rejected)


def min_sample_tokens(ctx: TaskContext, layout: CanvasLayout = CanvasLayout()) -> int:
    probe = ctx.source.item(0)
    text = text_cost(lambda n: conversations(probe.question, probe.answers[0], n, "1"), ctx.acc)(1)
    canvas = Item("paste", ctx.split, "", "", layout.size, layout.size, "jpg", "", ("",), load=lambda: b"")
    return text + ctx.acc.image_cost(canvas)
