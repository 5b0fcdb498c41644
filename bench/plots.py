"""PNG plots for the benchmark reports (matplotlib, Agg backend: no display needed).

Called by the scenario modules; each returns the PNG bytes that `sloguard bench` writes under bench/results/.
"""

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    highlight: str = "sloguard",
    log_x: bool = False,
) -> bytes:
    """One line per series over a shared x axis; `highlight` drawn thicker."""
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    if log_x:
        axes.set_xscale("log")
    for name, values in series.items():
        width = 2.8 if name == highlight else 1.3
        style = "--" if name.startswith("oracle_") else "-"
        axes.plot(list(x), list(values), style, marker="o", markersize=3, linewidth=width, label=name)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return _png(figure)


def bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
) -> bytes:
    """Grouped bars: one group per entry of `groups`, one bar per series."""
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    names = list(series)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        positions = [g + i * width for g in range(len(groups))]
        axes.bar(positions, list(series[name]), width=width, label=name)
    axes.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], list(groups))
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize=7)
    return _png(figure)
