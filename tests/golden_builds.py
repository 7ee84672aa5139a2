"""Small fixed Long-VQA builds whose every output byte is pinned (tests/data/long_vqa_golden.json).

The hashes were recorded from the code before the task/format plug-in step (issue 9, Part A); a refactor
of planning, writing or reading must reproduce them exactly. JPEG/PNG encoders, the tokenizer and the
package versions written into build.json and the manifest decide bytes too, so the pin holds only with
the package versions recorded beside the hashes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "long_vqa_golden.json"
CHARTS = {"kind": "synthetic", "mode": "paste", "kinds": ["bar_chart", "line_chart", "pie_chart", "table"]}
BUILDS = {
    "concat": dict(length=8192, num_samples=4, shard_size=2, seed=21, formats=["wds", "parquet", "internvl"]),
    "paste": dict(length=8192, min_length=4096, num_samples=3, shard_size=2, paste_grid=2, seed=22,
                  sources=[CHARTS], formats=["wds", "parquet", "internvl"]),
    "capped": dict(length=8192, num_samples=4, shard_size="600KB", seed=23, formats=["wds", "parquet"]),
}
# Files that say who holds the folder or what a run saw, not what the build made.
SKIP = {".v2pe/lock", ".v2pe/sources.json", ".v2pe/paths.json"}


def versions() -> dict[str, str]:
    from v2pe_data.build import versions as build_versions

    return build_versions()


def file_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and str(p.relative_to(out)) not in SKIP}


def run_builds(root: Path) -> dict[str, dict[str, str]]:
    from v2pe_data.build import build
    from v2pe_data.config import BuildConfig

    out = {}
    for name, args in BUILDS.items():
        folder = root / name
        build(BuildConfig.from_dict({**args, "out": str(folder)}), show_progress=False)
        out[name] = file_hashes(folder)
    return out


if __name__ == "__main__":  # record: python tests/golden_builds.py /tmp/somewhere
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        hashes = run_builds(Path(sys.argv[1] if len(sys.argv) > 1 else tmp))
    GOLDEN.write_text(json.dumps({"versions": versions(), "builds": hashes}, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(len(h) for h in hashes.values())} files in {GOLDEN}")
