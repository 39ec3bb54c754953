"""The supervisor: which workers it plans (pure), how `ingestor run` turns its options into that
plan on a GPU box faked for the purpose, and its loop over real child processes (small Python
scripts in place of `ingestor run`): restarts and their count, and a refusal to start."""

from __future__ import annotations

import logging
import signal
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor import cli_common, metrics
from ingestor.cli import _drop_option_values, _run_app
from ingestor.config import Settings
from ingestor.errors import ConfigError
from ingestor.retry import Backoff
from ingestor.supervisor import (
    RESTARTS_ENV,
    Supervisor,
    WorkerPlan,
    default_workers_per_gpu,
    describe_plan,
    export_restarts,
    plan_workers,
    warn_if_few_partitions,
    workers_option,
)


def _env(plans: list[WorkerPlan], key: str) -> list[str]:
    return [p.env[key] for p in plans]


def test_one_worker_per_gpu_each_seeing_only_its_device():
    plans = plan_workers("0,1,3", 1, cpu_count=16, cuda_count=4, metrics_port=9400)
    assert _env(plans, "CUDA_VISIBLE_DEVICES") == ["0", "1", "3"]
    assert {p.env["INGESTOR_MODEL__DEVICE"] for p in plans} == {"cuda"}
    assert _env(plans, "INGESTOR_METRICS__PORT") == ["9401", "9402", "9403"]


def test_auto_uses_every_gpu_or_falls_back_to_one_cpu_worker():
    assert len(plan_workers("auto", 1, 8, 2, 9400)) == 2
    [cpu] = plan_workers("auto", None, 8, 0, 9400)
    assert cpu.env["INGESTOR_MODEL__DEVICE"] == "cpu" and cpu.env["INGESTOR_RUNTIME__TORCH_THREADS"] == "8"


def test_cpu_workers_split_the_cores():
    plans = plan_workers("cpu", 3, cpu_count=8, cuda_count=0, metrics_port=0)
    assert _env(plans, "INGESTOR_RUNTIME__TORCH_THREADS") == ["2", "2", "2"]
    assert {p.env["INGESTOR_METRICS__PORT"] for p in plans} == {"0"}


@pytest.mark.parametrize("devices", ["gpu0", "", "0,x"])
def test_bad_device_lists_are_config_errors(devices):
    with pytest.raises(ConfigError):
        plan_workers(devices, None, 8, 1, 0)


def test_workers_with_gpus_count_per_device():
    plans = plan_workers("0,1", 2, cpu_count=16, cuda_count=2, metrics_port=9400)
    assert _env(plans, "CUDA_VISIBLE_DEVICES") == ["0", "0", "1", "1"]
    assert [p.index for p in plans] == [0, 1, 2, 3]
    assert _env(plans, "INGESTOR_METRICS__PORT") == ["9401", "9402", "9403", "9404"]


@pytest.mark.parametrize(
    "cores, gpus, k",
    [
        (16, 1, 4),
        (16, 2, 4),
        (64, 8, 4),
        (128, 1, 4),  # capped: four workers outrun one GPU's encode rate
        (8, 2, 2),
        (12, 2, 3),
        (6, 1, 3),  # two cores a worker
        (2, 1, 1),
        (3, 2, 1),
        (1, 4, 1),
        (0, 1, 1),  # never fewer than one
    ],
)
def test_the_default_workers_per_gpu_rule(cores, gpus, k):
    assert default_workers_per_gpu(cores, gpus) == k


def test_auto_on_a_gpu_box_plans_k_workers_per_gpu_sharing_it_with_ports_and_threads_of_their_own():
    plans = plan_workers("auto", None, cpu_count=16, cuda_count=2, metrics_port=9400)
    assert _env(plans, "CUDA_VISIBLE_DEVICES") == ["0"] * 4 + ["1"] * 4
    assert {p.env["INGESTOR_MODEL__DEVICE"] for p in plans} == {"cuda"}
    assert _env(plans, "INGESTOR_METRICS__PORT") == [str(9401 + i) for i in range(8)]
    assert set(_env(plans, "INGESTOR_RUNTIME__TORCH_THREADS")) == {"2"}  # 16 cores over 8 workers
    assert set(_env(plans, "OMP_NUM_THREADS")) == {"2"}
    assert describe_plan(plans) == "8 worker(s) 4 per GPU on GPU 0,1, 2 torch thread(s) each"


def test_workers_per_device_overrides_the_default():
    plans = plan_workers("auto", 3, cpu_count=16, cuda_count=2, metrics_port=9400)
    assert _env(plans, "CUDA_VISIBLE_DEVICES") == ["0"] * 3 + ["1"] * 3
    assert set(_env(plans, "INGESTOR_RUNTIME__TORCH_THREADS")) == {"2"}


def test_with_a_lite_file_the_default_is_one_worker_per_gpu_and_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="ingestor.supervisor"):
        [one] = plan_workers("auto", None, cpu_count=16, cuda_count=1, metrics_port=9400, lite=True)
    assert one.env["CUDA_VISIBLE_DEVICES"] == "0" and one.env["INGESTOR_RUNTIME__TORCH_THREADS"] == "16"
    assert "instead of the default 4" in caplog.text and "Milvus Lite" in caplog.text
    assert len(plan_workers("auto", 2, 16, 1, 9400, lite=True)) == 2, "a count asked for is kept (and refused later)"


