"""The PNG of a `tilewarp bench` run: ms per step for each row, one panel per T, with the
byte floor drawn across, so "how far from the memory-bandwidth bound" is read at a glance.
matplotlib (the `bench` extra) with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path


def write_png(result: dict, path: str | Path) -> None:
    """Bar chart of median ms/step (p10..p90 whiskers) per row; failed rows are labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = sorted({r["tokens"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(tokens), figsize=(5.5 * len(tokens), 4.5), squeeze=False)
    for ax, t in zip(axes[0], tokens):
        rows = [r for r in result["rows"] if r["tokens"] == t]
        labels = [r["label"].replace(" + ", "\n+ ") for r in rows]
        heights = [r.get("ms_median", 0.0) for r in rows]
        lo = [r["ms_median"] - r["ms_p10"] if r["status"] == "ok" else 0.0 for r in rows]
        hi = [r["ms_p90"] - r["ms_median"] if r["status"] == "ok" else 0.0 for r in rows]
        colors = ["tab:green" if r["row"] == "megakernel" else "tab:blue" for r in rows]
        x = range(len(rows))
        ax.bar(x, heights, yerr=[lo, hi], color=colors, capsize=4)
        floor = rows[0]["floor_ms"]
        ax.axhline(floor, color="black", linestyle="--", linewidth=1)
        ax.text(-0.45, floor, f"floor {floor:.3f} ms", va="bottom", ha="left", fontsize=8)
        whisker = [h + e for h, e in zip(heights, hi)]
        top = max(whisker + [floor])
        for i, r in enumerate(rows):
            text = f"{r['pct_of_floor']:.0f}% of floor" if r["status"] == "ok" else r["status"]
            ax.text(i, whisker[i] + 0.02 * top, text, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("ms per step (median, p10-p90)")
        ax.set_title(f"T = {t} ({'decode' if t == 1 else 'verify'})")
        ax.set_ylim(0, top * 1.15)
    bw = result["bandwidth"]["GB_per_s"]
    fig.suptitle(f"{result['preset']} on {result['device']}, context {result['plan']['context']}, "
                 f"bandwidth {bw:.0f} GB/s (measured)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
