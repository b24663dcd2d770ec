"""`streamrec demo` (what `make demo` runs), at a tiny size: an example no test runs drifts."""

from __future__ import annotations

import os
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
