"""psp-bench's reports from one BenchReport: a terminal table, JSON (every number and raw sample) and
Markdown. All three share the same rows, so they never disagree."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from benchmarks.machine import best_limits, busy_warning
from benchmarks.records import BenchReport
from pspcore.files import atomic_output

SCHEMA = "psp-bench/1"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _transfers(report: BenchReport) -> bool:
    return any(r.h2d is not None for r in report.results)


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per (runner, batch): trtexec's latency statistics of one batch in ms, throughput,
    speed-up over the baseline, peak host memory; H2D/compute/D2H means where a backend measures them."""
    headers = ["backend", "batch", "median ms", "mean", "min", "p90", "p95", "p99", "max", "img/s",
               "speed-up", "peak MiB"]
    split = _transfers(report)
    if split:
        headers[9:9] = ["H2D", "compute", "D2H"]
    rows = []
    for r in sorted(report.results, key=lambda r: (r.batch, -r.images_per_s)):
        lat = r.latency
        row = [r.label + (" *" if r.baseline else ""), str(r.batch), _ms(lat.median), _ms(lat.mean),
               _ms(lat.min), _ms(lat.p90), _ms(lat.p95), _ms(lat.p99), _ms(lat.max), f"{r.images_per_s:.2f}",
               f"{r.speedup:.2f}x" if r.speedup is not None else "-",
               f"{r.memory['peak_mb']:.0f}" if r.memory.get("peak_mb") is not None else "-"]
        if split:
            row[9:9] = [_ms(s.mean) if s else "-" for s in (r.h2d, r.compute, r.d2h)]
        if report.limits:
            row += [f"{r.tops:.3f}" if r.tops is not None else "-",
                    f"{100 * r.limit_fraction:.0f}% {r.limit_kind}" if r.limit_fraction is not None else "-"]
        rows.append(row)
    if report.limits:
        headers += ["TOP/s", "of limit"]
    return headers, rows


def limit_line(report: BenchReport) -> str | None:
    """The machine's limit the 'of limit' column divides by: the best INT8 and FP32 GEMM rate measured."""
    if not report.limits:
        return None
    best = best_limits(report.limits)
    parts = [f"{kind} {rate.tops:.3f} TOP/s ({rate.runtime} {rate.op})" for kind, rate in sorted(best.items())]
    gop = next((r.gop for r in report.results if r.gop), None)
    cost = f"; the model is {gop:.1f} GOP (Conv + MatMul) per image" if gop else ""
    return (f"limit: the machine's best 2048^3 GEMM rates, {' and '.join(parts)}{cost}; "
            "TOP/s = model GOP x batch / median latency")


def headline(report: BenchReport) -> list[str]:
    """One line per batch naming the fastest runner and its speed-up; the unavailable ones after."""
    lines = []
    for b in report.batches():
        best = report.fastest(b)
        gain = f", {best.speedup:.2f}x PyTorch eager FP32" if best.speedup is not None else \
            " (no PyTorch FP32 baseline in this run)"
        lines.append(f"fastest at batch {b}: {best.label}, {best.latency.median:.2f} ms median, "
                     f"{best.images_per_s:.2f} images/s{gain}")
    lines += [f"unavailable: {u.line()}" for u in report.unavailable]
    warning = busy_warning(report.machine)
    return lines + ([f"warning: {warning}"] if warning else [])


def setup_line(report: BenchReport) -> str:
    c, m = report.config, report.machine
    size = f"{report.results[0].size[0]}x{report.results[0].size[1]}" if report.results else "-"
    return (f"{size} input, warm-up {c.warmup_ms:.0f} ms, >= {c.duration_s:g} s and >= {c.min_iters} "
            f"iterations each, interleaved in {c.slice_ms:.0f} ms slices; {m['cpu']}, {m['cores']} cores, "
            f"threads {m['threads'] or 'default'}, load average {m.get('load_average')}; {m['date']}")


def text_table(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Aligned plain-text lines: the first `text_columns` left-aligned, numbers right-aligned."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows]


def markdown_table(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    return ["| " + " | ".join(cells) + " |" for cells in (headers, align, *rows)]


def format_terminal(report: BenchReport) -> str:
    lines = [setup_line(report), "", *text_table(*table_rows(report))]
    lines += ["", "* baseline (PyTorch eager FP32); latency of one batch in ms; " + report.memory_note]
    lines += [limit_line(report)] if report.limits else []
    lines += [""]
    return "\n".join(lines + headline(report))


def format_markdown(report: BenchReport) -> str:
    lines = ["# psp-bench", "", setup_line(report), "", *markdown_table(*table_rows(report))]
    lines += ["", "`*` baseline (PyTorch eager FP32). Latency of one batch in milliseconds, trtexec "
              "statistics. " + report.memory_note]
    lines += ["", limit_line(report)] if report.limits else []
    lines += [""]
    lines += [f"- {line}" for line in headline(report)]
    return "\n".join(lines) + "\n"


def to_json(report: BenchReport) -> dict:
    fastest = {str(b): report.fastest(b).label for b in report.batches()}
    return {
        "schema": SCHEMA,
        "machine": report.machine,
        "config": asdict(report.config),
        "baseline": report.baseline,
        "fastest": fastest,
        "memory_note": report.memory_note,
        "results": [r.to_dict() for r in report.results],
        "unavailable": [asdict(u) for u in report.unavailable],
        "schedule": {str(b): s for b, s in report.schedule.items()},
        "limits": [asdict(rate) for rate in report.limits],
    }


def write_text(text: str, path: str | Path) -> Path:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(report: BenchReport, path: str | Path) -> Path:
    return write_text(json.dumps(to_json(report), indent=2) + "\n", path)


def write_markdown(report: BenchReport, path: str | Path) -> Path:
    return write_text(format_markdown(report), path)
