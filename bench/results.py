"""The one results writer of the benchmarks: ``bench/results/NAME.json``, stamped with how it was produced.

Every result file carries ``produced_by``: the command line, the git commit (and whether the tree had
uncommitted changes), the machine and the time, so that a figure cited in ``docs/`` can be traced back to the
code and the command that wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.cli import configure_logging
from streamrec.config import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


def result_path(name: str, out: Path | None = None) -> Path:
    """Where benchmark ``name`` writes: ``out`` if given, else ``bench/results/<name>.json``."""
    return out if out is not None else RESULTS_DIR / f"{name}.json"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """The command, code version and machine a result comes from."""
    # Result files themselves do not make the code dirty (a series of benchmarks rewrites them one by one).
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = ["python", "-m", spec.name] if spec is not None else [Path(sys.argv[0]).name]
    return {
        "command": shlex.join([*program, *sys.argv[1:]]),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def publish(name: str, result: dict[str, Any], *, as_json: bool, out: Path | None = None) -> Path:
    """Write ``result`` (plus ``produced_by``) to its results file; with ``as_json`` also print it to stdout.

    With ``as_json`` the JSON is the only thing on stdout: run the benchmark's human output inside
    ``human_output(True)`` so that tables and progress go to stderr.
    """
    path = result_path(name, out)
    doc = {**result, "produced_by": provenance()}
    text = json.dumps(doc, indent=2, default=list) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    if as_json:
        sys.stdout.write(text)
        sys.stdout.flush()
    return path


@contextlib.contextmanager
def human_output(as_json: bool) -> Iterator[None]:
    """Tables, progress and logs of a benchmark: stdout normally, stderr when stdout carries the JSON."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def run_benchmark(
    name: str,
    parser: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``main`` of a benchmark: parse ``--json`` and its options, measure, publish ``bench/results/NAME.json``."""
    parser.add_argument("--json", action="store_true", help="print the JSON to stdout (the tables go to stderr)")
    args = parser.parse_args(argv)
    configure_logging()
    with human_output(args.json):
        result = measure(args)
    publish(name, result, as_json=args.json)
    return result
