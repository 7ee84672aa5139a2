"""Answering a record or a new question with a V2PE model: transformers' `generate()` with V2PE positions,
or one teacher-forced pass.

Positions (the rule in positions.py). The prompt -- the record's conversation up to and including the final
`<|im_start|>assistant\\n`, i.e. everything before the last supervised run of its encoding -- gets the
`v2pe_fix` positions of `positions.position_ids` for the chosen stride S (or `default`; S = 256 is the
same). Every token after the prompt continues at +1 from the last prompt position: the k-th generated
token (k = 1, 2, ...) is fed at `last + k`, as the reference's `modeling_internlm2` does ("next position
= last prompt position + #generated"), and a teacher-forced answer gets the same positions. Positions
are float64 all the way into the rotary angles (`rope.install_float64_rope`, installed by `build_model`).

Generation is transformers' own `generate()` (greedy by default; sampling, beam search, stop strings and
streamers as transformers offers them), given the prompt's float64 positions as `position_ids`: transformers
5.24 keeps them in its model kwargs, feeds the slice each step needs, and extends them by +1 per new token in
their own dtype, which is exactly the rule above. Batched prompts are left-padded with an explicit 2D
attention mask, each row keeping its own positions; generate() always runs with a cache, and transformers'
float-position packed-sequence detection runs only without a mask and without a cache (rope.py: the mask
trap), so the fractional positions cannot corrupt the mask.

Records are read exactly as the trainer's loader reads them: `SampleProcessor.plan` validates the record
and encodes the conversation, `SampleProcessor.tile` tiles and normalises each image.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from v2pe_common.encoding import IGNORE_INDEX, encode
from v2pe_common.formats.internvl import ForeignRecord
from v2pe_common.template import ASSISTANT_ROLES, get_template
from v2pe_common.tiling import IMAGE_PLACEHOLDER, IMG_CONTEXT, IMG_START, TOKENS_PER_TILE, TilingConfig
from v2pe_common.tokenizer import TextTokenizer, load_tokenizer

from ..config import TrainConfig
from ..data.foreign import DEFAULT_TEMPLATE
from ..data.samples import SampleProcessor
from ..data.stats import SampleError
from ..errors import V2PETrainError
from ..model import build_model, resolve_tokenizer
from ..model_files import folder_max_tiles
from ..positions import position_ids
from ..rope import has_float64_rope
from .teacher_forced import TeacherForced, teacher_forced

END_OF_TURN = "<|im_end|>"
DEFAULT = "default"
# What `prepare_question` takes as an image: a file path, encoded bytes or a PIL image (duck-typed: `save`).
ImageInput = Union[str, Path, bytes, Any]


class InferenceError(V2PETrainError, ValueError):
    """A record that cannot be answered; the message names the record and the cause."""

    reason = "inference"


@dataclass(slots=True)
class Prompt:
    """One record, encoded and tiled, ready for any stride."""

    id: str
    input_ids: np.ndarray  # int64 [P], ends with "<|im_start|>assistant\n"
    image_starts: list[int]  # index of each image's <img>
    tiles: list[int]  # tiles per image, thumbnail included
    tokens_per_tile: int
    pixel_values: torch.Tensor  # float32 [sum(tiles), 3, H, W]; [0, 3, H, W] for a text-only record
    answer_ids: np.ndarray  # int64 [A]: the record's reference answer, without the closing <|im_end|>
    template: str = "internlm2-chat"  # the chat template the record was encoded with

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(slots=True)
class Generation:
    id: str
    text: str  # decoded without special tokens, cut at <|im_end|>, stripped
    token_ids: list[int]  # generated tokens, the stop token excluded
    stop: str  # "end" (<|im_end|>, eos or a stop string) or "length" (max_new_tokens reached)
    prompt_positions: np.ndarray  # float64 [P] fed for the prompt
    generated_positions: np.ndarray  # float64 [n]: where each generated token sits (fed there, if it is fed)
    seconds: float = 0.0  # wall time of the batch this row ran in
    logits: torch.Tensor | None = None  # float32 [steps, V] on the CPU when asked for: one row per token chosen,
    # the stop token included (as transformers' `output_logits`)


def stride_mode(stride: int | str) -> tuple[str, int | None]:
    """(mode, stride) for `position_ids`: 'default' or an int S of `positions.STRIDES` (v2pe_fix)."""
    if stride == DEFAULT or stride is None:
        return DEFAULT, None
    if isinstance(stride, str) and stride.isdigit():
        stride = int(stride)
    return "v2pe_fix", stride  # position_ids rejects strides outside STRIDES with the list of valid ones


def prompt_positions(prompt: Prompt, stride: int | str) -> np.ndarray:
    """float64 [P] V2PE positions of the prompt for `stride`."""
    mode, s = stride_mode(stride)
    return position_ids(len(prompt), prompt.image_starts, prompt.tiles, mode=mode, stride=s,
                        tokens_per_tile=prompt.tokens_per_tile)


def v2pe_position_ids(input_ids: torch.Tensor, tokenizer, *, stride: int | str = DEFAULT,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """float64 [B, L] V2PE positions of token ids a plain transformers user built (`<img>` + 256 x tiles
    `<IMG_CONTEXT>` + `</img>` per image), for `model.generate(..., position_ids=...)`. `tokenizer`: a
    transformers tokenizer holding the image tokens. Rows are left-padded where `attention_mask` is 0; pad
    slots get 0. Equals what `V2PEGenerator.generate` feeds for the same prompt.
    """
    start_id, context_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in (IMG_START, IMG_CONTEXT))
    ids = input_ids.cpu().numpy()
    keep = np.ones(ids.shape, dtype=bool) if attention_mask is None else attention_mask.cpu().numpy().astype(bool)
    out = torch.zeros(ids.shape, dtype=torch.float64)
    for r in range(ids.shape[0]):
        row = ids[r][keep[r]]
        starts = np.flatnonzero(row == start_id)
        context = np.concatenate([[0], np.cumsum(row == context_id)])
        ends = np.append(starts[1:], row.size)
        tiles = (context[ends] - context[starts]) // TOKENS_PER_TILE
        prompt = Prompt(id="", input_ids=row, image_starts=starts.tolist(), tiles=tiles.tolist(),
                        tokens_per_tile=TOKENS_PER_TILE, pixel_values=torch.empty(0), answer_ids=row[:0])
        out[r, torch.from_numpy(keep[r])] = torch.from_numpy(prompt_positions(prompt, stride))
    return out


def continued_positions(prompt_pos: np.ndarray, n: int) -> np.ndarray:
    """float64 [n] positions of the n tokens after a prompt: last prompt position + 1, + 2, ..."""
    last = float(prompt_pos[-1]) if prompt_pos.size else -1.0
    return last + np.arange(1, n + 1, dtype=np.float64)


def split_prompt(input_ids: np.ndarray, labels: np.ndarray, end_id: int, where: str) -> tuple[int, int]:
    """(start, end) of the final answer's supervised run (answer tokens + <|im_end|>) in an encoding."""
    supervised = np.flatnonzero(labels != IGNORE_INDEX)
    if supervised.size == 0:
        raise InferenceError(f"{where}: no supervised answer in the encoded conversation")
    breaks = np.flatnonzero(np.diff(supervised) > 1)
    start = int(supervised[breaks[-1] + 1]) if breaks.size else int(supervised[0])
    end = int(supervised[-1]) + 1
    if int(input_ids[end - 1]) != end_id:
        raise InferenceError(f"{where}: the final answer does not end with {END_OF_TURN}")
    return start, end


