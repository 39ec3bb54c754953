"""Weights for sentence-transformers' ONNX and OpenVINO backends, made once per host and reused.

The bundled model ships only safetensors and production hosts reach no model hub, so the
backend's weights are made here: sentence-transformers exports the model through optimum when the
backend file is missing, and int8 is made from that export

- ONNX: dynamic quantisation (`export_dynamic_quantized_onnx_model`, no calibration data), with
  the preset of this CPU (avx512_vnni, avx512, avx2 or arm64);
- OpenVINO: static quantisation with NNCF, calibrated on texts of the bundled sample corpus
  (sentence-transformers' own helper downloads GLUE/SST-2 for that, which no host here can).

Each variant is a complete sentence-transformers model directory under the cache dir, named by
model, backend, weights and a fingerprint of the source files. It is built in a temporary
directory beside it and renamed into place, so a crash midway or several workers starting at
once never leave half a model behind; the first rename wins and the others are dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import platform
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ingestor.corpus import SAMPLE, load_corpus
from ingestor.errors import StartupError

log = logging.getLogger(__name__)

CALIBRATION_TEXTS = 300  # OpenVINO int8: NNCF's default subset size; ~20 s on 2 cores for MiniLM

# Modules each backend imports, and the extra that installs them.
REQUIRED_MODULES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "optimum.onnxruntime"),
    "openvino": ("openvino", "optimum.intel.openvino"),
}
INT8_MODULES: dict[str, tuple[str, ...]] = {"onnx": (), "openvino": ("nncf",)}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def missing_modules(backend: str, precision: str) -> list[str]:
    """Modules `backend` at `precision` needs that cannot be imported here."""
    wanted = REQUIRED_MODULES.get(backend, ()) + (INT8_MODULES.get(backend, ()) if precision == "int8" else ())
    return [m for m in wanted if not _importable(m)]


def require_backend(backend: str, precision: str) -> None:
    """StartupError naming the extra to install when the backend's packages are missing."""
    missing = missing_modules(backend, precision)
    if missing:
        raise StartupError(
            f"model.backend={backend} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: pip install 'ingestor[{backend}]'"
        )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def cache_root(configured: str | None) -> Path:
    """model.cache_dir, else $INGESTOR_HOME/models, else ~/.cache/ingestor/models."""
    if configured:
        return Path(configured).expanduser()
    home = os.environ.get("INGESTOR_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "ingestor") / "models"


def onnx_quantization_preset() -> str:
    """sentence-transformers' dynamic int8 preset for this CPU: the widest integer dot product it has."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "avx2"  # no /proc (macOS x86): every x86-64 CPU of the last decade has AVX2
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


@dataclass(frozen=True, slots=True)
class Variant:
    """Where one backend/weights variant lives and which file in it to load."""

    backend: str
    weights: str  # fp32 or int8: OpenVINO's bf16 is a run-time hint over the fp32 export
    directory: Path
    file_name: str  # relative to directory, as sentence-transformers' model_kwargs["file_name"]


def weights_for(precision: str) -> str:
    return "int8" if precision == "int8" else "fp32"


def onnx_int8_suffix(preset: str) -> str:
    """The int8 file's suffix, named as sentence-transformers and the Hub's models name it: optimum's
    AVX2 preset quantises weights to uint8 (AVX2's uint8 x int8 multiply can saturate), the others to int8."""
    return f"{'quint8' if preset == 'avx2' else 'qint8'}_{preset}"


def file_name_for(backend: str, weights: str) -> str:
    if backend == "onnx":
        if weights == "int8":
            return f"onnx/model_{onnx_int8_suffix(onnx_quantization_preset())}.onnx"
        return "onnx/model.onnx"
    return "openvino/openvino_model_qint8_static.xml" if weights == "int8" else "openvino/openvino_model.xml"


def source_fingerprint(source: str) -> str:
    """A short hash that changes when the source model's files do (a new package version)."""
    digest = hashlib.sha256(source.encode())
    root = Path(source)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel.split("/", 1)[0] in ("onnx", "openvino"):
                continue  # other backends' files beside the weights do not change them
            stat = path.stat()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "--")).strip("._") or "model"


def variant_for(name: str, source: str, backend: str, precision: str, root: Path) -> Variant:
    weights = weights_for(precision)
    file_name = file_name_for(backend, weights)
    # The ONNX int8 preset is in the name, so a cache dir shared by unlike CPUs keeps one each.
    tag = (
        weights if weights == "fp32" else (f"int8_{onnx_quantization_preset()}" if backend == "onnx" else "int8_static")
    )
    directory = root / f"{_slug(name)}-{backend}-{tag}-{source_fingerprint(source)}"
    return Variant(backend, weights, directory, file_name)


