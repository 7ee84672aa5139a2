"""One streamed record -> token ids, labels, V2PE positions and tiles, or a counted reason to skip it.

The cheap checks run on the record alone, before any image byte is read: schema and invariants, tiles
the trainer's tiling gives each image size, the encoded length against `meta["num_tokens"]`, and the
`max_seq_len` / `max_tiles_per_pack` limits. Images are then decoded one at a time as their members come
off the shard (tar members, parquet row values or InternVL image files alike): decode (PIL), tile with the
same transformers processor the data side counts with, normalise through a lookup table that gives the
processor's own bits straight in the batch dtype (`pixel_lut`), keep only the tile tensor, close the image.

A context-parallel rank encodes only its share of a pack's tiles, so it should decode only those: a
processor made with `defer_pixels=True` keeps each image's encoded bytes and its tile count (`ImagePlan`)
instead of tiles, checks each image's header (size -> tiles) so every rank of the group skips the same
samples, and `pack_pixels` decodes a tile range of a formed pack: the images inside the range, each once,
keeping only the tiles in it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass, fields

import numpy as np
import torch

from v2pe_common import encoding, schema
from v2pe_common.formats.internvl import ForeignRecord
from v2pe_common.template import ChatTemplate, get_template
from v2pe_common.tiling import TilingConfig, image_processor, num_tiles
from v2pe_common.tokenizer import TextTokenizer

from ..positions import position_ids
from v2pe_common.tiling import IMAGENET_MEAN, IMAGENET_STD

from v2pe_common.control import MODES as CONTROL_MODES, ControlTokenError, control_tokens  # noqa: F401

from . import fast_tiling, foreign, pixel_lut
from .options import SampleConfig
from .shards import BadMember, InternVLSample, ParquetSample, TarSample
from .stats import LoaderError, SampleError

log = logging.getLogger("v2pe_train.data")

# InternVL normalises with the ImageNet statistics (the reference's build_transform; the HF InternVL
# processor configs say the same); v2pe_common.tiling configures the processor with them.
PIXEL_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass(slots=True)
class ImagePlan:
    """One image whose tiles are decoded later (`pack_pixels`): its bytes and everything `tile` needs."""

    name: str
    data: bytes
    tiles: int
    tiling: TilingConfig
    key: tuple[str, int, int]  # (sample id, image index, epoch): the augmentation draws, as in eager decoding


@dataclass(slots=True)
class Sample:
    id: str
    shard: int  # index of its shard in the loader's shard list
    offset: int  # index of the sample inside its shard
    input_ids: np.ndarray  # int64 [L]
    labels: np.ndarray  # int64 [L], -100 where unsupervised; not shifted
    position_ids: np.ndarray  # float64 [L], starting at 0
    pixel_values: torch.Tensor  # [sum(image_tiles), 3, H, W], images in sequence order; [0, 3, H, W] if deferred
    image_tiles: list[int]
    num_supervised: int
    images: list[ImagePlan] | None = None  # the images still to decode (defer_pixels), in sequence order

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tiles(self) -> int:
        return sum(self.image_tiles)

    @property
    def ref(self) -> list:
        return [self.shard, self.offset, self.id]


_JPEG_STREAM = 0x4A504547  # "JPEG": the spawn key of the augmentation's draws (see SampleProcessor.tile)


def stride_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    """The v2pe_rnd stride generator of one sample in one epoch: a resumed run draws the same strides."""
    h = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, h]))


@functools.lru_cache(maxsize=32)
def _tiling_from_meta(items: tuple) -> TilingConfig:
    return TilingConfig(**dict(items))


_TILING_FIELDS = tuple(f.name for f in fields(TilingConfig))


class SampleProcessor:
    """Turns streamed tar samples into `Sample`s for one tokenizer, template, tiling and position mode."""

    def __init__(
        self,
        tokenizer: TextTokenizer,
        sample: SampleConfig | None = None,
        *,
        tiling: TilingConfig | None = None,
        seed: int = 0,
        pixel_dtype: str = "bf16",
        image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_STD,
        max_seq_len: int | None = None,
        max_tiles_per_pack: int | None = None,
        defer_pixels: bool = False,
        allow_eval_data: bool = True,
    ):
        """`sample`: the recipe's sample section (template, positions, targets, tiling backend, control
        tokens), validated there; None: its defaults."""
        if pixel_dtype not in PIXEL_DTYPES:
            raise ValueError(f"pixel_dtype must be one of {sorted(PIXEL_DTYPES)}, got {pixel_dtype!r}")
        sample = sample or SampleConfig()
        self.tokenizer = tokenizer
        self.template: ChatTemplate | None = get_template(sample.template) if sample.template else None
        self.tiling = tiling
        self.position_mode = sample.position_mode
        self.stride = sample.stride
        self.seed = seed
        self.dtype = PIXEL_DTYPES[pixel_dtype]
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.max_seq_len = max_seq_len
        self.max_tiles_per_pack = max_tiles_per_pack
        # The reference's training transform: each tile re-encoded as JPEG at a random quality (see `tile`).
        self.data_augment = sample.data_augment
        self.train_on_prompt = sample.train_on_prompt  # every text token a target, not only the replies
        self.train_on_eos = sample.train_on_eos  # the end-of-turn marker closing a reply is a target
        # fast: torch resize (within 2 8-bit levels of the reference, see fast_tiling); reference: the processor
        self.tiling_backend = sample.tiling_backend
        self.defer_pixels = bool(defer_pixels)
        # Turn text holding a control token is skipped (special_token) or neutralised; made on first use.
        self.control_mode = sample.control_tokens
        self._control = None
        # False (the trainer's loader unless the recipe allows it): a record of an evaluation benchmark raises
        # LoaderError; evaluation reads such records on purpose, so True is the default here.
        self.allow_eval_data = bool(allow_eval_data)
        self._warned_tokenizer = False

    # -- the record alone -------------------------------------------------------------------------
    def plan(self, data: bytes | dict, key: str):
        """Parse (unless given parsed), validate and encode a record; raise SampleError before any image is read."""
        if isinstance(data, ForeignRecord):  # a line with no meta of ours: counted here (foreign.py)
            return foreign.plan(self, data)
        if isinstance(data, dict):
            record = data
        else:
            try:
                record = json.loads(data)
            except ValueError as exc:
                raise SampleError("schema", f"record is not valid JSON: {exc}") from None
        try:
            schema.validate(record, schema.SAMPLE)
            schema.check_counts(record)
        except schema.SchemaError as exc:
            raise SampleError("schema", str(exc)) from None
        if record["id"] != key:
            raise SampleError("schema", f"$.id {record['id']!r} differs from the sample key {key!r}")
        meta = record["meta"]
        if meta.get("eval_benchmark") and not self.allow_eval_data:
            datasets = sorted({str(s.get("dataset")) for s in meta["sources"] if isinstance(s, dict)})
            raise LoaderError(f"sample {record['id']!r} was built from the evaluation benchmark {meta['eval_benchmark']} "
                              f"({', '.join(datasets)}): training on it contaminates that benchmark's scores; set "
                              "data.allow_eval_data: true in the recipe to train on it anyway")
        meta_tiling = {k: meta["tiling"][k] for k in _TILING_FIELDS if k in meta["tiling"]}
        try:
            tiling = self.tiling or _tiling_from_meta(tuple(sorted(meta_tiling.items())))
            template = self.template or get_template(meta["template"])
        except (TypeError, ValueError) as exc:
            raise SampleError("schema", f"$.meta: {exc}") from None
        tiles = [int(t) for t in meta["tiles"]]
        for i, ((w, h), t) in enumerate(zip(meta["image_sizes"], tiles)):
            expect = num_tiles(int(w), int(h), tiling)
            if expect != t:
                raise SampleError(
                    "tiles_mismatch",
                    f"image {record['images'][i]} ({w}x{h}) gives {expect} tiles with max_tiles={tiling.max_tiles}, "
                    f"$.meta.tiles says {t}",
                )
        conversations = self.screen_turns(record["conversations"])
        if conversations is not record["conversations"]:
            record = {**record, "conversations": conversations}
        try:
            enc = encoding.encode(conversations, tiles, self.tokenizer, template, tiling,
                                  supervise_prompt=self.train_on_prompt,
                                  supervise_end_of_turn=self.train_on_eos)
        except (ValueError, KeyError, TypeError) as exc:
            raise SampleError("schema", f"cannot encode the conversations: {exc}") from None
        self.check_image_tokens(enc, tiling)
        if self.tokenizer.matches(meta["tokenizer"]["sha256"]):
            same_accounting = template.name == meta["template"] and tiling.tokens_per_tile == meta_tiling.get(
                "tokens_per_tile", tiling.tokens_per_tile
            )
            if same_accounting and len(enc) != meta["num_tokens"]:
                raise SampleError(
                    "length_mismatch", f"encodes to {len(enc)} tokens, $.meta.num_tokens says {meta['num_tokens']}"
                )
        elif not self._warned_tokenizer:
            self._warned_tokenizer = True
            log.warning(
                "the data was counted with tokenizer %s (sha256 %s…), the trainer uses %s (sha256 %s…): "
                "sequence lengths come from the trainer's tokenizer and differ from meta.num_tokens",
                meta["tokenizer"]["name"], meta["tokenizer"]["sha256"][:12], self.tokenizer.name, self.tokenizer.sha256[:12],
            )
        self.check_limits(enc)
        return record, enc, tiling

    @property
    def control(self):
        if self._control is None:
            self._control = control_tokens(self.tokenizer, self.control_mode)
        return self._control

    def screen_turns(self, conversations):
        """The turns under the control-token policy; SampleError("special_token") naming the turn and token."""
        if not isinstance(conversations, list):
            return conversations  # the schema check names it
        try:
            return self.control.apply_turns(conversations)
        except ControlTokenError as exc:
            raise SampleError("special_token", str(exc)) from None

    def check_image_tokens(self, enc: encoding.EncodedSample, tiling: TilingConfig) -> None:
        """The last guard before the model: as many image context tokens as the tiles' features will fill."""
        found = int(np.count_nonzero(enc.input_ids == self.tokenizer.img_context_id))
        expect = sum(enc.tiles) * tiling.tokens_per_tile
        if found != expect:
            raise SampleError("special_token", f"{found} image context tokens for {expect} image features "
                                               f"({sum(enc.tiles)} tiles): the text holds image tokens")

    def check_limits(self, enc: encoding.EncodedSample) -> None:
        """SampleError("too_long") for a sample over `max_seq_len` tokens or `max_tiles_per_pack` tiles."""
        if self.max_seq_len is not None and len(enc) > self.max_seq_len:
            raise SampleError("too_long", f"{len(enc)} tokens > max_seq_len {self.max_seq_len} (rejected whole, never cut)")
        if self.max_tiles_per_pack is not None and sum(enc.tiles) > self.max_tiles_per_pack:
            raise SampleError("too_long", f"{sum(enc.tiles)} tiles > max_tiles_per_pack {self.max_tiles_per_pack}")

    # -- pixels -----------------------------------------------------------------------------------
    def tile(self, data: bytes, name: str, expect: int, tiling: TilingConfig, out: torch.Tensor, *,
             key: tuple[str, int, int] | None = None, augment: bool | None = None) -> None:
        """Decode one image and write its normalised tiles into `out` [expect, 3, H, W]; the PIL image is closed here.

        Augmentation (the reference trainer's `data_augment`): every tile, thumbnail included, is JPEG
        re-encoded at a quality drawn uniformly from 75..100, one draw per tile, after cropping and
        resizing and before normalisation, as the reference's per-tile transform does. It runs only when
        `augment` (default: the processor's `data_augment`; a caller passes a dataset's own flag, e.g. an
        InternVL meta entry's `data_augment`) is true AND `key` = (sample id, image index in the sample,
        epoch) is given: the qualities come from (seed, sample id, image index, epoch) alone, so a resumed
        run and a re-read sample get the same pixels. Without a key (evaluation) pixels are never augmented.

        `tiling_backend` "fast" resizes with torch (fast_tiling), "reference" with the transformers processor;
        the grid, the tile order and the augmentation draws are the same for both.
        """
        from PIL import Image

        from v2pe_common.images import to_rgb

        jpeg = self.data_augment if augment is None else bool(augment)
        jpeg = jpeg and key is not None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size = im.size
                # the processor's own RGB conversion clips 16-bit grey to white; to_rgb scales it
                # 8-bit tiles either way: JPEG re-encoding works on them, and the normalisation is a table lookup
                if self.tiling_backend == "fast":
                    pixels = fast_tiling.tiles_uint8(to_rgb(im), tiling)
                else:
                    pixels = image_processor(tiling)(images=to_rgb(im), return_tensors="pt", do_rescale=False,
                                                     do_normalize=False)["pixel_values"]
        except Exception as exc:  # PIL and the processor raise many types for undecodable bytes
            raise SampleError("bad_image", f"image {name} does not decode: {type(exc).__name__}: {exc}") from None
        fast = self.tiling_backend == "fast"  # 8-bit tiles, thumbnail already dropped when the tiling has none
        if not fast and not tiling.use_thumbnail and pixels.shape[0] > 1:
            pixels = pixels[:-1]  # the processor appends the thumbnail last
        got = int(pixels.shape[0])
        if got != num_tiles(size[0], size[1], tiling) or got != expect:
            raise SampleError(
                "tiles_mismatch", f"image {name} ({size[0]}x{size[1]}) gives {got} tiles, $.meta.tiles says {expect}"
            )
        if jpeg:
            sample_id, index, epoch = key
            # The sample's own stream (stride_rng's seed) with a spawn key of its own: independent of the
            # v2pe_rnd strides drawn for the same sample, and of every other image of it.
            seq = stride_rng(self.seed, epoch, sample_id).bit_generator.seed_seq
            rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(_JPEG_STREAM, int(index))))
            qualities = rng.integers(75, 101, size=got)
            reencoded = torch.empty_like(pixels)
            for t, quality in enumerate(qualities.tolist()):
                buf = io.BytesIO()
                Image.fromarray(pixels[t].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
                with Image.open(buf) as back:
                    reencoded[t] = torch.from_numpy(np.array(back.convert("RGB"))).permute(2, 0, 1)
            pixels = reencoded
        kind = "augmented" if jpeg else "fast" if fast else "reference"
        lut = pixel_lut.table(kind, tuple(self.image_mean), tuple(self.image_std), out.dtype, tiling)
        pixel_lut.normalise_into(out, pixels, lut)

    def process(self, ts: TarSample | ParquetSample | InternVLSample, *, shard: int, epoch: int) -> Sample:
        """Consume one streamed sample. Raises SampleError (skip it) or shards.ShardReadError (stop the shard)."""
        try:
            return self._process(ts, shard=shard, epoch=epoch)
        except BadMember as exc:  # a malformed parquet row / JSONL line, a missing image file
            raise SampleError(exc.reason, str(exc)) from None
        except SampleError:
            # A tar stream that broke inside this sample ended it early; what it then lacks (an image, the
            # record) is the shard's fault, counted once as that, not also as a fault of the sample.
            broken = getattr(ts, "broken", None)
            if broken is not None:
                raise broken from None
            raise

    def _process(self, ts, *, shard: int, epoch: int) -> Sample:
        plan = None
        early: dict[str, bytes] = {}  # image members met before the record (not how v2pe-data writes)
        done: set[str] = set()
        for member in ts.members():
            if member.suffix == "json":
                if plan is not None:
                    raise SampleError("schema", "two .json members")
                plan = self.plan(member.read(), ts.key)
                record, enc, tiling = plan
                # The tile count of every image is known (and checked) before any pixel is decoded,
                # so the sample's tiles go straight into one buffer: no per-image copies to concatenate.
                bounds = np.concatenate([[0], np.cumsum(enc.tiles, dtype=np.int64)]).tolist()
                rows = 0 if self.defer_pixels else bounds[-1]
                pixels = torch.empty((rows, 3, tiling.tile_size, tiling.tile_size), dtype=self.dtype)
                # A member may be shown at several places of the record: each place gets its tiles.
                index: dict[str, list[int]] = {}
                for i, name in enumerate(record["images"]):
                    index.setdefault(name, []).append(i)
                deferred: dict[str, bytes] = {}

                def put(name: str, data: bytes) -> None:
                    for i in index[name]:
                        if self.defer_pixels:
                            self.check_header(data, name, enc.tiles[i], tiling)
                            deferred[name] = data
                        else:
                            # Keyed by (sample, place, epoch): augmentation, when on, is the same after a resume.
                            self.tile(data, name, enc.tiles[i], tiling, pixels[bounds[i] : bounds[i + 1]],
                                      key=(record["id"], i, epoch))
                    done.add(name)

                for name, data in early.items():
                    if name in index:
                        put(name, data)
                early.clear()
            elif plan is None:
                early[member.suffix] = member.read()
            elif member.suffix in index and member.suffix not in done:
                put(member.suffix, member.read())
        if plan is None:
            raise SampleError("schema", "no .json record member")
        missing = [n for n in record["images"] if n not in done]
        if missing:
            raise SampleError("bad_image", f"image member(s) {missing} missing from the shard")
        pos = position_ids(
            len(enc),
            enc.image_starts,
            enc.tiles,
            mode=self.position_mode,
            stride=self.stride,
            rng=stride_rng(self.seed, epoch, record["id"]) if self.position_mode == "v2pe_rnd" else None,
            tokens_per_tile=tiling.tokens_per_tile,
        )
        return Sample(
            id=record["id"],
            shard=shard,
            offset=ts.offset,
            input_ids=enc.input_ids,
            labels=enc.labels,
            position_ids=pos,
            pixel_values=pixels,
            image_tiles=list(enc.tiles),
            num_supervised=int(np.count_nonzero(enc.labels != encoding.IGNORE_INDEX)),
            images=[ImagePlan(name, deferred[name], int(enc.tiles[i]), tiling, (record["id"], i, epoch))
                    for i, name in enumerate(record["images"])] if self.defer_pixels else None,
        )

    def check_header(self, data: bytes, name: str, expect: int, tiling: TilingConfig) -> None:
        """The checks a deferred image gets before packing, from its header alone: it opens, and its size gives
        `expect` tiles. Every rank of a cp group runs them, so all skip the same samples."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
        except Exception as exc:  # PIL raises many types for bytes that are no image
            raise SampleError("bad_image", f"image {name} does not decode: {type(exc).__name__}: {exc}") from None
        got = num_tiles(size[0], size[1], tiling)
        if got != expect:
            raise SampleError(
                "tiles_mismatch", f"image {name} ({size[0]}x{size[1]}) gives {got} tiles, $.meta.tiles says {expect}"
            )

    def pack_pixels(self, pack: list[Sample], start: int, stop: int, on_error=None) -> torch.Tensor:
        """Tiles [start, stop) of a pack (its samples' tiles in sequence order), decoding only the images that
        overlap the range, each once; an image cut by a bound is decoded whole and only its tiles in the range
        kept, so at most the range plus one image's tiles are held.

        A deferred image whose header passed but whose pixels do not decode is only found by the rank that
        decodes it, after the pack was formed on every rank: `on_error(sample, SampleError)` is told and its
        tiles stay zeros (no rank drops the sample alone); without `on_error` the error is raised.
        """
        proto = pack[0].pixel_values
        out = proto.new_zeros((stop - start, *proto.shape[1:]))
        pos = 0
        for sample in pack:
            if sample.images is None:  # decoded already: copy its rows in the range
                lo, hi = max(start, pos), min(stop, pos + sample.num_tiles)
                if lo < hi:
                    out[lo - start : hi - start] = sample.pixel_values[lo - pos : hi - pos]
                pos += sample.num_tiles
                continue
            for plan in sample.images:
                lo, hi = max(start, pos), min(stop, pos + plan.tiles)
                if lo < hi:
                    whole = lo == pos and hi == pos + plan.tiles
                    dest = out[lo - start : hi - start] if whole else out.new_empty((plan.tiles, *out.shape[1:]))
                    try:
                        self.tile(plan.data, plan.name, plan.tiles, plan.tiling, dest, key=plan.key)
                    except SampleError as exc:
                        if on_error is None:
                            raise
                        on_error(sample, exc)
                        out[lo - start : hi - start] = 0
                    else:
                        if not whole:
                            out[lo - start : hi - start] = dest[lo - pos : hi - pos]
                pos += plan.tiles
        return out
