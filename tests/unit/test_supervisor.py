"""The supervisor: which workers it plans (pure), and its loop over real child processes (small
Python scripts in place of `ingestor run`): restarts and their count, and a refusal to start."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor import metrics
from ingestor.cli import _drop_option_values
from ingestor.config import Settings
from ingestor.errors import ConfigError
from ingestor.retry import Backoff
from ingestor.supervisor import RESTARTS_ENV, Supervisor, WorkerPlan, export_restarts, plan_workers


def test_one_worker_per_gpu_each_seeing_only_its_device():
    plans = plan_workers("0,1,3", None, cpu_count=16, cuda_count=4, metrics_port=9400)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1", "3"]
    assert {p.env["INGESTOR_MODEL__DEVICE"] for p in plans} == {"cuda"}
    assert [p.env["INGESTOR_METRICS__PORT"] for p in plans] == ["9401", "9402", "9403"]


def test_auto_uses_every_gpu_or_falls_back_to_one_cpu_worker():
    assert len(plan_workers("auto", None, 8, 2, 9400)) == 2
    [cpu] = plan_workers("auto", None, 8, 0, 9400)
    assert cpu.env["INGESTOR_MODEL__DEVICE"] == "cpu" and cpu.env["INGESTOR_RUNTIME__TORCH_THREADS"] == "8"


def test_cpu_workers_split_the_cores():
    plans = plan_workers("cpu", 3, cpu_count=8, cuda_count=0, metrics_port=0)
    assert [p.env["INGESTOR_RUNTIME__TORCH_THREADS"] for p in plans] == ["2", "2", "2"]
    assert {p.env["INGESTOR_METRICS__PORT"] for p in plans} == {"0"}


def test_bad_device_lists_are_config_errors():
    with pytest.raises(ConfigError):
        plan_workers("gpu0", None, 8, 1, 0)


def test_workers_with_gpus_count_per_device():
    plans = plan_workers("0,1", 2, cpu_count=16, cuda_count=2, metrics_port=9400)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "0", "1", "1"]
    assert [p.index for p in plans] == [0, 1, 2, 3]
    assert [p.env["INGESTOR_METRICS__PORT"] for p in plans] == ["9401", "9402", "9403", "9404"]


def test_worker_arguments_lose_the_supervisor_options():
    args = ["--devices", "0,1", "--topics", "a", "--workers=2", "--until-caught-up"]
    assert _drop_option_values(args, ("--devices", "--workers")) == ["--topics", "a", "--until-caught-up"]


# A worker in place of `ingestor run`: it notes the restart count it was handed, then acts as its
# slot's SCRIPT variable says (fail the first two times, refuse at once, or run until SIGTERM).
WORKER = r"""
import os, signal, sys, time
from pathlib import Path
log = Path(os.environ["LOG"])
with log.open("a") as f:
    f.write(os.environ.get("INGESTOR_WORKER_RESTARTS", "0") + "\n")
mode = os.environ["MODE"]
if mode == "flaky":
    sys.exit(3 if len(log.read_text().split()) < 3 else 0)
if mode == "refuse":
    time.sleep(0.5)
    sys.exit(2)
signal.signal(signal.SIGTERM, lambda *_: (log.open("a").write("terminated\n"), sys.exit(0)))
time.sleep(60)
sys.exit(9)
"""


@pytest.fixture
def signals_restored() -> Iterator[None]:
    """Supervisor.run installs its own SIGTERM/SIGINT handlers: give pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _supervisor(tmp_path: Path, modes: list[str]) -> Supervisor:
    plans = [WorkerPlan(i, {"MODE": mode, "LOG": str(tmp_path / f"w{i}.log")}) for i, mode in enumerate(modes)]
    sup = Supervisor(Settings(), plans, [], command=[sys.executable, "-c", WORKER])
    sup.backoff = Backoff(initial_ms=10, max_ms=20)
    return sup


def test_a_crashed_worker_is_restarted_and_each_restart_hands_down_its_count(tmp_path, signals_restored, monkeypatch):
    monkeypatch.setenv(RESTARTS_ENV, "7")  # the supervisor's own environment does not leak into the first start
    assert _supervisor(tmp_path, ["flaky"]).run() == 0
    assert (tmp_path / "w0.log").read_text().split() == ["0", "1", "2"]


def test_a_worker_that_refuses_to_start_stops_the_others_and_the_supervisor_exits_2(tmp_path, signals_restored):
    assert _supervisor(tmp_path, ["serve", "refuse"]).run() == 2
    assert (tmp_path / "w0.log").read_text().split() == ["0", "terminated"]
    assert (tmp_path / "w1.log").read_text().split() == ["0"], "a refusal is not restarted"


def test_a_worker_exports_the_restarts_of_its_slot():
    before = metrics.total(metrics.WORKER_RESTARTS)
    export_restarts({})
    export_restarts({RESTARTS_ENV: "not a number"})
    assert metrics.total(metrics.WORKER_RESTARTS) == before
    export_restarts({RESTARTS_ENV: "3"})
    assert metrics.total(metrics.WORKER_RESTARTS) == before + 3
