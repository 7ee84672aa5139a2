"""The WordNet noun tables behind Long-VQA's lemmatiser ship with the package (v2pe_train/eval/data), generated
by scripts/make_wordnet_nouns.py from spacy-lookups-data: scoring needs no 98 MB wheel, and the file is held
equal to the package's tables wherever that package is installed."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "v2pe_train" / "eval" / "data"


def test_noun_lemmas_need_no_lookup_package():
    """With spacy_lookups_data unimportable, a fresh interpreter still lemmatises (from the shipped file)."""
    code = ("import sys; sys.modules['spacy_lookups_data'] = None\n"
            "from v2pe_train.eval.lemma import noun_lemma\n"
            "print(noun_lemma('geese'), noun_lemma('analyses'), noun_lemma('apples'), noun_lemma('xyzzys'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["goose", "analysis", "apple", "xyzzys"]


def test_the_shipped_tables_are_wordnet_nouns_with_their_licence():
    doc = json.loads(gzip.decompress((DATA / "wordnet_nouns.json.gz").read_bytes()))
    nouns, exceptions = set(doc["nouns"]), doc["exceptions"]
    assert len(nouns) > 50_000 and len(exceptions) > 2_000
    assert {"goose", "analysis", "apple", "criterion", "wa"} <= nouns
    assert exceptions["geese"] == ["goose"] and exceptions["criteria"] == ["criterion"]
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in (DATA / "wordnet_nouns.LICENSE.txt").read_text()


def test_the_shipped_tables_equal_what_the_script_makes_from_the_installed_package(tmp_path):
    pytest.importorskip("spacy_lookups_data")  # installed only to regenerate the data
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_wordnet_nouns.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("wordnet_nouns.json.gz", "wordnet_nouns.LICENSE.txt"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_scoring_without_the_word_list_package_is_one_line(tmp_path):
    """A Long-VQA source V2PE lemmatises (chartqa) needs web2 from the `eval` extra: without it, `score` says
    so in one line (exit 2), never a traceback."""
    from tests.fixtures.sources import write_generic
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig

    written = write_generic(tmp_path / "src", fmt="parquet")
    out = tmp_path / "build"
    build(BuildConfig(length=8192, min_length=2048, num_samples=1, shard_size=1, split="val", out=str(out),
                      sources=[{"kind": "generic", "path": str(written.root), "name": "chartqa"}]),
          show_progress=False)
    rid = json.loads((out / "manifest.json").read_text())["shards"][0]["path"]
    from v2pe_common.formats import read_records, wds

    key = next(k for k, rec, _ in read_records(wds.iter_samples(out / rid)) if rec is not None)
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": key, "stride": "default", "prediction": "running"}) + "\n")
    code = ("import sys; sys.modules['english_words'] = None\n"
            "from v2pe_train.cli import app\n"
            f"app(['score', {str(tmp_path / 'p.jsonl')!r}, '--data', {str(out)!r}, '--out', {str(tmp_path / 's')!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("warning: counting")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "english-words" in lines[0], r.stderr
