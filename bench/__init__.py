"""Benchmarks: each prints a table and writes its JSON to ``bench/results/`` (``bench.results.publish``).

Run one as ``.venv/bin/streamrec bench NAME [--json] [-- options]`` or ``.venv/bin/python -m bench.NAME``.
"""
