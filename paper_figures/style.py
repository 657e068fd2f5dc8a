"""One look for every figure: matplotlib on the Agg backend (files only, no display), a
colour per scheduler that stays the same across figures (a variant of a scheduler, e.g.
`vllm-v0-paper`, keeps its scheduler's colour with another line style), legends placed outside
the axes so they never cover data, and a common save helper."""

from __future__ import annotations

from pathlib import Path

SCHEDULER_COLOURS = {
    "wait": "#1b9e77",
    "nested-wait": "#66a61e",
    "wait-capped": "#0b5d45",  # the capped rule: a darker shade of its policy's colour
    "nested-wait-capped": "#3b6b0f",
    "wait-adaptive": "#17becf",  # the capped rule re-solved online
    "nested-wait-adaptive": "#0e7c86",
    "fcfs": "#7570b3",
    "vllm-v0": "#d95f02",
    "vllm-v1": "#e7298a",
    "sarathi": "#e6ab02",
    "orca": "#a6761d",
    "mc-sf": "#666666",
    "rad": "#1f78b4",
    "slai": "#b15928",
}
FLUID_COLOUR = "#000000"


def pyplot():
    """matplotlib.pyplot on the Agg backend with the project's rc settings (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def colour(scheduler: str) -> str:
    return SCHEDULER_COLOURS.get(scheduler, "#999999")


VARIANT_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def line_style(label: str, scheduler: str | None = None, *, variants: list[str] | None = None) -> dict:
    """Colour from the scheduler, line style and marker from which variant of it `label` is.

    `variants`: every label drawn in the figure, so that the n-th label of one scheduler gets the
    n-th style whatever else is drawn.
    """
    base = scheduler or next((s for s in sorted(SCHEDULER_COLOURS, key=len, reverse=True) if label.startswith(s)), label)
    every = variants or [label]
    same = [v for v in every if v == base or v.startswith(base + "-")]
    k = same.index(label) if label in same else 0
    # the marker follows the label's place among all labels, so lines that coincide stay tellable apart
    m = every.index(label) if label in every else 0
    return {"color": colour(base), "ls": VARIANT_STYLES[k % len(VARIANT_STYLES)], "marker": MARKERS[m % len(MARKERS)]}


def plain_log_axis(ax, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.5, 1, 2) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(fmt)
    target.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def legend_outside(ax_or_fig, *, ncol: int = 1, title: str | None = None, handles=None, labels=None) -> None:
    """A legend to the right of the axes (or of the whole figure), off the data."""
    if handles is None:
        handles, labels = ax_or_fig.get_legend_handles_labels() if hasattr(ax_or_fig, "get_legend_handles_labels") else (None, None)
    if hasattr(ax_or_fig, "legend") and hasattr(ax_or_fig, "transAxes"):
        ax_or_fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, ncol=ncol,
                         title=title, title_fontsize=7, frameon=False, borderaxespad=0.0)
    else:
        ax_or_fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, ncol=ncol,
                         title=title, title_fontsize=7, frameon=False)


def pad_top(ax, fraction: float = 0.12, *, log: bool = False) -> None:
    """Room above the highest value, so a reference line at the top never sits on the frame."""
    lo, hi = ax.get_ylim()
    if log:
        ax.set_ylim(lo, hi * (1 + 4 * fraction))
    else:
        ax.set_ylim(lo, hi + (hi - lo) * fraction)


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def panel_row(plt, count: int, *, width: float = 3.6, height: float = 3.2, legend_width: float = 1.6):
    """A figure with `count` panels side by side (and room on the right for an outside legend)."""
    fig, axes = plt.subplots(1, count, figsize=(width * count + legend_width, height), squeeze=False)
    return fig, list(axes[0])
