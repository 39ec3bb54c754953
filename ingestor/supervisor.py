"""`ingestor run --devices 0,1` / `--workers N`: one worker process per device, all in one
consumer group, so Kafka spreads the partitions across devices (and across machines running the
same command). Scale-out is the consumer group's job; this only keeps the local workers alive.

Each worker is a plain `ingestor run` child with `CUDA_VISIBLE_DEVICES` set to its GPU (or, on
CPU, its share of the cores as torch threads) and its own metrics port (`metrics.port + 1 + i`).
A crashed worker is restarted with backoff; SIGTERM/SIGINT are forwarded; the supervisor exits
non-zero only when a worker keeps failing, or refuses to start (exit 2: a configuration that no
restart can mend, so the others are stopped too and the supervisor exits 2).

The supervisor serves no metrics of its own: each restarted worker is told how many times its slot
has been restarted and exports that as `ingestor_worker_restarts_total`, which therefore only grows
across the restarts of one slot, as a Prometheus counter must.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ingestor import metrics
from ingestor.config import Settings
from ingestor.errors import ConfigError
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


def plan_workers(devices: str, workers: int | None, cpu_count: int, cuda_count: int, metrics_port: int) -> list[WorkerPlan]:
    """Pure: which workers to start, and the environment each one gets."""
    devices = devices.strip().lower()
    if devices == "auto":
        devices = ",".join(str(i) for i in range(cuda_count)) if cuda_count else "cpu"
    plans: list[WorkerPlan] = []
    if devices == "cpu":
        n = workers or 1
        threads = max(1, cpu_count // n)
        for i in range(n):
            plans.append(WorkerPlan(i, {"INGESTOR_MODEL__DEVICE": "cpu", "INGESTOR_RUNTIME__TORCH_THREADS": str(threads),
                                        "OMP_NUM_THREADS": str(threads)}))
    else:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        if not all(d.isdigit() for d in ids):
            raise ConfigError(f"--devices must be auto, cpu or a list of GPU indices like 0,1 (got {devices!r})")
        # On GPUs --workers counts workers per device: a small model leaves a GPU waiting on one
        # process's Python (the GIL), and several consumer-group members sharing it spread that.
        per_device = workers or 1
        for gpu in ids:
            for _ in range(per_device):
                plans.append(WorkerPlan(len(plans), {"CUDA_VISIBLE_DEVICES": gpu, "INGESTOR_MODEL__DEVICE": "cuda"}))
    for p in plans:
        p.env["INGESTOR_METRICS__PORT"] = str(metrics_port + 1 + p.index) if metrics_port else "0"
    return plans


@dataclass(slots=True)
class _Worker:
    plan: WorkerPlan
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)  # recent failures, for giving up
    restarted: int = 0  # every restart of this slot, for the metric
    next_start: float = 0.0
    finished: bool = False


class Supervisor:
    def __init__(self, settings: Settings, plans: list[WorkerPlan], worker_args: list[str],
                 command: list[str] | None = None) -> None:
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
        log.info("worker %d started (pid %d) with %s", worker.plan.index, worker.proc.pid,
                 ", ".join(f"{k}={v}" for k, v in worker.plan.env.items() if not k.startswith("OMP")))

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
                        log.error("worker %d refused to start (exit 2; its message above says why): stopping the "
                                  "others", w.plan.index)
                        w.finished, refused = True, True
                        self._stop_all()
                        continue
                    now = time.monotonic()
                    w.restarts = [t for t in w.restarts if now - t < RESTART_WINDOW_S] + [now]
                    if len(w.restarts) > MAX_RESTARTS:
                        log.error("worker %d failed %d times in %.0fs; giving up", w.plan.index, len(w.restarts), RESTART_WINDOW_S)
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

    from ingestor.kafka_common import client_kwargs

    try:
        consumer = KafkaConsumer(**client_kwargs(settings.kafka))
        counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in settings.kafka.topics}
        consumer.close()
    except Exception as exc:
        log.warning("could not read the partition count (%s)", exc)
        return
    total = sum(counts.values())
    if total < workers:
        log.warning("%d worker(s) but only %d partition(s) in %s: %d worker(s) will sit idle",
                    workers, total, ", ".join(counts), workers - total)
