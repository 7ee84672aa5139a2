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
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<|im_start|>"}))
    assert tokenizer_hash(model) != tokenizer_hash(bundled_tokenizer_dir())  # another BOS encodes differently


def test_a_saved_copy_hashes_as_the_folder_it_came_from(tmp_path):
    """save_pretrained adds `is_local` / `local_files_only` to tokenizer_config.json; the hash is of what
    tokenizes (backend serialization + special tokens), so a saved copy keeps the build's hash, while a
    changed vocabulary does not."""
    tok = load_tokenizer()
    tok.hf.save_pretrained(str(tmp_path / "saved"))
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert "is_local" in config  # the bytes differ from the bundled folder's
    assert tokenizer_hash(tmp_path / "saved") == tokenizer_hash(bundled_tokenizer_dir()) == tok.sha256
    raw = json.loads((tmp_path / "saved" / "tokenizer.json").read_text())
    raw["model"]["vocab"]["zzqx"] = max(raw["model"]["vocab"].values()) + 1
    (tmp_path / "saved" / "tokenizer.json").write_text(json.dumps(raw))
    assert tokenizer_hash(tmp_path / "saved") != tok.sha256


def test_builds_made_before_the_content_hash_still_name_the_bundled_tokenizer():
    """Builds before issue 22 recorded sha256 over the folder's files; `matches` accepts that hash too, so the
    loader keeps checking their lengths instead of warning that they were counted with another tokenizer."""
    recorded_before = "6a35e4ffe18317b0f24a403f3e9f3688c5f86d8d4fb5d793e548b499e3c0df37"
    tok = load_tokenizer()
    assert tok.sha256 != recorded_before and tok.matches(recorded_before) and tok.matches(tok.sha256)
    assert not tok.matches("0" * 64)


def test_the_bundled_tokenizer_is_the_one_autotokenizer_loads_and_is_loaded_once_a_process():
    """The bundled folder is loaded without AutoTokenizer (whose import costs torch): same class, same ids;
    None, "" and "bundled" name one cached tokenizer."""
    from transformers import AutoTokenizer

    tok = load_tokenizer()
    auto = AutoTokenizer.from_pretrained(str(bundled_tokenizer_dir()), local_files_only=True)
    assert type(tok.hf) is type(auto)
    text = "<|im_start|>user\nHow tall is 中文 <img><IMG_CONTEXT></img> page 12?<|im_end|>\n"
    assert tok.encode(text) == auto.encode(text, add_special_tokens=False)
    assert load_tokenizer(None) is load_tokenizer("") is load_tokenizer("bundled") is tok


def test_a_build_with_the_bundled_tokenizer_imports_neither_torch_nor_transformers_image_processing(tmp_path):
    """What makes `v2pe-data build` wait before its first sample: it counts tiles from image sizes alone and
    loads the bundled tokenizer directly, so the seconds-long imports of torch and the image processor never run."""
    code = (f"import sys\nfrom v2pe_data.build import build\nfrom v2pe_data.config import BuildConfig\n"
            f"build(BuildConfig(length=8192, num_samples=1, out={str(tmp_path / 'b')!r}), show_progress=False)\n"
            "print(sorted(m for m in ('torch', 'transformers.image_processing_utils', 'transformers.models.auto')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


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


def test_split_special_tokens_changes_the_ids_and_so_the_hash(tmp_path):
    """A copy whose config sets `split_special_tokens` reads "<|im_start|>" in text as pieces: other ids, so
    another hash (else the loader would take its lengths for the build's and drop every sample)."""
    import shutil

    copy = tmp_path / "split"
    shutil.copytree(bundled_tokenizer_dir(), copy)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "split_special_tokens": True}))
    ours, split = load_tokenizer(), load_tokenizer(str(copy))
    assert split.encode("<|im_start|>user hi") != ours.encode("<|im_start|>user hi")
    assert tokenizer_hash(copy) == split.sha256 != ours.sha256 and not split.matches(ours.sha256)
