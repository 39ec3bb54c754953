"""`check` and `stats` ask every dependency at once, each within its bound, and report each as it
finishes: the pure part, with checks that answer, hang or raise."""

from __future__ import annotations

import threading
import time

from ingestor.commands.check import CheckResult, bounded
from ingestor.errors import RetriableError, StartupError

hang = threading.Event()  # never set: a check that waits on it hangs


def _raises(exc: BaseException):
    def check() -> CheckResult:
        raise exc

    return check


def test_each_result_comes_as_it_finishes_and_a_hung_one_at_its_own_bound():
    started = time.monotonic()
    seen = []
    for result in bounded(
        {
            "slow": lambda: (time.sleep(0.3), CheckResult("slow", 0, "fine"))[1],
            "hung": lambda: (hang.wait(), CheckResult("hung", 0, ""))[1],
            "patient": lambda: (time.sleep(0.8), CheckResult("patient", 0, "late but allowed"))[1],
        },
        timeout_s=0.5,
        extra_s={"patient": 1.0},
    ):
        seen.append((result.name, result.code, round(time.monotonic() - started, 1)))
    assert [s[:2] for s in seen] == [("slow", 0), ("hung", 1), ("patient", 0)], seen
    assert seen[1][2] <= 0.8, "the hung check is reported at its own bound, not the longest one"


def test_failures_become_codes_run_would_exit_with():
    results = {
        r.name: r
        for r in bounded(
            {
                "refused": _raises(StartupError("the brokers refused the login")),
                "down": _raises(RetriableError("down", "connection refused")),
                "odd": _raises(OSError("disk on fire")),
            },
            timeout_s=2,
        )
    }
    assert (results["refused"].code, results["refused"].detail) == (2, "the brokers refused the login")
    assert (results["down"].code, results["down"].detail) == (1, "connection refused")
    assert (results["odd"].code, results["odd"].detail) == (1, "OSError: disk on fire")
    hung = next(iter(bounded({"x": lambda: (hang.wait(), CheckResult("x", 0, ""))[1]}, timeout_s=0.1)))
    assert (hung.code, hung.detail) == (1, "no answer within 0.1s")


def test_a_replay_selection_takes_a_partition_and_its_offsets():
    from ingestor.commands.replay import Selection

    wanted = Selection({"invalid_json"}, partition=3, from_offset=10, to_offset=20)
    assert wanted.wants("invalid_json", 3, 10) and wanted.wants("invalid_json", 3, 20)
    assert not wanted.wants("invalid_json", 2, 15), "another partition"
    assert not wanted.wants("invalid_json", 3, 21) and not wanted.wants("blank_text", 3, 15)
    assert Selection(set()).wants(None, 0, 0), "no filter: every dead letter"
