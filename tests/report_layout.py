"""Layout of report.html as headless Chromium lays it out at 1280 px: elements that overflow the
viewport, text boxes that overlap, and each chart's legend entries. A script injected into a copy of
the page measures bounding boxes after load and writes them as JSON into the DOM, which
`--dump-dom` prints (no driver library needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

WIDTH = 1280

_JS = r"""
<script>
window.addEventListener('load', () => {
  const W = window.innerWidth, out = {width: W, overflow: [], overlaps: [], charts: []};
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width && (r.right > W + 0.5 || r.left < -0.5)) out.overflow.push(el.tagName + ' ' + (el.id || el.className.baseVal || el.className || '') + ' right=' + r.right.toFixed(1));
  }
  if (document.documentElement.scrollWidth > W) out.overflow.push('page scrollWidth=' + document.documentElement.scrollWidth);
  const cut = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const boxes = [];  // [label, rect, group]: HTML text lines, and SVG text groups per chart
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim() || n.parentElement.closest('svg,script,style')) continue;
    const range = document.createRange(); range.selectNodeContents(n);
    for (const r of range.getClientRects()) if (r.width > 0) boxes.push([n.textContent.trim().slice(0, 40), r, 'html']);
  }
  document.querySelectorAll('svg.chart').forEach((svg, i) => {
    const name = svg.dataset.chart, comment = g => [...g.childNodes].filter(c => c.nodeType === 8).map(c => c.textContent.trim()).join('');
    svg.querySelectorAll('g[id^="text_"]').forEach(g => {
      const r = g.getBoundingClientRect();
      if (r.width > 0) boxes.push([name + ': ' + comment(g), r, name]);
    });
    const legend = svg.querySelector('g[id^="legend_"]'), axes = svg.querySelector('g[id^="axes_"] > g[id^="patch_"]');
    const lr = legend && legend.getBoundingClientRect(), ar = axes && axes.getBoundingClientRect();
    out.charts.push({name, legend: legend ? [...legend.querySelectorAll('g[id^="text_"]')].map(comment) : null,
                     series: [...new Set([...svg.querySelectorAll('g[id^="series-"]')].map(g => g.id))],
                     legend_covers_axes: !!(lr && ar && cut(lr, ar))});
  });
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++)
      if (cut(boxes[i][1], boxes[j][1])) out.overlaps.push(boxes[i][0] + ' | ' + boxes[j][0]);
  const pre = document.createElement('pre'); pre.id = 'layout-result';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},1600", *args],
                          check=True, capture_output=True, text=True, timeout=120)


def layout(html: Path, tmp: Path) -> dict:
    """{width, overflow: [...], overlaps: [...], charts: [{name, legend: [labels] | None, series: [ids],
    legend_covers_axes}]}; a series is a labelled artist (`gid="series-..."` in masa.runner.charts)."""
    page = tmp / "layout.html"
    page.write_text(html.read_text().replace("</body>", _JS + "</body>"))
    dom = _run(chromium(), tmp, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()).stdout
    m = re.search(r'<pre id="layout-result">(.*?)</pre>', dom, re.S)
    assert m, "the layout script did not run"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def screenshot(html: Path, tmp: Path, shot: Path, height: int = 1600) -> None:
    _run(chromium(), tmp, f"--window-size={WIDTH},{height}", f"--screenshot={shot}", html.as_uri())
