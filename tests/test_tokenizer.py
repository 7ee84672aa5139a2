import json
import subprocess
import sys
from pathlib import Path

import pytest

from v2pe_common.tokenizer import bundled_tokenizer_dir, load_tokenizer, tokenizer_hash

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_tokenizer_loads_offline_with_image_tokens():
    tok = load_tokenizer()
    assert tok.name == "bundled"
    ids = {tok.img_start_id, tok.img_end_id, tok.img_context_id}
    assert len(ids) == 3 and None not in ids
    assert tok.encode("<|im_start|>") == [tok.hf.convert_tokens_to_ids("<|im_start|>")]


def test_bundled_tokenizer_is_reproduced_by_its_script(tmp_path):
    script = (ROOT / "scripts" / "make_tokenizer.py").read_text()
    target = tmp_path / "tok"
    code = script.replace(
        'OUT = Path(__file__).resolve().parents[1] / "v2pe_common" / "assets" / "tokenizer"', f"OUT = Path({str(target)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert tokenizer_hash(target) == tokenizer_hash(bundled_tokenizer_dir())


def test_unreadable_tokenizer_path_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load a tokenizer from"):
        load_tokenizer(str(tmp_path / "broken"))


def test_a_local_tokenizer_without_image_tokens_gets_them_added(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert tok.img_context_id not in (None, 0)
    assert tok.identity["sha256"] == tokenizer_hash(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())  # the folder itself is left untouched


def test_a_model_folder_hashes_as_the_tokenizer_it_holds(tmp_path):
    """Data counted with a tokenizer folder and a model trained with that tokenizer beside its weights must
    agree on the hash, or the loader silently stops checking lengths against meta.num_tokens."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(bundled_tokenizer_dir(), model)
    for name, data in (("config.json", "{}"), ("generation_config.json", "{}"), ("model.safetensors", "weights"),
                       ("chat_template.jinja", "{{ messages }}")):
        (model / name).write_text(data)
    assert tokenizer_hash(model) == tokenizer_hash(bundled_tokenizer_dir())
    (model / "special_tokens_map.json").write_text('{"eos_token": "<|im_end|>"}')  # this one does count
    assert tokenizer_hash(model) != tokenizer_hash(bundled_tokenizer_dir())


def test_encode_gives_the_ids_of_hf_encode_also_after_another_call_left_truncation_on():
    """`encode` calls the Rust tokenizer directly (issue 23); its ids must stay those of
    hf.encode(text, add_special_tokens=False), for plain text, added tokens and whitespace runs, and a
    backend left truncating by another caller must not cut them."""
    tok = load_tokenizer()
    texts = ["Quarterly revenue rose 4.5% to $1,204.", " leading space", "a  b\n\n c\t", "中文 text",
             "<img><IMG_CONTEXT></img> after an image", "<|im_start|>user\nhi<|im_end|>", "\n", "x" * 500]
    for text in texts:
        assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False), text
    long = " ".join(texts)
    full = tok.hf.encode(long, add_special_tokens=False)
    tok.hf(long, truncation=True, max_length=3)  # leaves truncation set on the backend
    assert tok.encode(long) == full
    assert tok.encode("") == []


def test_encode_sees_tokens_added_after_its_first_call():
    from transformers import AutoTokenizer

    from v2pe_common.tokenizer import TextTokenizer

    hf = AutoTokenizer.from_pretrained(str(bundled_tokenizer_dir()), local_files_only=True)
    tok = TextTokenizer(hf=hf, name="fresh", sha256="0")  # not the cached bundled one: it is changed below
    before = tok.encode("zqxvw here")
    hf.add_tokens(["zqxvw"])
    after = tok.encode("zqxvw here")
    assert after == hf.encode("zqxvw here", add_special_tokens=False) != before
    assert hf.convert_tokens_to_ids("zqxvw") in after