def ensure_variant(variant: Variant, source: str, calibration: list[str] | None = None) -> None:
    """Build the variant's directory unless it is already there (built by us or another worker)."""
    if (variant.directory / variant.file_name).is_file():
        return
    root = variant.directory.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{variant.directory.name}.", dir=root))
    except OSError as exc:
        raise StartupError(
            f"cannot write the {variant.backend} export under {root}: {exc}; set model.cache_dir "
            "(INGESTOR_MODEL__CACHE_DIR) to a writable directory"
        ) from exc
    log.info(
        "exporting %s to %s %s weights in %s (once; later starts reuse it)",
        source,
        variant.backend,
        variant.weights,
        variant.directory,
    )
    try:
        with _export_noise_off():
            _build(variant, source, staging, calibration)
        try:
            staging.rename(variant.directory)
        except OSError:
            if not (variant.directory / variant.file_name).is_file():
                raise
            log.info("another process exported %s first; using its copy", variant.directory.name)
    except StartupError:
        raise
    except Exception as exc:
        # optimum imports transformers internals lazily, so a version mismatch shows up only here.
        hint = (
            f"; the optimum packages do not fit this transformers {_version('transformers')}: "
            f"pip install 'ingestor[{variant.backend}]' resolves versions that do"
            if isinstance(exc, ImportError)
            else ""
        )
        raise StartupError(
            f"cannot export {source} to {variant.backend} ({variant.weights}): {type(exc).__name__}: {exc}{hint}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def quiet_libraries(backend: str) -> None:
    """optimum and nncf give their loggers their own handlers (nncf's on stdout) when first used:
    route them through ours (and --log-format json), errors only. Their warnings here are about
    the export they are asked for ("No 'model.onnx' found ... exporting") or harmless probes."""
    for module in REQUIRED_MODULES.get(backend, ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    with contextlib.suppress(ImportError):
        from optimum.utils import logging as optimum_logging

        optimum_logging.get_logger("optimum")  # adds its handler on first use: now, so it can be removed
    for name in ("optimum", "nncf"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.ERROR)


@contextlib.contextmanager
def _export_noise_off() -> Iterator[None]:
    """Tracing warnings, transformers' config chatter and onnxruntime's quantiser (one INFO line per
    tensor, on the root logger) say nothing an operator can act on; errors still surface."""
    transformers_log = logging.getLogger("transformers")
    level = transformers_log.level
    transformers_log.setLevel(logging.ERROR)
    logging.disable(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        transformers_log.setLevel(level)


def _build(variant: Variant, source: str, staging: Path, calibration: list[str] | None) -> None:
    from sentence_transformers import SentenceTransformer

    quiet_libraries(variant.backend)
    # The source has no backend file, so sentence-transformers exports through optimum here.
    model = SentenceTransformer(source, device="cpu", backend=cast(Any, variant.backend))
    model.save_pretrained(str(staging))
    if variant.weights == "fp32":
        return
    if variant.backend == "onnx":
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model

        preset = onnx_quantization_preset()
        # The suffix is passed, not left to the default, so the file written is the one looked for.
        export_dynamic_quantized_onnx_model(model, preset, str(staging), file_suffix=onnx_int8_suffix(preset))
        (staging / "onnx" / "model.onnx").unlink()  # only the int8 file is loaded from here
    else:
        max_length = model.max_seq_length
        assert max_length is not None, "a sentence-transformers model knows its maximum sequence length"
        _quantize_openvino(staging, model.tokenizer, max_length, calibration or sample_texts())
    if not (staging / variant.file_name).is_file():
        raise StartupError(f"the {variant.backend} int8 export did not produce {variant.file_name}")


def _quantize_openvino(staging: Path, tokenizer: Any, max_length: int, texts: list[str]) -> None:
    """Static int8 (weights and activations) with NNCF, calibrated on `texts` one at a time, so
    the activation ranges come from real lengths rather than padding."""
    import nncf
    import openvino as ov

    fp32 = staging / "openvino" / "openvino_model.xml"
    model = ov.Core().read_model(fp32)
    names = {port.get_any_name() for port in model.inputs}
    samples = []
    for text in texts:
        encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        samples.append({k: v for k, v in encoded.items() if k in names})
    quiet_libraries("openvino")
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars: stdout is the CLI's output
        quantized = nncf.quantize(
            model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
        )
    ov.save_model(quantized, staging / "openvino" / "openvino_model_qint8_static.xml")
    fp32.unlink()
    fp32.with_suffix(".bin").unlink()


def sample_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """Texts from the end of the bundled corpus: the bench encodes its head, so calibration and
    measurement do not share texts."""
    return [r.text for r in load_corpus(SAMPLE)[-count:]]


def load_kwargs(backend: str, precision: str, file_name: str, threads: int | None) -> dict[str, Any]:
    """sentence-transformers' model_kwargs for loading an exported variant on the CPU."""
    kwargs: dict[str, Any] = {"file_name": file_name}
    if backend == "onnx":
        import onnxruntime as ort

        kwargs["provider"] = "CPUExecutionProvider"
        if threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            kwargs["session_options"] = options
    else:
        # OpenVINO runs bf16 by default on CPUs that have it (AMX): fp32 must be asked for.
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        kwargs["ov_config"] = config
    return kwargs