@pytest.mark.parametrize("workers, per_device, count", [(None, None, None), (2, None, 2), (None, 3, 3), (2, 2, 2)])
def test_workers_and_workers_per_device_name_one_count(workers, per_device, count):
    assert workers_option(workers, per_device) == count


def test_contradicting_worker_counts_are_a_config_error():
    with pytest.raises(ConfigError, match="--workers 2 and --workers-per-device 3"):
        workers_option(2, 3)


# `ingestor run` on a GPU box that is not there: torch reports `gpus` devices, the machine has 16
# cores, and the supervisor only records what it was asked to start.
class _Recorded:
    plans: list[WorkerPlan] = []
    args: list[str] = []

    def __init__(self, _settings: Settings, plans: list[WorkerPlan], args: list[str]) -> None:
        _Recorded.plans, _Recorded.args = plans, args

    def run(self) -> int:
        return 0


@pytest.fixture
def gpu_box(monkeypatch):
    def start(argv: list[str], gpus: int, milvus_uri: str) -> int:
        monkeypatch.setitem(
            sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: gpus))
        )
        monkeypatch.setattr("ingestor.supervisor.usable_cores", lambda: 16)
        monkeypatch.setattr("ingestor.supervisor.Supervisor", _Recorded)
        monkeypatch.setattr("ingestor.supervisor.warn_if_few_partitions", lambda *_: None)
        monkeypatch.setattr(cli_common, "setup_logging", lambda *_: None)  # keep pytest's log capture
        monkeypatch.setenv("INGESTOR_MILVUS__URI", milvus_uri)
        monkeypatch.setattr(sys, "argv", ["ingestor", *argv])
        _Recorded.plans, _Recorded.args = [], []
        return _run_app()

    return start


def test_run_devices_auto_on_a_gpu_box_starts_k_workers_per_gpu(gpu_box):
    assert gpu_box(["run", "--devices", "auto", "--topics", "t"], 2, "http://milvus:19530") == 0
    assert _env(_Recorded.plans, "CUDA_VISIBLE_DEVICES") == ["0"] * 4 + ["1"] * 4
    assert _Recorded.args == ["--topics", "t"]


def test_run_workers_per_device_overrides_and_does_not_reach_the_workers(gpu_box):
    assert gpu_box(["run", "--devices", "auto", "--workers-per-device=2"], 1, "http://milvus:19530") == 0
    assert _env(_Recorded.plans, "CUDA_VISIBLE_DEVICES") == ["0", "0"]
    assert _Recorded.args == []


def test_run_devices_auto_with_a_lite_file_keeps_one_worker(gpu_box, caplog):
    with caplog.at_level(logging.INFO):
        assert gpu_box(["run", "--devices", "auto"], 1, "/data/ingestor.db") == 0
    assert len(_Recorded.plans) == 1 and "a Milvus Lite file takes one process" in caplog.text


@pytest.mark.parametrize("argv", [["--devices", "auto", "--workers-per-device", "2"], ["--devices", "0,1"]])
def test_run_refuses_several_workers_on_a_lite_file(gpu_box, capsys, argv):
    assert gpu_box(["run", *argv], 2, "/data/ingestor.db") == 2
    assert "cannot share the Milvus Lite file /data/ingestor.db" in capsys.readouterr().err
    assert not _Recorded.plans


def test_run_refuses_contradicting_worker_counts_with_exit_2(gpu_box, capsys):
    assert (
        gpu_box(["run", "--devices", "0", "--workers", "2", "--workers-per-device", "3"], 1, "http://milvus:19530") == 2
    )
    err = capsys.readouterr().err
    assert "--workers 2 and --workers-per-device 3 contradict each other" in err and "Traceback" not in err
    assert not _Recorded.plans


class _Topics:
    """A KafkaConsumer that knows only how many partitions each topic has."""

    def __init__(self, **_kwargs: object) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range({"a": 2, "b": 1}[topic]))

    def close(self) -> None:
        pass


def test_more_workers_than_partitions_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr("kafka.KafkaConsumer", _Topics)
    settings = Settings(kafka={"topics": "a,b"})
    with caplog.at_level(logging.WARNING, logger="ingestor.supervisor"):
        warn_if_few_partitions(settings, 3)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="ingestor.supervisor"):
        warn_if_few_partitions(settings, 8)  # two GPUs with four workers each
    assert "8 worker(s) but only 3 partition(s) in a, b: 5 worker(s) will sit idle" in caplog.text


def test_worker_arguments_lose_the_supervisor_options():
    args = ["--devices", "0,1", "--topics", "a", "--workers=2", "--workers-per-device", "2", "--until-caught-up"]
    names = ("--devices", "--workers", "--workers-per-device")
    assert _drop_option_values(args, names) == ["--topics", "a", "--until-caught-up"]


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
