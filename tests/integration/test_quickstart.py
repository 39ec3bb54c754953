"""The README's first command, as a newcomer runs it (on a part of the sample, passed as the file
to publish): it ends 0, lands every record, finds the obvious answer first, and says nothing that
reads as trouble (no ERROR or WARNING line, no traceback, no leak dump from a native extension at
exit)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support import harness

pytestmark = pytest.mark.services

ALARMING = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback|nanobind|leaked \d+ instances")


def test_the_quick_start_lands_the_sample_and_prints_nothing_alarming(services, tmp_path):
    env = harness.ingestor_env(harness.unique("quickstart"), harness.unique("g"), str(tmp_path / "quickstart.db"))
    # The script's own defaults, except what keeps this run apart from the others sharing the services.
    for name in ("INGESTOR_METRICS__PORT", "INGESTOR_MODEL__DEVICE", "INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S"):
        env.pop(name)
    # A tenth of the sample, with every paragraph of the expected answer: its size proves nothing.
    sample = (harness.REPO / "ingestor/data/sample.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    subset = [line for i, line in enumerate(sample) if i < 300 or json.loads(line)["id"].startswith("fileinput")]
    records = tmp_path / "records.jsonl"
    records.write_text("".join(subset), encoding="utf-8")
    proc = subprocess.run(
        ["bash", str(harness.REPO / "deploy/local/quickstart.sh"), str(records)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    loud = [line for line in output.splitlines() if ALARMING.search(line)]
    assert not loud, "\n".join(loud[:20])
    summary = harness.Run(proc.returncode, output).summary()
    assert summary["consumed"] == summary["upserted"] == len(subset), summary
    # The search's table rows: │ record id │ chunk │ span │ score │ text │, best first.
    hits = re.findall(r"^\W*?(\S+)\s*│\s*\d+\s*│\s*\d+-\d+\s*│\s*-?\d\.\d{4}\s*│", proc.stdout, re.M)
    assert hits and hits[0].startswith("fileinput"), proc.stdout[-2000:]
