"""README.md's metric table and its outcome invariant match the code: every `ingestor_*` metric the
code registers (ingestor/metrics.py's metrics and the record ledger's families) is in the table, with
its type and labels, and nothing else is; the invariant and the stop line name every outcome in
`ingestor.metrics.OUTCOMES`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from ingestor import metrics

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _exposed(name: str, kind: str) -> str:
    """The name an operator queries: a counter's samples end in `_total`."""
    return f"{name}_total" if kind == "counter" else name


def code_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every `ingestor_*` metric registered, by exposed name: (type, label names)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            found[_exposed(value._name, value._type)] = (value._type, tuple(value._labelnames))
    for family in metrics.RECORDS.collect():  # the ledger: one collector, several families
        found[_exposed(family.name, family.type)] = (family.type, tuple(getattr(family, "_labelnames", ())))
    # Nothing registered that the module's attributes and the ledger do not show.
    registered = {_exposed(f.name, f.type) for f in REGISTRY.collect() if f.name.startswith("ingestor_")}
    assert registered == set(found), f"registered but not found here: {sorted(registered - set(found))}"
    return found


def readme_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The metric table under "Metrics, health, logs": exposed name → (type, label names)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.fullmatch(r"\|\s*metric\s*\|\s*type\s*\|\s*meaning\s*\|", line)
    )
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        names, kind = (cell.strip() for cell in line.strip("|").split("|")[:2])
        for name, labels in re.findall(r"`(ingestor_\w+)(?:\{([\w,]*)\})?`", names):
            assert name not in table, f"{name} is in the table twice"
            table[name] = (kind, tuple(label for label in labels.split(",") if label))
        assert re.findall(r"`(ingestor_\w+)", names), f"a table row without a metric: {line}"
    return table


def test_the_readme_table_names_exactly_the_metrics_the_code_registers() -> None:
    code, table = code_metrics(), readme_table()
    assert len(code) >= 25, sorted(code)  # not vacuous: the ledger's families and metrics.py's metrics
    missing, stale = sorted(set(code) - set(table)), sorted(set(table) - set(code))
    assert not missing and not stale, (
        f"README's metric table lacks {missing} and names {stale}, which the code does not register"
    )
    for name, (kind, labels) in code.items():
        assert table[name][0] == kind, f"{name}: README says {table[name][0]}, the code registers a {kind}"
        assert sorted(table[name][1]) == sorted(labels), (
            f"{name}: README's labels {table[name][1]}, the code's {labels}"
        )


def test_the_readme_invariant_and_stop_line_name_every_outcome() -> None:
    text = README.read_text(encoding="utf-8")
    invariants = re.findall(r"^\s+consumed = (.+)$", text, re.M)
    assert len(invariants) == 1, invariants
    terms = [t.strip() for t in invariants[0].split("+")]
    assert sorted(terms) == sorted([*metrics.OUTCOMES, "in_flight"]), f"README's invariant: consumed = {invariants[0]}"
    stop_lines = re.findall(r"`stopped: ([^`]+)`", text)
    assert len(stop_lines) == 1, stop_lines
    keys = re.findall(r"(\w+)=", stop_lines[0])
    missing = [k for k in ("consumed", *metrics.OUTCOMES, "in_flight") if k not in keys]
    assert not missing, f"README's stop line lacks {missing}: {stop_lines[0]}"


def test_metrics_are_defined_in_metrics_py_alone() -> None:
    # What the table is checked against is what ingestor.metrics registers: a metric made elsewhere
    # would escape the check above.
    makers = {
        "Counter",
        "Gauge",
        "Histogram",
        "Summary",
        "Info",
        "Enum",
        "CounterMetricFamily",
        "GaugeMetricFamily",
        "HistogramMetricFamily",
        "SummaryMetricFamily",
    }
    found = []
    for path in sorted((ROOT / "ingestor").rglob("*.py")):
        if path == ROOT / "ingestor" / "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in makers:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}(...)")
    assert not found, found
