"""Plait's benchmarks (issue #5): throughput, wide and deep DAGs, API calls, a profile.

Every number is measured against the raw ceiling of the same control plane in the same
run (Jobs created and driven by the benchmark itself, with no operator), so results are
ratios, never absolute thresholds. Run with ``make bench`` or ``python -m bench``.
"""
