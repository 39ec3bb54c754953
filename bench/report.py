"""The bench's figures for people (a table and notes) and for machines (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.run import TARGETS
from bench.variants import NAIVE_BATCH


def public(result: Any) -> Any:
    """The figures without private entries (vectors)."""
    return json.loads(json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else None))


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    rss = result.get("peak_rss_mib", {})
    console.print(
        f"device [bold]{result['device']}[/bold] ({result['device_name']}), precision "
        f"[bold]{result['precision']}[/bold], torch {result['torch']} with {result['torch_threads']} "
        f"thread(s); {result['limit']} of {result['corpus_records']} records, {result['tokens']:,} tokens; "
        f"peak RSS {_f(rss.get('self'))} MiB"
    )
    load = result.get("load_average", {})
    if "after" in load:
        busy = max(load["before"][0], load["after"][0]) > load["cpus"] + 0.5
        console.print(
            f"load average (1/5/15 min) {load['before']} before, {load['after']} after, on {load['cpus']} "
            f"CPU(s){': other processes competed for the CPU, so the figures are noisy' if busy else ''}",
            highlight=False,
        )
    if "precision_comparison" in result:
        cmp_ = result["precision_comparison"]
        other = cmp_["other"]
        table = Table(title=f"plain encode, torch fp32 vs {other}")
        for col in ("setting", "batch size", "seconds", "texts/s", "tokens/s", "others' CPU"):
            table.add_column(col, justify="right", no_wrap=True)
        for p in ("fp32", other):
            r = cmp_[p]
            share = r.get("others_cpu_share")
            table.add_row(
                "torch fp32" if p == "fp32" else p,
                str(r["batch_size"]),
                _f(r["seconds"], 2),
                _f(r["texts_per_s"]),
                _f(r["tokens_per_s"], 0),
                "–" if share is None else f"{100 * share:.0f}%",
            )
        console.print(table)
        target = TARGETS["precision_int8_min_cosine" if other.endswith("int8") else "precision_min_cosine"]
        console.print(
            f"speed-up {other}/torch fp32: [bold]{_f(cmp_['speedup'], 2)}×[/bold] (target ≥ "
            f"{TARGETS['precision_speedup']}×); cosine to torch fp32: min {cmp_['cosine_min']:.5f}, mean "
            f"{cmp_['cosine_mean']:.5f} (target min ≥ {target})"
        )
        return
    sink = result.get("sink_alone")
    if sink:
        render_sink_rate({**sink, "sink": result.get("sink")}, console)
    table = Table(title="throughput and latency")
    for col in ("variant", "records", "seconds", "texts/s", "tokens/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col != "variant" else "left", no_wrap=True)
    notes: list[str] = []
    plain = result["plain"]
    table.add_row(
        "a plain",
        _f(plain["records"]),
        _f(plain["seconds"], 2),
        _f(plain["texts_per_s"]),
        _f(plain["tokens_per_s"], 0),
        "–",
        "–",
    )
    tried = ", ".join(f"{k}: {v}" for k, v in plain["tried_texts_per_s"].items())
    full = ", ".join(f"{k}: {v}" for k, v in plain["full_corpus_texts_per_s"].items())
    runs = ", ".join(f"{_f(plain['records'] / r['seconds'])}" for r in plain.get("runs", []))
    notes.append(
        f"a: encode at batch size {plain['batch_size']} (texts/s on {plain['tune_subset']} texts: {tried}; "
        f"whole corpus: {full}; at the best size before and after b-d: {runs}; the faster counts)"
    )
    busy = {
        k: result[k].get("others_cpu_share")
        for k in ("plain", "naive", "pipeline", "warm", "steady")
        if k in result and result[k].get("others_cpu_share") is not None
    }
    if busy:
        notes.append(
            "share of the CPU other processes took meanwhile: "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in busy.items())
        )
    if "naive" in result:
        n = result["naive"]
        table.add_row(
            "b naive",
            _f(n["records"]),
            _f(n["seconds"], 2),
            _f(n["texts_per_s"]),
            _f(n["tokens_per_s"], 0),
            _f(n["latency_p50_ms"], 0),
            _f(n["latency_p99_ms"], 0),
        )
        notes.append(f"b: poll {NAIVE_BATCH} → encode in arrival order → insert → commit")
    c = result["pipeline"]
    table.add_row(
        "c pipeline",
        _f(c["records"]),
        _f(c["seconds"], 2),
        _f(c["texts_per_s"]),
        _f(c["tokens_per_s"], 0),
        _f(c["latency_p50_ms"], 0),
        _f(c["latency_p99_ms"], 0),
    )
    diag = c.get("diagnostics", {})
    ids_c = "match" if c["milvus_ids_match"] else "DO NOT MATCH"
    notes.append(
        f"c: cold cache; {_held(c)} in Milvus, record ids {ids_c}; "
        f"model busy {_f(100 * (diag.get('model_busy_share') or 0), 0)}% of the span, padded/real tokens "
        f"{_f(diag.get('padding_overhead'), 2)}, {_f(diag.get('mean_texts_per_forward_pass'))} texts per "
        f"forward pass, Milvus writes {_f(100 * (diag.get('milvus_write_share') or 0), 0)}%; "
        f"start-up {_f(c.get('startup_s'), 1)} s (not timed)"
    )
    d = result["warm"]
    table.add_row(
        "d warm",
        _f(d["records"]),
        _f(d["seconds"], 2),
        _f(d["texts_per_s"]),
        _f(d["tokens_per_s"], 0),
        _f(d["latency_p50_ms"], 0),
        _f(d["latency_p99_ms"], 0),
    )
    notes.append(
        f"d: {d['repeated_records']} records repeat texts of c, {d['new_records']} new; "
        f"{d['cache_hits']} cache hits; {_held(d)} in Milvus, record ids "
        f"{'match' if d['milvus_ids_match'] else 'DO NOT MATCH'}"
    )
    if "steady" in result:
        e = result["steady"]
        table.add_row(
            "e steady",
            _f(e["records"]),
            _f(e["seconds"], 2),
            "–",
            "–",
            _f(e["latency_p50_ms"], 0),
            _f(e["latency_p99_ms"], 0),
        )
        notes.append(
            f"e: {_f(e['offered_per_s'])} records/s offered, {e['written']} written; p99 "
            f"{'within' if e['within_bound'] else 'OVER'} max_wait_ms + 500 = {e['latency_bound_ms']} ms"
        )
        notes.extend(memory_notes(e.get("memory", {})))
    if "ceiling" in result:
        f = result["ceiling"]
        f_over_a = result["ratios"].get("ceiling_vs_plain")
        table.add_row(
            "f ceiling",
            _f(f["records"]),
            _f(f["seconds"], 2),
            _f(f["texts_per_s"]),
            _f(f["tokens_per_s"], 0),
            _f(f["latency_p50_ms"], 0),
            _f(f["latency_p99_ms"], 0),
        )
        diag = f.get("diagnostics", {})
        busiest = f.get("busiest_stage") or {}
        notes.append(
            f"f: null forward pass, {f['written']} written; busiest stage {busiest.get('stage', '–')} "
            f"({_f(100 * (busiest.get('share') or 0), 0)}% of the span; batcher "
            f"{_f(100 * (diag.get('batcher_share') or 0), 0)}%, Milvus writes "
            f"{_f(100 * (diag.get('milvus_write_share') or 0), 0)}%, Redis "
            f"{_f(100 * (diag.get('redis_share') or 0), 0)}%); this process's CPU "
            f"{_f(f.get('cpu_us_per_record'), 0)} µs per record from the first record to the last write "
            f"({_f(f.get('cpu_us_per_record_with_startup'), 0)} with start-up and shutdown); f / a "
            f"{_f(f_over_a, 2)}{_ceiling_verdict(f_over_a)}"
        )
        stages = f.get("stage_cpu_us_per_record") or {}
        if stages:
            notes.append("f: µs of CPU per record by stage: " + ", ".join(f"{k} {_f(v, 0)}" for k, v in stages.items()))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
    ratios = Table(title="ratios (same run, same device)")
    for col in ("ratio", "measured", "target", "met"):
        ratios.add_column(col, justify="right" if col != "ratio" else "left", no_wrap=True)
    names = {"pipeline_vs_plain": "c / a", "pipeline_vs_naive": "c / b", "warm_vs_cold": "d / c"}
    for key, label in names.items():
        value = result["ratios"].get(key)
        target = TARGETS[key]
        ratios.add_row(label, _f(value, 2), f"≥ {target}", "–" if value is None else _f(value >= target))
    console.print(ratios)


def _held(v: dict[str, Any]) -> str:
    """Rows in Milvus, and the records they are when chunking made more rows than records."""
    rows, records = v["milvus_rows"], v.get("milvus_records", v["milvus_rows"])
    return f"{rows} rows" if rows == records else f"{rows} rows (chunks) of {records} records"


def render_sink_rate(sink: dict[str, Any], console: Any) -> None:
    console.print(
        f"sink: {sink.get('sink')}; alone it took [bold]{_f(sink['rows_per_s'], 0)}[/bold] rows/s "
        f"({sink['rows']} rows in upserts of {sink['chunk']}, {_f(sink['client_cpu_us_per_row'])} µs of "
        f"this process's CPU per row)",
        highlight=False,
    )


def render_workers(results: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    table = Table(title="worker processes (ingestor run --workers-per-device K), all writing to one sink")
    for col in ("K", "exit", "records", "rows", "write span s", "texts/s", "wall s", "record ids"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            str(r["workers"]),
            str(r["rc"]),
            _f(r["records"]),
            _f(r["milvus_rows"]),
            _f(r["write_span_s"], 2),
            _f(r["texts_per_s"]),
            _f(r["wall_s"], 2),
            "match" if r["ids_match"] else "DO NOT MATCH",
        )
    console.print(table)


GAUGE_NAMES = {
    "rss": "resident memory",
    "heap": "malloc heap in use",
    "python": "Python objects (tracemalloc)",
    "children": "child processes' resident memory (Milvus Lite)",
}


def _ceiling_verdict(f_over_a: float | None) -> str:
    if f_over_a is None:
        return ""
    if f_over_a < 1:
        return ": below 1, the device would wait on the pipeline"
    return ": the pipeline around the model can carry more than the model"


def memory_notes(memory: dict[str, Any]) -> list[str]:
    notes = []
    for gauge, label in GAUGE_NAMES.items():
        m = memory.get(gauge, {})
        if "slope_mib_per_min" in m:
            notes.append(
                f"e: {label} {m['after_warmup_mib']} MiB after warm-up, {m['end_mib']} at the end, "
                f"{m['min_after_warmup_mib']}–{m['max_after_warmup_mib']} in between (max {m['max_mib']}), "
                f"slope {m['slope_mib_per_min']} MiB/min over {m['seconds']} s"
            )
    for g in memory.get("python_growth", [])[:5]:
        notes.append(f"e: grew most after warm-up: {g['where']} +{g['grew_kib']} KiB ({g['blocks_grew']:+} blocks)")
    return notes


def write_json(result: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public(result), indent=2, sort_keys=True) + "\n", encoding="utf-8")
