"""One look for every figure: matplotlib on the Agg backend (files only, no display), a
colour per scheduler that stays the same across figures, and a common save helper."""

from __future__ import annotations

from pathlib import Path

SCHEDULER_COLOURS = {
    "wait": "#1b9e77",
    "nested-wait": "#66a61e",
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


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
