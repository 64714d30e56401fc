"""The run report's charts: matplotlib (Agg) figures rendered to inline SVG strings.

Every chart is self-contained (text drawn as paths, so it looks the same with no fonts and no network,
e.g. inside the Kubeflow UI's HTML viewer), deterministic (fixed hash salt and no date in the metadata,
so one input gives one SVG), and names each series in a legend placed outside the axes, below them,
where it can cover neither points nor labels. Intervals are `value ± 1.96 * stderr` where the caller
passes a standard error, and absent otherwise.

A series is a list of points `(x, y, stderr)`; `stderr` may be None (no interval at that point).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

Point = tuple[float, float, float | None]
Z = 1.96  # two-sided 95% normal interval
# colour-blind-safe (Okabe-Ito): branches keep their colour in every chart
BRANCH_COLORS = {"grpo": "#0072B2", "masa": "#D55E00", "base": "#009E73"}
OTHER_COLORS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
LABELS = {"grpo": "GRPO", "masa": "MASA", "base": "base"}
SIZE = (5.6, 3.6)  # inches: two charts side by side at 1280 px


def _mpl():
    """matplotlib, pyplot and ticker, loaded on the first chart (a second of imports that code which
    only reads the report module, e.g. for `report_prefix`, does not pay)."""
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit: the report step runs in a headless pod
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    return matplotlib, plt, ticker


def color(name: str, i: int = 0) -> str:
    return BRANCH_COLORS.get(name, OTHER_COLORS[i % len(OTHER_COLORS)])


def label(name: str) -> str:
    return LABELS.get(name, name)


def _figure(title: str, xlabel: str, ylabel: str):
    fig, ax = _mpl()[1].subplots(figsize=SIZE, layout="constrained")
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def _svg(fig, ax, name: str, ncol: int = 2) -> str:
    """The figure as an `<svg>` element with its legend below the axes; closes the figure."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)), frameon=False,
                   fontsize=9)
    matplotlib, plt, _ = _mpl()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    svg = text[text.index("<svg"):]
    return svg.replace("<svg ", f'<svg class="chart" data-chart="{name}" role="img" ', 1)


def _plot_series(ax, name: str, points: Sequence[Point], *, label_text: str, c: str, marker: str = "o",
                 linestyle: str = "-") -> None:
    pts = [p for p in points if p[1] is not None]
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax.plot(xs, ys, marker=marker, linestyle=linestyle, color=c, label=label_text, markersize=5, gid=f"series-{name}")
    err = [(x, y, s) for x, y, s in pts if s is not None]
    if err:
        ax.errorbar([e[0] for e in err], [e[1] for e in err], yerr=[Z * e[2] for e in err], fmt="none",
                    ecolor=c, elinewidth=1, capsize=3, alpha=0.8)


def _unit_interval(ax) -> None:
    """Rates live in [0, 1]: keep autoscale's margins but never show impossible values."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, -0.02), min(hi, 1.02))


def _no_data(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="#777", fontsize=9, wrap=True)


def accuracy_vs_cost(curves: Mapping[str, Sequence[Point]], *, target: float | None,
                     crossings: Mapping[str, float | None], xlabel: str, unit: str, name: str) -> str:
    """Held-out accuracy of each branch against the cost spent before the measured policy (cumulative
    rollout tokens or wall seconds), GRPO's final accuracy as a horizontal line, and the first point at
    which each branch reaches it (the speedup is the ratio of those two x values)."""
    fig, ax = _figure(f"Held-out accuracy vs {xlabel}", xlabel, "held-out accuracy (±1.96 s.e.)")
    for i, (b, pts) in enumerate(curves.items()):
        _plot_series(ax, b, pts, label_text=label(b), c=color(b, i))
    if target is not None:
        ax.axhline(target, color="#555", linestyle="--", linewidth=1, label=f"GRPO final accuracy {target:.3f}",
                   gid="series-target")
    for i, (b, x) in enumerate(crossings.items()):
        if x is not None and target is not None:
            ax.plot([x], [target], marker="D", markersize=9, markerfacecolor="none", markeredgewidth=2,
                    color=color(b, i), linestyle="none", label=f"{label(b)} reaches it at {_num(x)} {unit}",
                    gid=f"series-{b}-reaches")
    if not any(p[1] is not None for pts in curves.values() for p in pts):
        _no_data(ax, "no held-out accuracy was measured")
    _unit_interval(ax)
    ticker = _mpl()[2]
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _num(v)))
    ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
    return _svg(fig, ax, name)


def per_round(series: Mapping[str, Sequence[Point]], *, title: str, ylabel: str, name: str, suffix: str = "",
              finals: Mapping[str, Point] | None = None, final_label: str = "final benchmark") -> str:
    """One line per series (labelled with `suffix`) over training rounds completed; `finals` adds each
    checkpoint's benchmark figure as a hollow square (with its interval) at the x it carries."""
    fig, ax = _figure(title, "training rounds completed", ylabel)
    for i, (b, pts) in enumerate(series.items()):
        _plot_series(ax, b, pts, label_text=label(b) + suffix, c=color(b, i))
    for i, (ck, (x, y, s)) in enumerate((finals or {}).items()):
        if y is None:
            continue
        c = color(ck, i)
        ax.plot([x], [y], marker="s", markersize=7, markerfacecolor="none", markeredgewidth=1.5, color=c,
                linestyle="none", label=f"{label(ck)}: {final_label}", gid=f"series-{ck}-final")
        if s is not None:
            ax.errorbar([x], [y], yerr=[Z * s], fmt="none", ecolor=c, elinewidth=1, capsize=3)
    if not ax.get_legend_handles_labels()[0]:
        _no_data(ax, "not measured in this run")
    _unit_interval(ax)
    ax.xaxis.set_major_locator(_mpl()[2].MaxNLocator(integer=True))
    return _svg(fig, ax, name)


def calibration(points: Mapping[str, Sequence[tuple[float, float]]], *, name: str) -> str:
    """Predicted against observed pass rate, one colour and marker per checkpoint, with the diagonal of
    perfect calibration."""
    fig, ax = _figure("Meta-awareness: predicted vs observed pass rate", "observed pass rate", "predicted pass rate")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="perfect calibration", gid="series-diagonal")
    for i, (ck, pts) in enumerate(points.items()):
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, alpha=0.75, color=color(ck, i),
                       marker="osD^v"[i % 5], label=label(ck), gid=f"series-{ck}", edgecolors="none")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal", adjustable="box")
    return _svg(fig, ax, name, ncol=4)


def bars(values: Mapping[str, float], *, title: str, ylabel: str, name: str) -> str:
    """One bar per entry, its value printed above it; head-room keeps the labels below the title."""
    fig, ax = _figure(title, "", ylabel)
    for i, (k, v) in enumerate(values.items()):
        cont = ax.bar([k], [v], color=OTHER_COLORS[(i + 1) % len(OTHER_COLORS)], label=k, gid=f"series-{k}")
        ax.bar_label(cont, labels=[_num(v)], padding=3, fontsize=9)
    top = max(values.values(), default=0) or 1
    ax.set_ylim(0, top * 1.18)
    ax.yaxis.set_major_formatter(_mpl()[2].FuncFormatter(lambda v, _: _num(v)))
    return _svg(fig, ax, name)


def _num(v: float) -> str:
    """Short numbers for ticks and labels: 950, 12.5k, 1.2M; small values to 3 significant digits."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"
