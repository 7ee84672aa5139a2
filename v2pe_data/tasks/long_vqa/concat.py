"""Long-VQA, concat mode: pages from distinct documents in sequence, one of them carries the question.

The target's place in the sequence is drawn uniformly over depth (or fixed) and recorded, distractors are
added until the exact token count lands in the bin. A plan that cannot land in the bin is drawn again
from the next sub-seed; it is never emitted out of bin.

A question must stay answerable among distractors. Synthetic documents carry a unique title that the
question names. Real pages (DocVQA, InfoVQA) have none, so every image gets a visible text label
("Image 7: <image>") and the question names the target's label.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2pe_common.tiling import image_token_count

from ...plan import Accounting, Budget, PlanError, SamplePlan, sample_record, text_cost
from ...records import Item
from ...seeding import stable_rng

INSTRUCTION = "Answer the question using a single word or phrase."
# Candidates that overshoot the remaining budget before giving up on filling this draw.
MAX_MISSES = 48
MAX_REPLANS = 16


@dataclass(frozen=True)
class TaskContext:
    task: str
    split: str
    seed: int
    budget: Budget
    acc: Accounting
    source: object  # anything with item(index) -> Item and __len__
    depth: float | None = None


def conversations(question: str, answer: str, n_images: int, target: int | None = None) -> list[dict]:
    """The question turn; with `target` set, images are labelled and the question names the target's label."""
    if target is None:
        human = "<image>\n" * n_images + f"{question}\n{INSTRUCTION}"
    else:
        images = "".join(f"Image {i + 1}: <image>\n" for i in range(n_images))
        human = f"{images}Question about Image {target + 1}: {question}\n{INSTRUCTION}"
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def _labelled(item: Item) -> bool:
    return not item.title


def _draw(ctx: TaskContext, rng, used_docs: set[str]) -> Item:
    for _ in range(64):
        item = ctx.source.item(rng.randrange(len(ctx.source)))
        if item.doc_id not in used_docs:
            return item
    raise PlanError(f"source {ctx.source.name!r} keeps returning documents already in the sample")


def _fill(ctx: TaskContext, rng, target: Item) -> list[Item] | None:
    """Target plus distractors whose exact count lies in the budget, or None if this draw misses."""
    label = 0 if _labelled(target) else None
    cost_of = text_cost(lambda n: conversations(target.question, target.answers[0], n, label), ctx.acc)
    items = [target]
    used = {target.doc_id}
    image_tokens = ctx.acc.image_cost(target)
    if cost_of(1) + image_tokens > ctx.budget.max_len:
        return None
    # A goal drawn inside the bin spreads lengths over it instead of piling them at its lower edge.
    goal = rng.randint(ctx.budget.min_len, ctx.budget.max_len)
    misses = 0
    while cost_of(len(items)) + image_tokens < goal:
        try:
            cand = _draw(ctx, rng, used)
        except PlanError:  # the source has too few distinct documents for this goal: draw another goal
            return None
        cost = ctx.acc.image_cost(cand)
        if cost_of(len(items) + 1) + image_tokens + cost > ctx.budget.max_len:
            misses += 1
            if misses >= MAX_MISSES:
                return None
            continue
        items.append(cand)
        used.add(cand.doc_id)
        image_tokens += cost
    return items


def plan(ctx: TaskContext, index: int) -> SamplePlan:
    rejected: dict[str, int] = {}
    for attempt in range(MAX_REPLANS):
        rng = stable_rng(ctx.seed, ctx.task, ctx.split, index, attempt)
        target = _draw(ctx, rng, set())
        items = _fill(ctx, rng, target)
        if items is None:
            rejected["replanned_out_of_bin"] = rejected.get("replanned_out_of_bin", 0) + 1
            continue
        distractors = items[1:]
        rng.shuffle(distractors)
        n = len(items)
        depth = ctx.depth if ctx.depth is not None else rng.random()
        t = min(int(depth * n), n - 1)  # every position equally likely for a uniform depth
        ordered = distractors[:t] + [target] + distractors[t:]
        plan_ = _record(ctx, index, ordered, t, rejected)
        if plan_ is None:  # labels' digits moved the exact count out of the bin: draw again
            rejected["replanned_out_of_bin"] = rejected.get("replanned_out_of_bin", 0) + 1
            continue
        return plan_
    raise PlanError(
        f"sample {index}: no plan fits [{ctx.budget.min_len}, {ctx.budget.max_len}] tokens after {MAX_REPLANS} draws"
    )


def _record(ctx: TaskContext, index: int, items: list[Item], t: int, rejected: dict[str, int]) -> SamplePlan | None:
    target = items[t]
    conv = conversations(target.question, target.answers[0], len(items), t if _labelled(target) else None)
    tiles = [ctx.acc.tiles(it) for it in items]
    counted = ctx.acc.count(conv, tiles)
    if not ctx.budget.contains(counted.total):
        return None
    n = len(items)
    record = sample_record(
        id=f"{ctx.task}-{ctx.split}-{index:08d}", task=ctx.task, subset=f"{ctx.source.name}_concat", items=items,
        conversations=conv, answer=target.answers[0], seed=ctx.seed, index=index, split=ctx.split, mode="concat",
        budget=ctx.budget, acc=ctx.acc, tiles=tiles, counted=counted,
        sources=[it.provenance("target" if i == t else "distractor") for i, it in enumerate(items)],
        target_index=t, depth=t / (n - 1) if n > 1 else 0.0, answers=list(target.answers),
        question_type=target.question_type)
    return SamplePlan(record=record, items=items, rejected=rejected)


def min_sample_tokens(ctx: TaskContext) -> int:
    """Fewest tokens any sample of this task can have: the prompt around one single-tile image."""
    probe = ctx.source.item(0)
    label = 0 if _labelled(probe) else None
    text = text_cost(lambda n: conversations(probe.question, probe.answers[0], n, label), ctx.acc)(1)
    return text + image_token_count(1, ctx.acc.tiling)
