"""`ingestor run --devices 0,1` / `--workers-per-device K`: K worker processes per device, all in
one consumer group, so Kafka spreads the partitions across them (and across machines running the
same command). Scale-out is the consumer group's job; this only keeps the local workers alive.

Each worker is a plain `ingestor run` child with `CUDA_VISIBLE_DEVICES` set to its GPU (the K
workers of one GPU share it), its share of the cores as torch threads, and its own metrics port
(`metrics.port + 1 + i`). Without a count, a GPU gets `default_workers_per_gpu` workers.
A crashed worker is restarted with backoff; SIGTERM/SIGINT are forwarded; the supervisor exits
non-zero only when a worker keeps failing, or refuses to start (exit 2: a configuration that no
restart can mend, so the others are stopped too and the supervisor exits 2).

The supervisor serves no metrics of its own: each restarted worker is told how many times its slot
has been restarted and exports that as `ingestor_worker_restarts_total`, which therefore only grows
across the restarts of one slot, as a Prometheus counter must.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ingestor import metrics
from ingestor.config import Settings
from ingestor.errors import ConfigError, RetriableError
from ingestor.retry import Backoff

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
# How the supervisor tells a worker how many times its slot was restarted before it.
RESTARTS_ENV = "INGESTOR_WORKER_RESTARTS"


def export_restarts(environ: dict[str, str] | None = None) -> None:
    """In a worker: count the restarts of its slot that the supervisor handed down."""
    raw = (os.environ if environ is None else environ).get(RESTARTS_ENV, "")
    if raw.isdigit() and int(raw) > 0:
        metrics.WORKER_RESTARTS.inc(int(raw))


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    index: int
    env: dict[str, str]


# The default K per GPU: one worker's Python (its GIL) feeds a GPU more slowly than a GPU embeds
# MiniLM-sized texts (the rates below; docs/performance.md has the measurements), so enough
# workers to cover the faster rate, each with two cores (its Python thread, and the tokenizer and
# I/O threads beside it), and never more than the GPU's share of the cores allows.
GPU_TEXTS_PER_S = 15_000
WORKER_TEXTS_PER_S = 4_000
CORES_PER_WORKER = 2
MAX_WORKERS_PER_GPU = math.ceil(GPU_TEXTS_PER_S / WORKER_TEXTS_PER_S)  # 4


def default_workers_per_gpu(cores: int, gpus: int) -> int:
    """K when none is given: enough to keep a GPU busy, as far as each GPU's share of the cores allows."""
    cores_per_gpu = cores // max(1, gpus)
    return max(1, min(MAX_WORKERS_PER_GPU, cores_per_gpu // CORES_PER_WORKER))


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, where it has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def workers_option(workers: int | None, workers_per_device: int | None) -> int | None:
    """The one count `--workers` and `--workers-per-device` give, or None; ConfigError when they differ.

    With GPUs `--workers` already counts per GPU, and `--devices cpu` is one device, so the two
    name the same number: different values can only be a mistake."""
    if workers is not None and workers_per_device is not None and workers != workers_per_device:
        raise ConfigError(
            f"--workers {workers} and --workers-per-device {workers_per_device} contradict each other: "
            "both count the worker processes of each device (--devices cpu is one device); give only "
            "--workers-per-device"
        )
    return workers_per_device if workers_per_device is not None else workers


def gpu_ids(devices: str, cuda_count: int) -> list[str]:
    """The GPU indices `--devices` names (every GPU for auto), or [] for the CPU."""
    devices = devices.strip().lower()
    if devices == "auto":
        return [str(i) for i in range(cuda_count)]
    if devices == "cpu":
        return []
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    if not ids or not all(d.isdigit() for d in ids):
        raise ConfigError(f"--devices must be auto, cpu or a list of GPU indices like 0,1 (got {devices!r})")
    return ids


def plan_workers(
    devices: str, workers: int | None, cpu_count: int, cuda_count: int, metrics_port: int, lite: bool = False
) -> list[WorkerPlan]:
    """Pure but for one log line: which workers to start, and the environment each one gets.

    `workers` is the count per device (on the CPU, in all); None means one on the CPU and
    `default_workers_per_gpu` on GPUs, or one per GPU when `lite`: a Milvus Lite file takes one
    process, and a default must not turn a working single-GPU setup into a refusal."""
    ids = gpu_ids(devices, cuda_count)
    plans: list[WorkerPlan] = []
    if not ids:
        for i in range(workers or 1):
            plans.append(WorkerPlan(i, {"INGESTOR_MODEL__DEVICE": "cpu"}))
    else:
        per_device = workers or default_workers_per_gpu(cpu_count, len(ids))
        if workers is None and lite and per_device > 1:
            log.info(
                "one worker per GPU instead of the default %d: a Milvus Lite file takes one process "
                "(with a Milvus server in milvus.uri, %d per GPU)",
                per_device,
                per_device,
            )
            per_device = 1
        for gpu in ids:
            for _ in range(per_device):
                plans.append(WorkerPlan(len(plans), {"CUDA_VISIBLE_DEVICES": gpu, "INGESTOR_MODEL__DEVICE": "cuda"}))
    # Each worker gets its share of the cores, so K torch thread pools do not oversubscribe them.
    threads = str(max(1, cpu_count // len(plans)))
    for p in plans:
        p.env.update({"INGESTOR_RUNTIME__TORCH_THREADS": threads, "OMP_NUM_THREADS": threads})
        p.env["INGESTOR_METRICS__PORT"] = str(metrics_port + 1 + p.index) if metrics_port else "0"
    return plans


def describe_plan(plans: list[WorkerPlan]) -> str:
    """One line for the log: how many workers, on which devices, with how many threads."""
    gpus = list(dict.fromkeys(p.env["CUDA_VISIBLE_DEVICES"] for p in plans if "CUDA_VISIBLE_DEVICES" in p.env))
    where = f"{len(plans) // len(gpus)} per GPU on GPU {','.join(gpus)}" if gpus else "on the CPU"
    threads = plans[0].env["INGESTOR_RUNTIME__TORCH_THREADS"] if plans else "0"
    return f"{len(plans)} worker(s) {where}, {threads} torch thread(s) each"


@dataclass(slots=True)
class _Worker:
    plan: WorkerPlan
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)  # recent failures, for giving up
    restarted: int = 0  # every restart of this slot, for the metric
    next_start: float = 0.0
    finished: bool = False


class Supervisor:
    def __init__(
        self, settings: Settings, plans: list[WorkerPlan], worker_args: list[str], command: list[str] | None = None
    ) -> None:
        """`command` replaces `python -m ingestor run` (the worker arguments follow it): for tests."""
        self.settings = settings
        self.workers = [_Worker(p) for p in plans]
        self.worker_args = worker_args
        self.command = command or [sys.executable, "-m", "ingestor", "run"]
        self.backoff = Backoff(initial_ms=1_000, max_ms=60_000)
        self.stopping = False
        self.signalled = False

    def _spawn(self, worker: _Worker) -> None:
        env = dict(os.environ, **worker.plan.env)
        env.pop(RESTARTS_ENV, None)
        if worker.restarted:
            env[RESTARTS_ENV] = str(worker.restarted)
        cmd = [*self.command, *self.worker_args]
        worker.proc = subprocess.Popen(cmd, env=env)
        log.info(
            "worker %d started (pid %d) with %s",
            worker.plan.index,
            worker.proc.pid,
            ", ".join(f"{k}={v}" for k, v in worker.plan.env.items() if not k.startswith("OMP")),
        )

    def _forward(self, signum: int, _frame: object) -> None:
        if self.signalled:  # second signal: stop now
            for w in self.workers:
                if w.proc and w.proc.poll() is None:
                    w.proc.kill()
            os._exit(1)
        self.signalled = True
        log.info("%s received: stopping %d worker(s)", signal.Signals(signum).name, len(self.workers))
        self._stop_all(signum)

    def _stop_all(self, signum: int = signal.SIGTERM) -> None:
        self.stopping = True
        for w in self.workers:
            if w.proc and w.proc.poll() is None:
                w.proc.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for w in self.workers:
            self._spawn(w)
        failed = refused = False
        while True:
            alive = False
            for w in self.workers:
                if w.finished:
                    continue
                code = w.proc.poll() if w.proc else None
                if w.proc is not None and code is None:
                    alive = True
                    continue
                if w.proc is not None:
                    if code == 0 or self.stopping:
                        w.finished = True
                        log.info("worker %d exited with %s", w.plan.index, code)
                        continue
                    if code == 2:  # configuration or start-up refusal: restarting cannot help
                        log.error(
                            "worker %d refused to start (exit 2; its message above says why): stopping the others",
                            w.plan.index,
                        )
                        w.finished, refused = True, True
                        self._stop_all()
                        continue
                    now = time.monotonic()
                    w.restarts = [t for t in w.restarts if now - t < RESTART_WINDOW_S] + [now]
                    if len(w.restarts) > MAX_RESTARTS:
                        log.error(
                            "worker %d failed %d times in %.0fs; giving up",
                            w.plan.index,
                            len(w.restarts),
                            RESTART_WINDOW_S,
                        )
                        w.finished, failed = True, True
                        continue
                    delay = self.backoff.delay_s(len(w.restarts) - 1)
                    log.warning("worker %d exited with %s; restarting in %.1fs", w.plan.index, code, delay)
                    w.proc, w.next_start = None, now + delay
                    alive = True
                elif time.monotonic() >= w.next_start and not self.stopping:
                    w.restarted += 1
                    self._spawn(w)
                    alive = True
                else:
                    alive = not self.stopping
            if not alive:
                return 2 if refused else 1 if failed else 0
            time.sleep(0.2)


def warn_if_few_partitions(settings: Settings, workers: int) -> None:
    from kafka import KafkaConsumer

    from ingestor.kafka_common import client_kwargs, kafka_errors

    try:
        with kafka_errors("kafka", "could not read the partition count"):
            consumer = KafkaConsumer(**client_kwargs(settings.kafka))
            try:
                counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in settings.kafka.topics}
            finally:
                consumer.close()
    except RetriableError as exc:  # only a warning: each worker waits for Kafka itself
        log.warning("%s", exc)
        return
    total = sum(counts.values())
    if total < workers:
        log.warning(
            "%d worker(s) but only %d partition(s) in %s: %d worker(s) will sit idle (add partitions, "
            "or lower --workers-per-device)",
            workers,
            total,
            ", ".join(counts),
            workers - total,
        )
