"""Reliability figures: the fault, upgrade and hostile-input tests run against real services, their rows collected.

    .venv/bin/streamrec bench reliability [--json]        # or: .venv/bin/python -m bench.reliability

Runs, with pytest, the tests that record a reliability row (``reliability_report`` in ``tests/conftest.py``):
``tests/integration/test_faults.py`` (Kafka broker ``kill -9`` and graceful restart mid-stream, Redis down
30 s riding through and 12 s with a 3 s bound giving up), ``test_savepoint.py`` (upgrade through a savepoint
on the MiniCluster and on a standalone cluster, parallelism 1 -> 2) and ``test_hostile_input.py`` (a hostile
mix through the job at parallelism 2). Each row: scenario, events sent, applied, dead-lettered, and the
recovery times the test measured. A failing test fails the benchmark (exit 1) and writes no result.
Prints a table; writes ``bench/results/reliability.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import human_output, publish
from streamrec.cli import configure_logging
from streamrec.config import PROJECT_ROOT

TESTS = (
    "tests/integration/test_savepoint.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_hostile_input.py::test_hostile_mix_through_the_job",
)


def run_tests(rows_file: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    """Run ``tests`` with their rows going to ``rows_file``; (pytest's exit status, seconds)."""
    env = {**os.environ, "STREAMREC_RELIABILITY_JSON": str(rows_file)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=PROJECT_ROOT,
                          env=env, stdout=sys.stderr, check=False)
    return done.returncode, round(time.monotonic() - started, 1)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'scenario':56} {'sent':>6} {'applied':>8} {'dead-lettered':>14}  recovery")
    for r in rows:
        rest = {k: v for k, v in r.items() if k not in {"scenario", "sent", "applied", "dead_lettered"}}
        print(f"{r['scenario'][:56]:56} {r['sent']:>6} {r['applied']:>8} {r['dead_lettered']:>14}  "
              + ", ".join(f"{k} {v}" for k, v in rest.items()))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("tests", nargs="*", help=f"pytest node ids (default: {' '.join(TESTS)})")
    args = p.parse_args(argv)
    configure_logging()
    tests = tuple(args.tests) or TESTS
    with tempfile.TemporaryDirectory() as tmp, human_output(args.json):
        rows_file = Path(tmp) / "reliability.json"
        status, seconds = run_tests(rows_file, tests)
        if status != 0:
            print(f"pytest failed (exit {status}): no result written", file=sys.stderr)
            return 1
        rows = json.loads(rows_file.read_text())
        print_table(rows)
    publish("reliability", {"tests": list(tests), "seconds": seconds, "rows": rows}, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
