"""psp-bench --plot: one PNG to read at a glance. Left, the latency distribution of every runner (box plot
over all samples, smallest batch); right, throughput against batch size (bars with the speed-up when only
one batch was measured). One colour per runner in both panels."""
from __future__ import annotations

from pathlib import Path

from benchmarks.records import BenchReport
from pspcore.errors import InputError
from pspcore.files import atomic_output


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib (pip install 'pspnet-deploy[bench]')") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _horizontal() -> dict:
    import matplotlib

    # `orientation` arrived in Matplotlib 3.10 and `vert` is deprecated since; we support 3.7 onwards.
    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _latency_panel(ax, report: BenchReport, colours: dict[str, str]) -> None:
    batch = min(report.batches())
    # slowest at the bottom, fastest on top, as in the throughput panel
    results = sorted((r for r in report.results if r.batch == batch), key=lambda r: -r.latency.median)
    box = ax.boxplot([r.latency_samples_ms for r in results], **_horizontal(), patch_artist=True, widths=0.6,
                     showfliers=True, flierprops={"markersize": 3, "alpha": 0.5},
                     medianprops={"color": "black"})
    for patch, r in zip(box["boxes"], results):
        patch.set_facecolor(colours[r.label])
        patch.set_alpha(0.75)
    ax.set_yticks(range(1, len(results) + 1), [r.label + (" (baseline)" if r.baseline else "")
                                               for r in results])
    for i, r in enumerate(results, start=1):
        ax.annotate(f" {r.latency.median:.1f} ms", (r.latency.max, i), va="center", fontsize=8)
    ax.set_xlabel(f"latency per batch of {batch} (ms), lower is better")
    ax.set_xlim(0, max(r.latency.max for r in results) * 1.3)
    ax.set_title(f"latency distribution (batch {batch}, {sum(r.latency.count for r in results)} samples)")
    ax.grid(axis="x", alpha=0.3)


def _throughput_panel(ax, report: BenchReport, colours: dict[str, str]) -> None:
    batches = report.batches()
    if len(batches) == 1:
        results = sorted(report.results, key=lambda r: r.images_per_s)
        bars = ax.barh([r.label for r in results], [r.images_per_s for r in results],
                       color=[colours[r.label] for r in results], alpha=0.85)
        for bar, r in zip(bars, results):
            gain = f"  {r.speedup:.2f}x" if r.speedup is not None else ""
            ax.annotate(f" {r.images_per_s:.2f}{gain}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        va="center", fontsize=8)
        ax.set_xlim(0, max(r.images_per_s for r in results) * 1.35)
        ax.set_xlabel("images/s, higher is better (speed-up over PyTorch eager FP32)")
        ax.set_title(f"throughput at batch {batches[0]}")
        ax.grid(axis="x", alpha=0.3)
        return
    for label, colour in colours.items():
        points = sorted((r.batch, r.images_per_s) for r in report.results if r.label == label)
        ax.plot([b for b, _ in points], [v for _, v in points], "o-", color=colour, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s, higher is better")
    ax.set_ylim(bottom=0)
    ax.set_title("throughput vs batch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def write_plot(report: BenchReport, path: str | Path, title: str = "") -> Path:
    """Render the two panels to a PNG at `path` (atomically). Raises InputError when nothing was measured."""
    if not report.results:
        raise InputError("nothing was measured, so there is nothing to plot")
    plt = _pyplot()
    labels = list(dict.fromkeys(r.label for r in report.results))
    palette = plt.get_cmap("tab10").colors
    colours = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    height = 1.6 + 0.45 * len(labels)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(3.6, height)), layout="constrained")
    _latency_panel(left, report, colours)
    _throughput_panel(right, report, colours)
    m = report.machine
    fig.suptitle(title or f"psp-bench: {m['cpu']}, {m['cores']} cores, threads {m['threads'] or 'default'}"
                 f" — {m['date']}", fontsize=10)
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
