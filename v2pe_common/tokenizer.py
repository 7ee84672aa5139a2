"""Loading the text tokenizer: a local Hugging Face tokenizer directory, a Hub id, or the bundled default.

The image tags and context token are added when a tokenizer lacks them, exactly as the trainer adds them
to the model's embeddings, so both sides count the same ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .tiling import IMG_CONTEXT, IMG_END, IMG_START

IMAGE_TOKENS = (IMG_START, IMG_END, IMG_CONTEXT)
BUNDLED = "bundled"
# Files any loadable tokenizer folder has at least one of (besides a sentencepiece *.model).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")
# The files the legacy hash covered (`_file_hash`), besides *.model and *.tiktoken.
LEGACY_HASHED_FILES = (*TOKENIZER_FILES, "special_tokens_map.json", "added_tokens.json", "merges.txt")
# Starts of text on which a tokenizer's start-of-input treatment (a prefix space or marker) shows.
RESTART_PROBES = ("a", " a", "1", ".", "\n", "中")
# Files of a Hub repo a tokenizer needs (no weights): configs, vocabularies, merges, sentencepiece models, templates.
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja")
# `org/name`, as the Hub spells repo ids; anything else (absolute, ./x, a/b/c) is only ever a local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(spec: str) -> bool:
    """True for an `org/name` string that is not an existing local path."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec and not Path(spec).expanduser().exists()


