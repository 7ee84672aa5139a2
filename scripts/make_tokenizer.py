"""Rebuild the bundled default tokenizer: `python scripts/make_tokenizer.py` (deterministic, offline).

A small byte-level BPE (4,096 ids) trained on a corpus this script generates from its own word list,
numbers and document phrases. Byte-level means every string encodes; the vocabulary only makes English
business and chart text compact. Real runs pass the target model's tokenizer with --tokenizer.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

OUT = Path(__file__).resolve().parents[1] / "v2pe_common" / "assets" / "tokenizer"
VOCAB_SIZE = 4096
SPECIAL = ["<s>", "</s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]

WORDS = """
the of and to in is for on that by this with from at as are be or an it was which all total amount due invoice
date number customer account balance payment terms net days item description quantity unit price tax subtotal
discount shipping billing address company corporation limited group report annual quarterly summary revenue
sales profit loss income expense cost margin growth year month week day january february march april may june
july august september october november december monday tuesday wednesday thursday friday saturday sunday
department finance marketing research development operations human resources engineering product service
customer support manager director president chief officer signature approved prepared reviewed page figure table
chart bar line pie value category highest lowest average median percent share region north south east west
central europe asia america africa oceania country city street avenue road suite phone email fax website order
purchase shipment delivery received issued reference code contract agreement policy claim insurance premium
employee name title salary hours rate overtime bonus deduction gross pay period start end status pending
complete cancelled open closed yes no question answer image document what which how many much who where when
why does did is was the in following based on shown according highest lowest value difference between sum
image please answer using single word phrase retrieve count needle haystack find locate compare largest smallest
first second third last left right top bottom above below next previous before after during between among
note notes comment remarks memo letter dear sincerely regards attention subject re inc ltd llc co plc gmbh
science technology education health energy transport retail banking manufacturing agriculture tourism media
apples bananas oranges coffee tea steel copper oil gas water power software hardware cloud network devices
""".split()


def corpus(seed: int = 0, lines: int = 20000) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(WORDS[i : i + 12]) for i in range(0, len(WORDS), 12)]
    out += [str(n) for n in range(0, 2000)]
    for _ in range(lines):
        n = rng.randint(4, 16)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.5:
            words.insert(rng.randrange(n), f"{rng.randint(0, 99999):,}.{rng.randint(0, 99):02d}")
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice([".", "?", ":", "", "\n"]))
    out += ["".join(p) for p in itertools.product("ABCDEFGHIJ", "0123456789")]
    return out


def build() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[3:],
        model_max_length=1 << 24,
    )


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    build().save_pretrained(str(OUT))
    print(f"wrote {OUT}")
