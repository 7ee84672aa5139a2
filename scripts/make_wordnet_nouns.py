"""Regenerate v2pe_train/eval/data/wordnet_nouns.json.gz: `python scripts/make_wordnet_nouns.py` (deterministic).

Long-VQA scoring lemmatises words as WordNet 3.0 nouns (`v2pe_train/eval/lemma.py`). The two tables it needs,
WordNet's noun lemmas and its noun exception list, are taken from spaCy's English lookup tables
(`spacy-lookups-data`, `en_lemma_index.json.gz` and `en_lemma_exc.json.gz`, key "noun"): about 200 KB
compressed, where the package is a 98 MB wheel of every language's tables. The package is needed only to
run this script, in any throwaway environment (`pip install spacy-lookups-data==1.0.5`); its WordNet
licence text is copied beside the data, as the licence asks.

`tests/test_lemma_data.py` checks that the committed file equals what this script writes from the installed
package (the check runs wherever the package is installed).
"""

from __future__ import annotations

import argparse
import gzip
import json
from importlib import resources
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "v2pe_train" / "eval" / "data"
FILE = "wordnet_nouns.json.gz"
LICENCE = "wordnet_nouns.LICENSE.txt"


def _table(name: str) -> dict:
    return json.loads(gzip.decompress(resources.files("spacy_lookups_data").joinpath("data", name).read_bytes()))


def package_version() -> str:
    from importlib.metadata import version

    return version("spacy-lookups-data")


def generate() -> tuple[bytes, bytes]:
    """(the gzip'd JSON, the licence text) from the installed spacy-lookups-data; the same bytes every run."""
    nouns = sorted(_table("en_lemma_index.json.gz")["noun"])
    exceptions = {k: v for k, v in sorted(_table("en_lemma_exc.json.gz")["noun"].items())}
    doc = {"source": f"spacy-lookups-data {package_version()}: en_lemma_index['noun'], en_lemma_exc['noun'] "
                     f"(WordNet 3.0; licence in {LICENCE})",
           "nouns": nouns, "exceptions": exceptions}
    blob = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    licence = resources.files("spacy_lookups_data").joinpath("data", "en_license.txt").read_bytes()
    return gzip.compress(blob, compresslevel=9, mtime=0), licence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DATA, help="folder to write into (default: the package's)")
    args = ap.parse_args()
    data, licence = generate()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / FILE).write_bytes(data)
    (args.out / LICENCE).write_bytes(licence)
    print(f"wrote {args.out / FILE} ({len(data):,} bytes) and {args.out / LICENCE}")


if __name__ == "__main__":
    main()
