"""Minimal inline-SVG charts for the self-contained run report (no network, no plotting library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

W, H, PAD = 560, 300, 48
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _tick(v: float) -> str:
    """Short tick labels: 170 not 1.7e+02, 12,500 with separators, 0.25 as is."""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, x0: float, x1: float, y0: float, y1: float, body: str,
           legend: Sequence[str], *, xticks: bool = True, xint: bool = False) -> str:
    sx, sy = _scale(x0, x1, PAD, W - 16), _scale(y0, y1, H - PAD, 24)
    ticks = []
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        ticks.append(f'<line x1="{PAD}" x2="{W - 16}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>'
                     f'<text x="{PAD - 6}" y="{sy(yv) + 4:.1f}" font-size="11" text-anchor="end">{_tick(yv)}</text>')
    # whole-number axes (rounds) get whole-number ticks
    whole = xint and float(x0).is_integer() and float(x1).is_integer() and 0 < x1 - x0 <= 12
    xs = [x0 + k for k in range(int(x1 - x0) + 1)] if whole else [x0 + (x1 - x0) * i / 4 for i in range(5)]
    for xv in xs if xticks else []:
        ticks.append(f'<text x="{sx(xv):.1f}" y="{H - PAD + 16}" font-size="11" text-anchor="middle">{_tick(xv)}</text>')
    leg = "".join(f'<rect x="{W - 150}" y="{28 + 16 * i}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
                  f'<text x="{W - 135}" y="{37 + 16 * i}" font-size="11">{escape(n)}</text>'
                  for i, n in enumerate(legend))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">'
            f'<rect width="{W}" height="{H}" fill="white"/>'
            f'<text x="{W / 2}" y="16" font-size="13" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
            + "".join(ticks) +
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 16}" y2="{H - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
            f'<text x="{W / 2}" y="{H - 8}" font-size="12" text-anchor="middle">{escape(xlabel)}</text>'
            f'<text x="14" y="{H / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {H / 2})">{escape(ylabel)}</text>{body}{leg}</svg>')


def line_chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str,
               y_range: tuple[float, float] | None = None) -> str:
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f"<p>{escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = y_range or (min(p[1] for p in pts), max(p[1] for p in pts))
    sx, sy = _scale(x0, x1, PAD, W - 16), _scale(y0, y1, H - PAD, 24)
    body = ""
    for i, (name, s) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        body += f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{c}" stroke-width="2" points="{path}"/>'
        body += "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>' for x, y in s)
    xint = all(float(p[0]).is_integer() for p in pts)
    return _frame(title, xlabel, ylabel, x0, x1, y0, y1, body, list(series), xint=xint)


def scatter(title: str, series: Mapping[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str) -> str:
    """Predicted against observed, in [0, 1]², with the diagonal of perfect calibration."""
    sx, sy = _scale(0, 1, PAD, W - 16), _scale(0, 1, H - PAD, 24)
    body = f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#999" stroke-dasharray="4"/>'
    for i, (name, pts) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        body += "".join(f'<circle class="point" data-name="{escape(name)}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" '
                        f'fill="{c}" fill-opacity="0.6"/>' for x, y in pts)
    return _frame(title, xlabel, ylabel, 0, 1, 0, 1, body, list(series))


def bar_chart(title: str, values: Mapping[str, float], *, ylabel: str) -> str:
    if not values:
        return f"<p>{escape(title)}: no data</p>"
    top = max(max(values.values()), 1e-9)
    sy = _scale(0, top, H - PAD, 24)
    width = (W - PAD - 16) / len(values)
    body = ""
    for i, (name, v) in enumerate(values.items()):
        x = PAD + i * width + width * 0.2
        body += (f'<rect class="bar" x="{x:.1f}" y="{sy(v):.1f}" width="{width * 0.6:.1f}" '
                 f'height="{sy(0) - sy(v):.1f}" fill="{COLORS[i % len(COLORS)]}"/>'
                 f'<text x="{x + width * 0.3:.1f}" y="{H - PAD + 16}" font-size="11" text-anchor="middle">{escape(name)}</text>'
                 f'<text x="{x + width * 0.3:.1f}" y="{sy(v) - 4:.1f}" font-size="11" text-anchor="middle">{v:,.0f}</text>')
    return _frame(title, "", ylabel, 0, 1, 0, top, body, [], xticks=False)
