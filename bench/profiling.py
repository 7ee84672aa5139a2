"""One cProfile pass over a callable, for the benchmarks' by-phase breakdowns (bench_loader, bench_long_mr)."""

from __future__ import annotations


def profile_stats(run) -> tuple[dict, float]:
    """(pstats' raw table {(file, line, name): (calls, prim, tottime, cumtime, callers)}, total seconds) of one
    `run()` under cProfile; the total is the outermost call's cumulative time."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    run()
    profile.disable()
    stats = pstats.Stats(profile).stats
    return stats, max(v[3] for v in stats.values())
