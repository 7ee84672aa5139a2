"""Chat templates as the InternVL family's trainers render them, piece by piece with supervision flags.

Only assistant answers and the end-of-turn token that closes them are supervised, as in the reference
trainer. The pieces are plain text; `<image>` placeholders inside them are expanded by `encoding`.

Turn text is stripped (`value.strip()`) before it is templated, as the reference trainer's preprocessing
does: an answer stored as "42 " is trained as "42". Stripping lives here, in the one walk that both the
data builder's counts and the loader's encoding go through, so the two can never disagree about it.
`strip_turns=False` (via `dataclasses.replace`) renders turns verbatim.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# The marker that closes every turn in both templates; a reply's copy of it is a training target unless the
# trainer's `train_on_eos` is off (encoding.encode's `supervise_end_of_turn`).
END_OF_TURN = "<|im_end|>"
INTERNVL_SYSTEM = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)
HUMAN_ROLES = ("human", "user")
# The turn markers every template here writes: text from outside must not hold them (`control`).
TEMPLATE_MARKERS = ("<|im_start|>", "<|im_end|>")
ASSISTANT_ROLES = ("gpt", "assistant")


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    name: str
    system: str
    add_bos: bool
    # Text after each <|im_end|>: internlm2-chat uses none (MPT style), ChatML a newline.
    turn_sep: str
    strip_turns: bool = True

    def pieces(self, conversations: Sequence[dict]) -> Iterator[tuple[str, bool]]:
        """Yield (text, supervised) pieces for a list of {"from", "value"} turns."""
        if self.system:
            yield f"<|im_start|>system\n{self.system}{END_OF_TURN}{self.turn_sep}", False
        for i, turn in enumerate(conversations):
            role, value = _turn(turn, i)
            if self.strip_turns:
                value = value.strip()
            if role in HUMAN_ROLES:
                yield f"<|im_start|>user\n{value}{END_OF_TURN}{self.turn_sep}", False
            else:
                yield "<|im_start|>assistant\n", False
                yield f"{value}{END_OF_TURN}", True
                if self.turn_sep:
                    yield self.turn_sep, False


def _turn(turn: dict, index: int) -> tuple[str, str]:
    if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
        raise ValueError(f"conversations[{index}]: expected an object with 'from' and 'value'")
    role, value = turn["from"], turn["value"]
    if role not in HUMAN_ROLES + ASSISTANT_ROLES:
        raise ValueError(f"conversations[{index}].from: unknown role {role!r}")
    if not isinstance(value, str):
        raise ValueError(f"conversations[{index}].value: expected a string")
    return role, value


TEMPLATES: dict[str, ChatTemplate] = {
    "internlm2-chat": ChatTemplate("internlm2-chat", INTERNVL_SYSTEM, add_bos=True, turn_sep=""),
    "chatml": ChatTemplate("chatml", "You are a helpful assistant.", add_bos=False, turn_sep="\n"),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}") from None
