"""`streamrec demo` (what `make demo` runs), at a tiny size: an example no test runs drifts."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs(tmp_path):
    env = {
        **os.environ,
        "STREAMREC_DEMO_LIMIT": "3000",
        "STREAMREC_DEMO_EPOCHS": "1",
        "STREAMREC_STACK__RUN_DIR": str(tmp_path / "run"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for marker in (
        "== 6/6",
        "in service",
        "recommended (personal",
        "unknown user -> source=popular",
        "Redis updated",
        "demo done",
    ):
        assert marker in out, (marker, out[-3000:])


def test_loop_demo_runs_unattended(tmp_path):
    """The feedback loop at a small size: bootstrap, job, trainer during the replay, a last run, the comparison.

    The demo's claim is enforced: exit 0 means the loop's last model beat the first one offline. The three-row
    comparison (first, loop, same-data) must be printed with numbers; the loop against the same-data model is
    reported, not gated, so only its presence is checked.
    """
    env = {
        **os.environ,
        "STREAMREC_DEMO_LIMIT": "8000",
        "STREAMREC_DEMO_EPOCHS": "3",
        "STREAMREC_STACK__RUN_DIR": str(tmp_path / "run"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "demo", "--loop", "--rate", "2000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    for marker in ("== 4/4", "trainer bootstrapped v0001", "hit@10 in segment", "online hit rate per model version"):
        assert marker in out, (marker, out[-3000:])
    report = out.split("== 4/4", 1)[1]
    print(report)  # the decisions and the three-row comparison, for `pytest -s`
    runs = [line.split() for line in report.splitlines() if line.strip()[:1].isdigit()]
    decisions = [r[1] for r in runs if len(r) > 2 and r[1] in {"promoted", "refused", "skipped"}]
    assert decisions[0] == "promoted" and "promoted" in decisions[1:], out[-3000:]
    row = re.compile(r"^  (first|loop|same-data) +(v\d+|-) +(\d\.\d{4}) +(\d\.\d{4}) +(\d\.\d{4})  \S", re.M)
    rows = {m[1]: (float(m[3]), float(m[4])) for m in row.finditer(report)}  # name -> (recall@10, ndcg@10)
    assert set(rows) == {"first", "loop", "same-data"}, report[-3000:]
    assert rows["loop"][0] > rows["first"][0] and rows["loop"][1] > rows["first"][1], report[-3000:]
    assert "differs from" not in report, report[-3000:]  # the same-data model trained on the loop model's events
    assert re.search(r"^the loop itself \(v\d+ vs the same-data model.*ndcg@10 [+-]\d", report, re.M), report[-3000:]
    assert "beats the first model v0001 on the later part of the stream" in report, report[-3000:]