def resolve_hub_id(repo_id: str, allow_patterns, what: str) -> Path:
    """The local snapshot folder of Hub repo `repo_id` (its files matching `allow_patterns`), via the HF cache.

    Downloads only what is missing when a network exists; offline (HF_HUB_OFFLINE=1, or no network) a repo the
    cache lacks is a one-line ValueError naming the id, so callers report it like any bad path.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(allow_patterns)))
    except LocalEntryNotFoundError:
        raise ValueError(f"{what} {repo_id!r} is not a local folder, and as a Hub id it is in no local cache "
                         "and cannot be downloaded (no network, or HF_HUB_OFFLINE=1)") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{what} {repo_id!r} is not a local folder nor a Hub repo you can read") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ValueError(f"{what} {repo_id!r}: download from the Hub failed: {' '.join(str(exc).split())}") from None


def bundled_tokenizer_dir() -> Path:
    return Path(str(resources.files("v2pe_common").joinpath("assets/tokenizer")))


@dataclass(frozen=True)
class TextTokenizer:
    """A Hugging Face tokenizer plus the ids the encoder needs; `identity` goes into manifests."""

    hf: object
    name: str
    sha256: str
    # The hash builds recorded before `content_hash` (over the folder's files): still accepted by `matches`.
    legacy_sha256: str = ""

    @functools.cached_property
    def img_start_id(self) -> int:
        return self.hf.convert_tokens_to_ids(IMG_START)

    @functools.cached_property
    def img_end_id(self) -> int:
        return self.hf.convert_tokens_to_ids(IMG_END)

    @functools.cached_property
    def img_context_id(self) -> int:
        return self.hf.convert_tokens_to_ids(IMG_CONTEXT)

    @functools.cached_property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @functools.cached_property
    def added_tokens(self) -> tuple[str, ...]:
        """Strings the tokenizer splits the text at before tokenizing what lies between them, longest first."""
        return tuple(sorted(self.hf.added_tokens_encoder, key=len, reverse=True))

    @functools.cached_property
    def restarts_after_added_tokens(self) -> bool:
        """Whether text right after an added token is tokenized as if it began the input.

        Byte-level BPEs and sentencepiece tokenizers that add their dummy prefix to every span between added
        tokens (InternLM2, Llama `legacy`) do; one that adds it only at the very start of the input (Metaspace
        `prepend_scheme="first"`, Llama `legacy=False`) does not, and then a piece cannot be encoded on its own.
        """
        return all(self.encode(IMG_END + probe) == [self.img_end_id, *self.encode(probe)] for probe in RESTART_PROBES)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @functools.cached_property
    def identity(self) -> dict:
        """What manifests and records say of the tokenizer: a local folder by its base name only (a path
        would publish who built where; the sha256 identifies it), a Hub id or 'bundled' as is."""
        name = self.name if self.name == BUNDLED or is_hub_id(self.name) else Path(self.name).name or self.name
        return {"name": name, "sha256": self.sha256, "vocab_size": self.vocab_size}

    def matches(self, sha256: str) -> bool:
        """Whether a manifest's or record's tokenizer hash names this tokenizer (today's or a legacy hash)."""
        return sha256 in (self.sha256, self.legacy_sha256)

    @functools.cached_property
    def _direct(self) -> bool:
        """Whether `hf.encode(text, add_special_tokens=False)` is its Rust tokenizer's encode and nothing else: a
        transformers fast tokenizer whose class overrides neither `encode` nor `_encode_plus`. Counting calls
        `encode` per paragraph, and the Python wrapper plus the offsets it asks for are ~45% of such a call."""
        try:
            from transformers.tokenization_utils_base import PreTrainedTokenizerBase
            from transformers.tokenization_utils_tokenizers import TokenizersBackend
        except ImportError:  # another transformers layout: always through hf.encode
            return False
        cls = type(self.hf)
        return (isinstance(self.hf, TokenizersBackend) and cls.encode is PreTrainedTokenizerBase.encode
                and cls._encode_plus is TokenizersBackend._encode_plus
                and hasattr(self.hf.backend_tokenizer, "encode_special_tokens"))

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if self._direct:
            rust = self.hf.backend_tokenizer  # looked up each time: tokens added later live there
            # hf.encode first turns truncation and padding off and sets how special tokens split: the direct
            # call gives the same ids only from that state, which the first hf.encode below leaves behind
            if (rust.truncation is None and rust.padding is None
                    and rust.encode_special_tokens == bool(self.hf.split_special_tokens)):
                # without offsets (tokenizers >= 0.21), a third of the call; the ids are the same
                if hasattr(rust, "encode_batch_fast"):
                    return rust.encode_batch_fast([text], add_special_tokens=False)[0].ids
                return rust.encode(text, add_special_tokens=False).ids
        return self.hf.encode(text, add_special_tokens=False)


# The named special tokens that change encodings (BOS opens a templated sequence; EOS, UNK and PAD ids);
# named extras (an image token's name for a processor) only name tokens the vocabulary already has.
HASHED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
# `split_special_tokens`: "<|im_start|>" in text is split into pieces instead of read as the token.
ENCODING_FLAGS = ("split_special_tokens",)


def content_hash(hf) -> str:
    """sha256 of what decides how `hf` tokenizes: its backend's serialization (vocabulary, merges, normalizer,
    pre-tokenizer, post-processor, decoder, added tokens with their ids and flags) and the named special
    tokens, not the bytes of its files.

    `save_pretrained` adds bookkeeping to tokenizer_config.json (`is_local`, `local_files_only`, named tokens),
    so a saved copy of a tokenizer hashes as the folder it came from. Truncation and padding settings are
    left out: they do not change the ids of a text. A tokenizer without a `tokenizers` backend (a slow
    sentencepiece one) hashes its vocabulary and added tokens instead.
    """
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
    else:
        state = {"vocab": hf.get_vocab(), "added": {str(k): str(v) for k, v in hf.added_tokens_decoder.items()}}
    special = {k: str(getattr(hf, k, None)) for k in HASHED_SPECIAL_TOKENS}
    # Config flags that change the ids of a text; each enters the hash only when set, so the hashes of
    # tokenizers without it (every build so far) stay what they were.
    for flag in ENCODING_FLAGS:
        if getattr(hf, flag, False):
            special[flag] = True
    return hashlib.sha256(json.dumps([state, special], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def tokenizer_hash(directory: Path) -> str:
    """`content_hash` of the tokenizer in `directory`, as `load_tokenizer` computes it (image tokens added
    where missing), so every copy of one tokenizer agrees: a model folder holding it beside its weights, an
    export that saved it again, the folder a build counted with."""
    return content_hash(_load_hf(Path(directory)))


def load_tokenizer(path: str | None = None) -> TextTokenizer:
    """Load a tokenizer directory, or a Hub id `org/name` through the HF cache (downloading only when a network
    exists). None or 'bundled' gives the bundled default. Loaded once per process: every spelling of the bundled
    one is one cache entry, so a build and its checks in one process share it."""
    return _load_tokenizer(BUNDLED if path in (None, "") else path)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> TextTokenizer:
    if path == BUNDLED:
        directory, name = bundled_tokenizer_dir(), BUNDLED
    elif is_hub_id(str(path)):
        directory, name = resolve_hub_id(str(path), TOKENIZER_PATTERNS, "tokenizer"), str(path)
    else:
        directory, name = Path(path).expanduser(), str(path)
    hf = _load_hf(directory)
    return TextTokenizer(hf=hf, name=name, sha256=content_hash(hf), legacy_sha256=_file_hash(directory))


def _file_hash(directory: Path) -> str:
    """The hash builds recorded before `content_hash`: sha256 over the tokenizer files' names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir()
                       if p.is_file() and (p.name in LEGACY_HASHED_FILES or p.suffix in (".model", ".tiktoken"))):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _load_hf(directory: Path):
    """The transformers tokenizer in `directory` (uncached), the image tokens added where it lacks them."""
    if directory == bundled_tokenizer_dir():
        # The bundled folder is ours and names its class, the one AutoTokenizer would pick; importing AutoTokenizer
        # imports torch (~1.5 s), which counting with the bundled tokenizer never needs.
        from transformers.tokenization_utils_tokenizers import TokenizersBackend as loader
    else:
        from transformers import AutoTokenizer as loader

    if not directory.is_dir():
        raise ValueError(f"tokenizer path {str(directory)!r} is not a directory holding a Hugging Face tokenizer")
    # Without any of these, transformers falls through to a sentencepiece error that hides the real cause.
    if not any((directory / f).is_file() for f in TOKENIZER_FILES) and not any(directory.glob("*.model")):
        raise ValueError(f"tokenizer: {directory} holds no tokenizer files "
                         "(tokenizer.json / tokenizer_config.json / *.model)")
    try:
        hf = loader.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unreadable tokenizers
        raise ValueError(f"cannot load a tokenizer from {str(directory)!r}: {exc.__class__.__name__}: {exc}") from exc
    missing = [t for t in IMAGE_TOKENS if hf.convert_tokens_to_ids(t) in (None, hf.unk_token_id)]
    if missing:
        hf.add_tokens(missing, special_tokens=True)
    return hf
