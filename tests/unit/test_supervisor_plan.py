from __future__ import annotations

import pytest

from ingestor.cli import _drop_option_values
from ingestor.errors import ConfigError
from ingestor.supervisor import plan_workers


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
