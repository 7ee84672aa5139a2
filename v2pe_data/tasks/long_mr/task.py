"""`LongMRTask`: sample index -> SamplePlan for V2PE's Long-MR (needles in an interleaved haystack).

For sample i: the subset is drawn by share from (seed, split, i); the target depth is fixed, the grid
value i covers, or uniform. Each attempt draws from (seed, "long_mr", split, i, attempt): the design
(needles, question, answer), a length goal inside the bin, the haystack blocks that fill it, the needles'
places; then the conversation is counted exactly with `Accounting.count`. A sample outside its bin, or
whose haystack happens to contain a needle's invented key, is drawn again (counted in `rejected`); a sample
is never emitted out of bin. Planning touches no pixels: image items load (and paste) on demand.
"""

from __future__ import annotations

from v2pe_common.formats.mmniah import CONTEXT_SEP, question_tail
from v2pe_common.tiling import image_token_count

from ...plan import Accounting, Budget, PlanError, SamplePlan, sample_record
from ...records import Item
from ...seeding import stable_rng, stable_seed
from ...sources.base import SourceError
from ...sources.synthetic import SyntheticSource
from ...sources.synthetic.ids import SPLIT_SIZE
from . import context as cx
from .haystack import open_haystack
from .options import LongMROptions
from .prompt import answer_text
from .subsets import Design, DesignContext, design

TASK = "long_mr"
MAX_REPLANS = 16
FLOOR_DRAWS = 16
HAYSTACK_PICK_TRIES = 64


