import json
import subprocess
import sys

from v2pe_data.build import build
from v2pe_data.config import BuildConfig
from v2pe_data.distributions import summarize


def test_stats_agree_with_the_manifest_and_the_plot_is_written(tmp_path):
    out = tmp_path / "b"
    manifest = build(BuildConfig(length=8192, num_samples=4, shard_size=2, out=str(out), seed=2), show_progress=False)
    summary = summarize(out)
    assert summary["samples"] == 4 and sum(summary["depth_deciles"]) == 4
    assert summary["tokens"]["total"] == manifest["token_stats"]["total"]
    assert sum(summary["tiles_per_image"].values()) == manifest["token_stats"]["images_total"]
    png = tmp_path / "stats.png"
    result = subprocess.run([sys.executable, "-m", "v2pe_data", "stats", str(out), "--plot", str(png)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