def _image_bytes(image: ImageInput, where: str) -> bytes:
    """Encoded bytes of a path, bytes or PIL image (a PIL image as lossless PNG, so its pixels stay as given)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        try:
            return Path(image).read_bytes()
        except OSError as exc:
            raise InferenceError(f"{where}: cannot read {str(image)!r}: {exc.strerror or exc}") from None
    if hasattr(image, "save") and hasattr(image, "size"):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise InferenceError(f"{where}: expected a file path, encoded bytes or a PIL image, got {type(image).__name__}")


def _size(data: bytes, where: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InferenceError(f"{where}: not a readable image: {exc}") from None


class V2PEGenerator:
    """A model, its tokenizer and the loader's record processing; answers records at any stride.

    The model is switched to eval mode here; it must carry the float64 rotary (`build_model` installs it).
    """

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer):
        if not has_float64_rope(model):
            raise InferenceError("the model's text rotary is not the float64 V2PE one: build it with "
                                 "v2pe_train.model.build_model (or call rope.install_float64_rope) first")
        self.model = model.eval()
        self.tokenizer = tokenizer
        hf = tokenizer.hf
        self.end_id = int(hf.convert_tokens_to_ids(END_OF_TURN))
        if self.end_id in (None, hf.unk_token_id):
            raise InferenceError(f"tokenizer {tokenizer.name}: no {END_OF_TURN} token, cannot find the end of a reply")
        self.stop_ids = {self.end_id} | ({int(hf.eos_token_id)} if hf.eos_token_id is not None else set())
        self.pad_id = int(hf.pad_token_id if hf.pad_token_id is not None else self.end_id)
        # fp32 pixels, cast to the model's dtype at the forward: what the loader's bf16 buffer holds on GPU.
        self.processor = SampleProcessor(tokenizer, pixel_dtype="fp32")
        self.max_tiles = TilingConfig().max_tiles  # prepare_question's tiling; `load` reads the model folder's

    @classmethod
    def load(cls, spec: str | Path, *, tokenizer: str | None = None, dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu", seed: int = 0) -> V2PEGenerator:
        """A native InternVL folder (or a preset: 'tiny', '2b') with its tokenizer, float64 rope installed."""
        tok = load_tokenizer(resolve_tokenizer(TrainConfig(model=str(spec), tokenizer=tokenizer)))
        model = build_model(spec, tok, dtype=dtype, seed=seed).to(device)
        model.requires_grad_(False)
        gen = cls(model, tok)
        gen.max_tiles = folder_max_tiles(spec, gen.max_tiles)
        return gen

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- records -------------------------------------------------------------------------------------
    def prepare(self, record: dict, images: Mapping[str, bytes]) -> Prompt:
        """Encode a record (final turn: the assistant's answer) and tile its images as the loader does."""
        rid = record.get("id", "?") if isinstance(record, dict) else "?"
        convs = record.get("conversations") if isinstance(record, dict) else None
        # Checked before `plan`: a record cut after its question fails plan's length check, which hides why.
        final = convs[-1] if isinstance(convs, list) and convs else None
        if isinstance(final, dict) and final.get("from") not in ASSISTANT_ROLES:
            raise InferenceError(f"record {rid}: $.conversations[-1].from is {final.get('from')!r}; "
                                 "the final turn must be the assistant's answer (it is cut off to form the prompt)")
        try:
            record, enc, tiling = self.processor.plan(record, rid)
        except SampleError as exc:
            raise InferenceError(f"record {rid}: {exc.reason}: {exc}") from None
        start, end = split_prompt(enc.input_ids, enc.labels, self.end_id, f"record {rid}")
        if any(s >= start for s in enc.image_starts):
            raise InferenceError(f"record {rid}: an image sits inside the final answer; "
                                 "only images in the prompt are supported")
        bounds = np.concatenate([[0], np.cumsum(enc.tiles, dtype=np.int64)]).tolist()
        pixels = torch.empty((bounds[-1], 3, tiling.tile_size, tiling.tile_size), dtype=torch.float32)
        for i, name in enumerate(record["images"]):
            if name not in images:
                raise InferenceError(f"record {rid}: image {name!r} ($.images[{i}]) was not given")
            try:
                self.processor.tile(images[name], name, enc.tiles[i], tiling, pixels[bounds[i]:bounds[i + 1]])
            except SampleError as exc:
                raise InferenceError(f"record {rid}: {exc.reason}: {exc}") from None
        template = record["meta"]["template"] if "meta" in record else DEFAULT_TEMPLATE  # a question: foreign.py's
        return Prompt(id=rid, input_ids=enc.input_ids[:start].copy(), image_starts=list(enc.image_starts),
                      tiles=list(enc.tiles), tokens_per_tile=tiling.tokens_per_tile, pixel_values=pixels,
                      answer_ids=enc.input_ids[start:end - 1].copy(), template=template)

    def prepare_question(self, question: str, images: Sequence[ImageInput] = (), *, id: str = "question",
                         max_tiles: int | None = None) -> Prompt:
        """A prompt asking `question` about `images` (file paths, encoded bytes or PIL images), for `generate`.

        `<image>` placeholders in the question say where each image goes; without any, the images come first,
        one per line, as InternVL places a single image. Images are tiled up to `max_tiles` (None: the
        model folder's `preprocessor_config.json`, else 12) with a thumbnail, and the prompt is encoded with
        the chat template the records of a foreign InternVL file get (internlm2-chat), exactly as `prepare`
        encodes a record whose last turn is an (empty) answer. The prompt's `answer_ids` are empty.
        """
        if not isinstance(question, str) or not question.strip():
            raise InferenceError(f"question {id}: need a non-empty string, got {question!r}")
        encoded = [_image_bytes(im, f"question {id}: images[{i}]") for i, im in enumerate(images)]
        names = [f"image{i}" for i in range(len(encoded))]
        if IMAGE_PLACEHOLDER not in question:
            question = f"{IMAGE_PLACEHOLDER}\n" * len(encoded) + question
        record = ForeignRecord(id=id, images=names, image_sizes=[_size(b, f"question {id}: images[{i}]")
                                                                 for i, b in enumerate(encoded)],
                               max_dynamic_patch=max_tiles or self.max_tiles,
                               conversations=[{"from": "human", "value": question}, {"from": "gpt", "value": ""}])
        return self.prepare(record, dict(zip(names, encoded)))

    # -- generation ----------------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Sequence[Prompt], *, stride: int | str = DEFAULT,
                 max_new_tokens: int | Sequence[int] = 32, max_batch_tokens: int | None = None,
                 return_logits: bool = False, seed: int | None = None, **generate_kwargs) -> list[Generation]:
        """Replies, in prompt order: greedy unless `generate_kwargs` say otherwise (`do_sample=True`,
        `temperature`, `top_p`, `num_beams`, `stop_strings`, `streamer`, ...: transformers' `generate`).
        Consecutive prompts share a batch while batch size x (longest prompt + its max_new_tokens) stays within
        `max_batch_tokens` (None: all in one batch). `seed` makes sampling reproducible without touching the
        caller's RNG state."""
        prompts = [prompts] if isinstance(prompts, Prompt) else list(prompts)
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(prompts) or any(int(b) < 1 for b in budgets):
            raise InferenceError(f"max_new_tokens: need one positive budget per prompt, got {budgets[:8]}")
        fixed = sorted({"input_ids", "attention_mask", "position_ids", "pixel_values", "max_new_tokens",
                        "eos_token_id", "pad_token_id", "num_return_sequences"} & set(generate_kwargs))
        if fixed:
            raise InferenceError(f"generate: {', '.join(fixed)} are set from the prompts; pass the prompts instead")
        if generate_kwargs.get("use_cache", True) is False:  # no cache + no mask: the packing trap (rope.py)
            raise InferenceError("use_cache=False: V2PE positions need generate()'s cache (see rope.py)")
        if return_logits and int(generate_kwargs.get("num_beams", 1)) > 1:
            raise InferenceError("return_logits: a beam search has no per-token logits of the reply; use greedy")
        out: list[Generation] = []
        batch: list[int] = []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for i in range(len(prompts)):
                grown = batch + [i]
                cost = len(grown) * max(len(prompts[j]) + int(budgets[j]) for j in grown)
                if batch and max_batch_tokens is not None and cost > max_batch_tokens:
                    out += self._generate_batch([prompts[j] for j in batch], stride, [int(budgets[j]) for j in batch],
                                                return_logits, generate_kwargs)
                    grown = [i]
                batch = grown
            if batch:
                out += self._generate_batch([prompts[j] for j in batch], stride, [int(budgets[j]) for j in batch],
                                            return_logits, generate_kwargs)
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: list[Prompt], stride: int | str, budgets: list[int],
                        return_logits: bool, options: dict) -> list[Generation]:
        t0 = time.perf_counter()
        device, model = self.device, self.model
        batch, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        # Pad slots are masked out as keys; their own value is irrelevant (0, as stock generate uses).
        pos = torch.zeros((batch, width), dtype=torch.float64)
        prompt_pos = [prompt_positions(p, stride) for p in prompts]
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.from_numpy(p.input_ids)
            mask[r, width - len(p):] = 1
            pos[r, width - len(p):] = torch.from_numpy(prompt_pos[r])
        pixels = torch.cat([p.pixel_values for p in prompts])
        extra = {}
        if pixels.numel():
            # The tiles go in encoded: generate() expands pre-encoded images per prompt ([A, B] -> [A, B, A, B]) for
            # beams, where it would interleave raw pixel_values tile by tile ([A, A, B, B]) and mismatch the rows.
            config = model.config
            extra["mm_encoder_outputs"] = {"image": model.get_image_features(
                pixel_values=pixels.to(device=device, dtype=model.dtype), return_dict=True,
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy)}
        if options.get("stop_strings") is not None:
            extra["tokenizer"] = self.tokenizer.hf  # transformers needs it to match the strings
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), **extra,
            # float64 V2PE positions of the prompt; generate() continues them at last + 1, + 2, ... in their dtype
            # (`_update_model_kwargs_for_generation`), and the float64 rotary turns them into angles.
            position_ids=pos.to(device), max_new_tokens=max(budgets), eos_token_id=sorted(self.stop_ids),
            # A finished row is filled with a stop token, so reading each row up to its first stop is exact.
            pad_token_id=self.end_id, return_dict_in_generate=True, output_logits=return_logits,
            **{"do_sample": False, **options})
        seconds = time.perf_counter() - t0
        sequences = out.sequences[:, width:].cpu().tolist()
        results = []
        for r, p in enumerate(prompts):
            tokens, stop = [], "length"
            for token in sequences[r][:budgets[r]]:
                if token in self.stop_ids:
                    stop = "end"
                    break
                tokens.append(token)
            if len(sequences[r]) < budgets[r]:  # every row stopped early: this one too, on a stop string
                stop = "end"
            chosen = min(len(tokens) + (stop == "end"), len(out.logits or ()))
            logits = torch.stack([out.logits[k][r].float().cpu() for k in range(chosen)]) if return_logits else None
            results.append(Generation(id=p.id, text=self.decode(tokens), token_ids=tokens, stop=stop,
                                      prompt_positions=prompt_pos[r],
                                      generated_positions=continued_positions(prompt_pos[r], len(tokens)),
                                      seconds=seconds, logits=logits))
        return results

    def decode(self, token_ids: Sequence[int]) -> str:
        text = self.tokenizer.hf.decode(list(token_ids), skip_special_tokens=True)
        return text.split(END_OF_TURN, 1)[0].strip()

    # -- teacher forcing -----------------------------------------------------------------------------
    def teacher_forced(self, prompt: Prompt, *, stride: int | str = DEFAULT,
                       answer: str | Sequence[int] | None = None, return_logits: bool = False,
                       group=None, rank: int = 0, world: int = 1, backend: str = "auto") -> TeacherForced:
        """One forward over prompt + answer + <|im_end|>; correct iff the argmax over the answer span is the answer.

        `answer`: None (the record's), a string (tokenised as the template's answer piece is) or token ids.
        With `world` > 1 every rank of `group` calls this with the same prompt: the sequence is split
        zigzag over the ring and the tiles over the ranks; every rank gets the same result.
        """
        if answer is None:
            answer_ids = prompt.answer_ids
        elif isinstance(answer, str):
            # Encoded where it stands, after "<|im_start|>assistant\n", by the encoder the loader uses: a
            # tokenizer with a dummy prefix must not give the answer a leading "▁" the training ids never had.
            turns = [{"from": "human", "value": ""}, {"from": "gpt", "value": answer}]
            enc = encode(turns, [], self.tokenizer, get_template(prompt.template))
            answer_ids = enc.input_ids[enc.labels != IGNORE_INDEX]
            if answer_ids.size == 0 or int(answer_ids[-1]) != self.end_id:
                raise InferenceError(f"record {prompt.id}: answer {answer!r} does not tokenise to a closed reply")
            answer_ids = answer_ids[:-1]
        else:
            answer_ids = np.asarray(list(answer), dtype=np.int64)
        if answer_ids.size == 0:
            raise InferenceError(f"record {prompt.id}: the answer is empty; teacher forcing has nothing to compare")
        prompt_pos = prompt_positions(prompt, stride)
        ids = np.concatenate([prompt.input_ids, answer_ids, [self.end_id]])
        pos = np.concatenate([prompt_pos, continued_positions(prompt_pos, answer_ids.size + 1)])
        result = teacher_forced(self.model, torch.from_numpy(ids), torch.from_numpy(pos), prompt.pixel_values,
                                (len(prompt), len(prompt) + answer_ids.size), group=group, rank=rank, world=world,
                                pad_id=self.pad_id, backend=backend, return_logits=return_logits)
        result.predicted_text = self.decode(result.predicted_ids)
        return result