class LongMRTask:
    """Plans Long-MR samples of one split into one length bin. Cheap to fork into worker processes."""

    name = TASK

    def __init__(self, options: LongMROptions, *, split: str, seed: int, budget: Budget, acc: Accounting,
                 haystack=None, strict: bool = False, control=None):
        self.options, self.split, self.seed, self.budget, self.acc = options, split, seed, budget, acc
        self.haystack = haystack if haystack is not None else open_haystack(
            options.haystack, split, seed, options.image_format, strict, control)
        if len(self.haystack) == 0:
            raise SourceError(f"long_mr: haystack {self.haystack.name!r} has no valid {split} documents"
                              f" ({len(getattr(self.haystack, 'rejected', []))} rows rejected)")
        self._subsets = [s for s, _ in options.subsets]
        self._shares = [w for _, w in options.subsets]
        self._needle_pages = SyntheticSource(split=split, seed=stable_seed("long_mr-needles", seed) % 2**31,
                                             image_format=options.image_format)
        self._sep_cost = len(acc.tokenizer.encode(cx.SEP))

    # -- the Task protocol

    @classmethod
    def open(cls, cfg, acc: Accounting) -> LongMRTask:
        """From a build config: task options under `options:`, the depth (number or grid) at top level."""
        from v2pe_common.recipe import ConfigError

        from ..base import control_of

        if not cfg.sources_untouched():
            raise ConfigError("long_mr draws from its haystack (options.haystack), not from sources/--source/--mode")
        raw = dict(cfg.options or {})
        if cfg.depth is not None:
            raw["depth"] = cfg.depth
        raw.setdefault("image_format", cfg.image_format)
        options = LongMROptions.from_dict(raw, where="options")
        try:
            return cls(options, split=cfg.split, seed=cfg.seed, budget=Budget(cfg.min_length, cfg.length), acc=acc,
                       strict=cfg.strict, control=control_of(cfg, acc))
        except SourceError as exc:  # an unreadable or empty haystack; strict bad rows
            raise ConfigError(str(exc)) from None

    @property
    def inputs(self) -> list:
        from ..base import Input

        return [Input(self.options.haystack, self.haystack, "available", role="haystack")]

    def check_feasible(self, min_len: int, max_len: int) -> None:
        from ..base import check_bin

        check_bin(self.min_tokens(), min_len, max_len, "the prompt, needles and choices of a Long-MR sample")

    def plan(self, index: int) -> SamplePlan:
        subset = self.subset_for(index)
        depth = self.options.depth_for(index)
        rejected: dict[str, int] = {}
        for attempt in range(MAX_REPLANS):
            rng = stable_rng(self.seed, TASK, self.split, index, attempt)
            spec = design(subset, rng, self._design_context(index), depth)
            outcome = self._assemble(index, spec, depth, rng)
            if isinstance(outcome, SamplePlan):
                outcome.rejected = rejected
                return outcome
            rejected[outcome] = rejected.get(outcome, 0) + 1
        why = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
        raise PlanError(f"long_mr sample {index} ({subset}): no plan fits [{self.budget.min_len}, "
                        f"{self.budget.max_len}] tokens after {MAX_REPLANS} draws ({why})")

    def min_tokens(self) -> int:
        """Tokens every configured subset needs before any haystack text: template, question, answer, choices,
        needles, and one single-tile host image per pasted picture group; the most demanding subset decides.

        A subset's floor is the least of FLOOR_DRAWS designs: designs vary (a jigsaw has 2-6 pieces of a
        picture of random size), so one draw would overstate it and refuse bins most designs fit. A bin above
        the floor can still be too small for some designs; those are re-drawn, and a sample none of whose
        draws fits fails with one line naming it."""
        host = image_token_count(1, self.acc.tiling)
        floors = []
        for subset in self._subsets:
            costs = []
            for k in range(FLOOR_DRAWS):
                rng = stable_rng(self.seed, TASK, "min_tokens", subset, k)
                spec = design(subset, rng, self._design_context(k), 0.5)
                costs.append(self._overhead(spec) + sum(self._insert_costs(spec)) + host * len(spec.pastes))
            floors.append(min(costs))
        return max(floors)

    def subset_for(self, index: int) -> str:
        if len(self._subsets) == 1:
            return self._subsets[0]
        return stable_rng(self.seed, TASK, "subset", self.split, index).choices(self._subsets, self._shares)[0]

    def describe(self) -> dict:
        info = self.haystack.describe() if hasattr(self.haystack, "describe") else {"split": self.split}
        return {"task": TASK, "subsets": dict(self.options.subsets), "depth": self.options.depth,
                "num_needles": list(self.options.num_needles), "needles": self.options.needles, "haystack": info}

    # -- pieces of a plan

    def _design_context(self, index: int) -> DesignContext:
        return DesignContext(sample_id=self._sample_id(index), split=self.split,
                             num_needles=self.options.num_needles, needle_image=self._needle_image)

    def _sample_id(self, index: int) -> str:
        return f"{TASK}-{self.split}-{index:08d}"

    def _needle_image(self, rng) -> Item:
        """A whole image from outside the sample's haystack: a rendered page or chart of the needle stream, or
        an image of a haystack document (then excluded from the fill by its doc_id)."""
        if self.options.needles == "synthetic":
            k = rng.randrange(SPLIT_SIZE)
            item = self._needle_pages.item(k)
            doc = f"needle-{self.split}-{k:09d}"
            return Item(dataset="synthetic_needles", split=self.split, id=doc, doc_id=doc, width=item.width,
                        height=item.height, ext=item.ext, question="", answers=("",), load=item.load)
        for _ in range(HAYSTACK_PICK_TRIES):
            images = self.haystack.document(rng.randrange(len(self.haystack))).images
            if images:
                return rng.choice(images)
        raise PlanError(f"needles=haystack: haystack {self.haystack.name!r} offered no image in "
                        f"{HAYSTACK_PICK_TRIES} documents for a jigsaw needle; give a haystack with images or "
                        "needles=synthetic")

    def _cost(self, block: str | Item) -> int:
        if isinstance(block, Item):
            return self.acc.image_cost(block)
        return len(self.acc.tokenizer.encode(block))

    def _insert_costs(self, spec: Design) -> list[int]:
        return [self._cost(i.text.text if i.text is not None else i.item) + 2 * self._sep_cost for i in spec.inserts]

    def _conversation(self, context: str, spec: Design) -> list[dict]:
        human = context + CONTEXT_SEP + question_tail(spec.question, spec.choices, len(spec.choice_items))
        gpt = answer_text(spec.answer, bool(spec.choices or spec.choice_items))
        return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]

    def _overhead(self, spec: Design) -> int:
        """Exact tokens of everything but the context: template, question, choices, answer."""
        tiles = [self.acc.tiles(it) for it in spec.choice_items]
        return self.acc.count(self._conversation("", spec), tiles).total

    def _assemble(self, index: int, spec: Design, depth: float | None, rng) -> SamplePlan | str:
        """A plan, or the reason this draw is dropped."""
        lo, hi = self.budget.min_len, self.budget.max_len
        margin = min(64, (hi - lo) // 8)
        insert_costs = self._insert_costs(spec)
        fixed = self._overhead(spec) + sum(insert_costs)
        cap = hi - margin // 2 - fixed
        if cap < 0:  # the prompt and needles alone pass the bin: min_tokens() says so up front
            return "replanned_out_of_bin"
        goal = max(0, rng.randint(lo + margin, hi - margin) - fixed)
        filled = cx.fill(self.haystack, rng, goal, cap, self._cost, self._sep_cost, spec.reserve_exclude())
        if filled.est < goal and filled.exhausted:
            return "replanned_haystack_exhausted"
        placed = cx.place(filled, spec, rng, insert_costs)
        if placed is None:
            return "replanned_too_few_images"
        blocks, found = placed
        m = cx.measure(blocks, self.acc)
        if any(m.context.count(key) != n for key, n in spec.keys.items()):
            return "replanned_needle_collision"
        conv = self._conversation(m.context, spec)
        tiles = m.tiles + [self.acc.tiles(it) for it in spec.choice_items]
        counted = self.acc.count(conv, tiles)
        if not self.budget.contains(counted.total):
            return "replanned_out_of_bin"
        return self._record(index, spec, depth, blocks, found, m, conv, tiles, counted, filled.documents)

    def _record(self, index, spec: Design, depth, blocks, found, m: cx.Measured, conv, tiles, counted,
                documents: int) -> SamplePlan:
        image_of = {b: k for k, b in enumerate(m.images)}
        needles, depths = [], []
        for n in found:
            if n.kind == "text":
                at = cx.text_position(m, self.acc, n.block)
                needles.append({"kind": "text", "text": n.text, "key": n.key, "offset": m.offsets[n.block]})
            else:
                k = image_of[n.block]
                at = m.image_start(k)
                item = blocks[n.block]
                box = list(n.box) if n.box else [0, 0, item.width, item.height]
                entry = {"kind": n.kind, "image": k, "box": box}
                entry.update({"description": n.picture.name, "shape": n.picture.shape, "colour": n.picture.colour}
                              if n.picture else n.info)
                needles.append(entry)
            depths.append(at / m.length)
        if not depths:  # the fake's absent needle: where it would have been
            depths = [spec.extra.get("depth_if_absent", 0.0)]
        placed_depth = depths[0] if len(depths) == 1 else depths
        carriers = sorted({e["image"] for e in needles if "image" in e})
        items = [blocks[b] for b in m.images] + list(spec.choice_items)
        n_ctx = len(m.images)
        roles = ["needle" if k in carriers else "haystack" for k in range(n_ctx)]
        sources = [it.provenance(role) for it, role in zip(items, roles)]
        sources += [it.provenance("target" if j == spec.answer else "distractor")
                    for j, it in enumerate(spec.choice_items)]
        record = sample_record(
            id=self._sample_id(index), task=TASK, subset=spec.subset, items=items, conversations=conv,
            answer=spec.answer, seed=self.seed, index=index, split=self.split, mode="needle", budget=self.budget,
            acc=self.acc, tiles=tiles, counted=counted, sources=sources,
            target_index=carriers or None, depth=placed_depth, target_depth=depth, question_type=spec.subset,
            question=spec.question, question_offset=len(m.context) + len(CONTEXT_SEP), needles=needles,
            placed_depth=placed_depth, choices=spec.choices, choice_images=list(range(n_ctx, len(items))) or None,
            context_length=m.length, context_length_text=m.text_length, context_length_image=m.image_length,
            num_images=n_ctx, haystack_documents=documents, design=spec.extra)
        return SamplePlan(record=record, items=items, rejected={})

