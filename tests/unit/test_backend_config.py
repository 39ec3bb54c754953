"""model.backend and model.precision: which combinations load, and one readable error for the others.
Also the pure parts of ingestor/backends.py (no optional package needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestor import backends
from ingestor.config import BACKEND_PRECISIONS, ModelSettings, load_settings, parse_variant
from ingestor.errors import ConfigError, StartupError


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith("INGESTOR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(**model: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"model": model})
    return str(info.value)


# -- config -----------------------------------------------------------------------------------------


def test_default_is_torch_fp32_and_keeps_the_old_cache_identity():
    m = load_settings().model
    assert (m.backend, m.precision, m.variant) == ("torch", "fp32", "fp32")  # name@fp32, as before


@pytest.mark.parametrize(("backend", "precision"), [(b, p) for b, ps in BACKEND_PRECISIONS.items() for p in ps])
def test_every_listed_combination_loads(backend, precision):
    m = load_settings(overrides={"model": {"backend": backend, "precision": precision}}).model
    assert m.variant == (precision if backend == "torch" else f"{backend}-{precision}")


def test_backend_and_precision_from_env(monkeypatch):
    monkeypatch.setenv("INGESTOR_MODEL__BACKEND", "onnx")
    monkeypatch.setenv("INGESTOR_MODEL__PRECISION", "int8")
    assert load_settings().model.variant == "onnx-int8"


def test_int8_with_torch_names_the_field_its_variable_and_the_backends_that_have_it():
    msg = config_error(precision="int8")
    assert "model.precision" in msg and "INGESTOR_MODEL__PRECISION" in msg
    assert "onnx or openvino" in msg and msg.count("\n") == 1, msg


@pytest.mark.parametrize(("backend", "precision"), [("onnx", "bf16"), ("onnx", "fp16"), ("openvino", "fp16")])
def test_half_precisions_the_backend_lacks_are_one_error(backend, precision):
    msg = config_error(backend=backend, precision=precision)
    assert "model.precision" in msg and f"model.backend={backend}" in msg and msg.count("\n") == 1, msg


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_non_torch_backends_run_on_the_cpu_only(device):
    msg = config_error(backend="openvino", device=device)
    assert "model.backend" in msg and "INGESTOR_MODEL__BACKEND" in msg and "cpu or auto" in msg


def test_an_unknown_backend_is_one_error_not_two():
    msg = config_error(backend="tensorrt", precision="int8")
    assert "model.backend" in msg and "model.precision" not in msg


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("onnx", ("onnx", "fp32")),
        ("onnx-int8", ("onnx", "int8")),
        ("OpenVINO-int8", ("openvino", "int8")),
        ("openvino-bf16", ("openvino", "bf16")),
        ("bf16", ("torch", "bf16")),
        ("fp16", ("torch", "fp16")),
    ],
)
def test_parse_variant(label, expected):
    assert tuple(parse_variant(label).values()) == expected


@pytest.mark.parametrize("label", ["int8", "onnx-bf16", "onnx-fp16", "tensorrt", "openvino-fp8"])
def test_parse_variant_rejects_what_cannot_run(label):
    with pytest.raises(ConfigError, match="onnx-int8"):  # the message lists the choices
        parse_variant(label)


def test_bench_refuses_to_compare_torch_fp32_with_itself():
    from bench.__main__ import _comparable

    assert _comparable("onnx") == "onnx-fp32" and _comparable("bf16") == "bf16"
    with pytest.raises(ConfigError):
        _comparable("fp32")


# -- backends: packages, cache layout, load options -------------------------------------------------


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setattr(backends, "_importable", lambda module: False)
    with pytest.raises(StartupError, match=r"pip install 'ingestor\[openvino\]'") as info:
        backends.require_backend("openvino", "int8")
    assert "nncf" in str(info.value)  # int8 needs the quantiser too
    assert backends.missing_modules("openvino", "fp32") == ["openvino", "optimum.intel.openvino"]


def test_cache_root_setting_then_ingestor_home_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("INGESTOR_HOME", str(tmp_path / "home"))
    assert backends.cache_root(str(tmp_path / "mine")) == tmp_path / "mine"
    assert backends.cache_root(None) == tmp_path / "home" / "models"
    monkeypatch.delenv("INGESTOR_HOME")
    assert backends.cache_root(None) == Path.home() / ".cache" / "ingestor" / "models"


def _fake_model(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "1_Pooling").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "1_Pooling" / "config.json").write_text("{}")
    return src


def test_variants_live_apart_and_the_fingerprint_follows_the_source(tmp_path):
    src = _fake_model(tmp_path)
    onnx32 = backends.variant_for("org/model", str(src), "onnx", "fp32", tmp_path)
    onnx8 = backends.variant_for("org/model", str(src), "onnx", "int8", tmp_path)
    ov32 = backends.variant_for("org/model", str(src), "openvino", "fp32", tmp_path)
    ov16 = backends.variant_for("org/model", str(src), "openvino", "bf16", tmp_path)
    assert len({onnx32.directory, onnx8.directory, ov32.directory}) == 3
    assert ov16.directory == ov32.directory, "bf16 is a run-time hint over the fp32 export"
    assert onnx32.directory.name.startswith("org--model-onnx-fp32-")
    preset = backends.onnx_quantization_preset()
    assert onnx8.file_name == f"onnx/model_{'quint8' if preset == 'avx2' else 'qint8'}_{preset}.onnx"
    before = onnx32.directory
    (src / "onnx").mkdir()
    (src / "onnx" / "model.onnx").write_bytes(b"x")  # a backend file beside the weights changes nothing
    assert backends.variant_for("org/model", str(src), "onnx", "fp32", tmp_path).directory == before
    (src / "model.safetensors").write_bytes(b"new weights")
    assert backends.variant_for("org/model", str(src), "onnx", "fp32", tmp_path).directory != before


def test_a_built_variant_is_reused_and_a_build_leaves_no_staging_dir(tmp_path, monkeypatch):
    src = _fake_model(tmp_path)
    variant = backends.variant_for("m", str(src), "onnx", "fp32", tmp_path / "cache")
    builds = []

    def build(v, source, staging, calibration):
        builds.append(staging)
        (staging / "onnx").mkdir()
        (staging / "onnx" / "model.onnx").write_bytes(b"onnx")

    monkeypatch.setattr(backends, "_build", build)
    backends.ensure_variant(variant, str(src))
    backends.ensure_variant(variant, str(src))
    assert len(builds) == 1 and (variant.directory / variant.file_name).read_bytes() == b"onnx"
    assert [p.name for p in variant.directory.parent.iterdir()] == [variant.directory.name]


def test_when_another_worker_finishes_first_its_copy_is_used(tmp_path, monkeypatch):
    src = _fake_model(tmp_path)
    variant = backends.variant_for("m", str(src), "onnx", "fp32", tmp_path / "cache")

    def build(v, source, staging, calibration):
        for d, payload in ((v.directory, b"theirs"), (staging, b"ours")):  # the other worker renames first
            (d / "onnx").mkdir(parents=True)
            (d / "onnx" / "model.onnx").write_bytes(payload)

    monkeypatch.setattr(backends, "_build", build)
    backends.ensure_variant(variant, str(src))
    assert (variant.directory / variant.file_name).read_bytes() == b"theirs"
    assert [p.name for p in variant.directory.parent.iterdir()] == [variant.directory.name]


def test_a_failed_export_is_a_startup_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    src = _fake_model(tmp_path)
    variant = backends.variant_for("m", str(src), "openvino", "int8", tmp_path / "cache")

    def build(v, source, staging, calibration):
        (staging / "half").write_text("x")
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(backends, "_build", build)
    with pytest.raises(StartupError, match="exporter broke"):
        backends.ensure_variant(variant, str(src))
    assert list(variant.directory.parent.iterdir()) == []


def test_an_unwritable_cache_dir_says_which_setting_to_change(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    variant = backends.variant_for("m", str(_fake_model(tmp_path)), "onnx", "fp32", blocker / "models")
    with pytest.raises(StartupError, match="INGESTOR_MODEL__CACHE_DIR"):
        backends.ensure_variant(variant, "m")


@pytest.mark.parametrize(("precision", "hint"), [("fp32", "f32"), ("int8", "f32"), ("bf16", "bf16")])
def test_openvino_runs_what_was_asked_for_not_its_cpu_default(precision, hint):
    kwargs = backends.load_kwargs("openvino", precision, "openvino/x.xml", threads=3)
    assert kwargs["ov_config"] == {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": "3"}
    assert kwargs["file_name"] == "openvino/x.xml"


def test_calibration_texts_come_from_the_end_of_the_sample():
    texts = backends.sample_texts(5)
    assert len(texts) == 5 and all(isinstance(t, str) and t for t in texts)


def test_model_settings_default_cache_dir_is_unset():
    assert ModelSettings().cache_dir is None


def test_an_optimum_that_does_not_fit_transformers_says_how_to_get_one_that_does(tmp_path, monkeypatch):
    src = _fake_model(tmp_path)
    variant = backends.variant_for("m", str(src), "onnx", "fp32", tmp_path / "cache")

    def build(v, source, staging, calibration):
        raise ImportError("cannot import name 'get_parameter_dtype' from 'transformers.modeling_utils'")

    monkeypatch.setattr(backends, "_build", build)
    with pytest.raises(StartupError, match=r"get_parameter_dtype.*pip install 'ingestor\[onnx\]'"):
        backends.ensure_variant(variant, str(src))
