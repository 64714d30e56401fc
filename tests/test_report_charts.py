"""The report's charts and sections, from hand-built inputs: the data in each SVG (point positions,
interval lengths, legend labels), intervals and noise verdicts, the promotion section, timing per step
kind, and the page's layout in headless Chromium at 1280 px (no overflow, no overlapping text, a
legend naming every series, outside the axes)."""

import re
from pathlib import Path

import pytest
from report_fixture import PROMOTION, report_inputs
from report_layout import chromium, layout

from masa.runner import charts
from masa.steps.report import timing
from masa.steps.report_render import differences, render_html, render_promotion


def _group(svg: str, gid: str) -> str:
    """The text of `<g id="gid">` up to its closing tag (matplotlib nests groups one level here)."""
    start = svg.index(f'<g id="{gid}">')
    depth = 0
    for m in re.finditer(r"<g\b[^>]*?(/?)>|</g>", svg[start:]):
        depth += 0 if m.group(1) else (1 if m.group(0) != "</g>" else -1)
        if depth == 0:
            return svg[start:start + m.end()]
    raise AssertionError(gid)


def _markers(svg: str, gid: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r'<use [^>]*x="([-\d.]+)" y="([-\d.]+)"', _group(svg, gid))]


def _legend(svg: str) -> list[str]:
    return re.findall(r"<!-- (.*?) -->", _group(svg, "legend_1"))


def test_accuracy_chart_places_points_target_and_crossings_by_their_data():
    # GRPO at tokens 0, 1000, 2000 with accuracy 0.40, 0.45, 0.50; MASA 0, 800 with 0.40, 0.50; target 0.50
    svg = charts.accuracy_vs_cost({"grpo": [(0, 0.40, 0.02), (1000, 0.45, None), (2000, 0.50, None)],
                                   "masa": [(0, 0.40, None), (800, 0.50, None)]},
                                  target=0.50, crossings={"grpo": 2000, "masa": 800}, xlabel="tokens", unit="tokens",
                                  name="acc")
    g, m = _markers(svg, "series-grpo"), _markers(svg, "series-masa")
    # screen x is affine in tokens: MASA's 800 lies 0.4 of the way from 0 to GRPO's 2000
    assert (m[1][0] - g[0][0]) / (g[2][0] - g[0][0]) == pytest.approx(0.4, abs=1e-4)
    # screen y is affine in accuracy: 0.45 halfway between 0.40 and 0.50 (y grows downwards)
    assert (g[1][1] - g[0][1]) / (g[2][1] - g[0][1]) == pytest.approx(0.5, abs=1e-4) and g[2][1] < g[0][1]
    # each crossing marker sits on its branch's point at the target accuracy
    assert _markers(svg, "series-masa-reaches") == [pytest.approx(m[1])]
    assert _markers(svg, "series-grpo-reaches") == [pytest.approx(g[2])]
    target_y = float(re.search(r'd="M [-\d.]+ ([-\d.]+)', _group(svg, "series-target")).group(1))
    assert target_y == pytest.approx(g[2][1])
    # one interval, on GRPO's first point: its length is 2 * 1.96 * 0.02 = 0.0784 accuracy, i.e.
    # 0.784 of the 0.10 between GRPO's first and last points
    (seg,) = re.findall(r'd="M ([-\d.]+) ([-\d.]+) \s*L ([-\d.]+) ([-\d.]+)', _group(svg, "LineCollection_1"))
    assert float(seg[0]) == pytest.approx(g[0][0])
    assert abs(float(seg[1]) - float(seg[3])) / (g[0][1] - g[2][1]) == pytest.approx(0.784, abs=1e-3)
    assert "LineCollection_2" not in svg  # MASA carries no standard error: no interval
    assert _legend(svg) == ["GRPO", "MASA", "GRPO final accuracy 0.500", "GRPO reaches it at 2,000 tokens",
                            "MASA reaches it at 800 tokens"]


def test_calibration_gives_each_checkpoint_its_own_colour_and_a_legend_entry():
    svg = charts.calibration({"base": [(0.0, 0.5), (1.0, 0.5)], "grpo": [(0.5, 0.4)], "masa": [(0.25, 0.3)]},
                             name="cal")
    fills = {ck: set(re.findall(r"fill: (#[0-9a-f]{6})", _group(svg, f"series-{ck}"))) for ck in ("base", "grpo", "masa")}
    assert all(len(f) == 1 for f in fills.values()) and len(set.union(*fills.values())) == 3, fills
    assert len(re.findall(r"<use ", _group(svg, "series-base"))) == 2  # both of base's points are drawn
    assert _legend(svg) == ["perfect calibration", "base", "GRPO", "MASA"]


def test_per_round_meta_error_names_training_series_and_benchmark_points():
    svg = charts.per_round({"grpo": [(0, None, None)], "masa": [(0, 0.45, 0.02), (1, 0.30, 0.02)]},
                           suffix=" (training rollouts)", title="t", ylabel="y", name="meta",
                           finals={"base": (0, 0.44, 0.02), "grpo": (2, 0.45, None), "masa": (2, 0.22, 0.02)},
                           final_label="benchmark")
    # GRPO samples no meta path in training: no line for it, only its benchmark point
    assert _legend(svg) == ["MASA (training rollouts)", "base: benchmark", "GRPO: benchmark", "MASA: benchmark"]
    assert "series-grpo" not in re.sub(r"series-grpo-final", "", svg)


def test_bar_labels_print_the_values():
    svg = charts.bars({"gating": 170000, "cutoff": 12000}, title="saved", ylabel="tokens", name="bars")
    assert {"170k", "12k", "saved"} <= set(re.findall(r"<!-- (.*?) -->", svg)) and _legend(svg) == ["gating", "cutoff"]


def test_chart_svg_is_deterministic():
    a, b = (charts.bars({"x": 1.0}, title="t", ylabel="y", name="n") for _ in range(2))
    assert a == b


def test_differences_say_when_intervals_overlap():
    # base 0.40, grpo 0.50, masa 0.56, each ± 1.96*0.03 = 0.0588: intervals overlap when the difference
    # is at most 0.1176. grpo-base 0.10 and masa-grpo 0.06 overlap; masa-base 0.16 does not.
    report, _ = report_inputs()
    rows = {r[1]: r for r in differences(report["eval"])}
    assert rows["grpo − base"][2] == pytest.approx(0.10) and rows["grpo − base"][3].startswith("within noise")
    assert rows["masa − base"][3] == "beyond noise" and rows["masa − grpo"][3].startswith("within noise")
    # meta MAE ± 1.96*0.02 = 0.0392 each: masa − grpo −0.23 is beyond noise, grpo − base 0.01 within
    assert rows["masa − grpo"][5] == "beyond noise" and rows["grpo − base"][5].startswith("within noise")
    bare, _ = report_inputs(stderr=False)
    assert {r[3] for r in differences(bare["eval"])} == {"no interval"}


def test_html_without_standard_errors_shows_no_interval():
    report, results = report_inputs(stderr=False)
    html = render_html(report, results)
    assert "0.400 ±" not in html and "0.500 ±" not in html and "no interval" in html
    with_se = render_html(*report_inputs())
    assert "0.560 ± 0.059" in with_se  # 1.96 * 0.03 = 0.0588


def test_promotion_section():
    html = render_promotion(PROMOTION)
    assert ">promoted<" in html and "candidate beats current by 0.06" in html and "toy-masa version v3" in html
    assert "0.560 ± 0.039" in html and "s3://b/models/toy-masa/v2" in html  # 1.96 * 0.02
    first = render_promotion({**PROMOTION, "decision": "first", "current": None, "version": "v1"})
    assert "no model promoted yet" in first
    assert render_promotion(None) == "<p>No promotion step in this run.</p>"


def test_timing_per_step_kind_by_hand():
    # rollout 0-10 s with 6 s of generation; score 12-14 (all compute); train 15-20 with 3 s of
    # training; benchmark 22-30 with 7 s; the report starts at 33 and ends at 34.
    # rollout: no step before it, overhead 10-6 = 4. score: gap 12-10 = 2. train: gap 1 + 5-3 = 3.
    # benchmark: gap 2 + 8-7 = 1 -> 3. report: gap 3, compute 1. Total 34 = compute 6+2+3+7+1 = 19
    # plus overhead 4+2+3+3+3 = 15.
    steps = [("train", 15.0, 20.0, 3.0), ("rollout", 0.0, 10.0, 6.0), ("score", 12.0, 14.0, 2.0),
             ("benchmark", 22.0, 30.0, 7.0)]
    t = timing(steps, 33.0, 34.0)
    assert t["total_s"] == 34 and t["compute_s"] == 19 and t["overhead_s"] == 15
    assert t["by_kind"] == {"rollout": {"steps": 1, "compute_s": 6.0, "overhead_s": 4.0},
                            "score": {"steps": 1, "compute_s": 2.0, "overhead_s": 2.0},
                            "train": {"steps": 1, "compute_s": 3.0, "overhead_s": 3.0},
                            "benchmark": {"steps": 1, "compute_s": 7.0, "overhead_s": 3.0},
                            "report": {"steps": 1, "compute_s": 1.0, "overhead_s": 3.0}}


def test_the_rollout_steps_held_out_check_is_work_not_overhead():
    # A rollout step's stats: 6 s of generation and a 3 s held-out check (its evaluate, generation and
    # verification) in a 12 s span: compute 6 + 3 = 9, overhead the 3 s of engine start and the rest.
    # Before the check reported its seconds it fell under overhead (the toy run of 2026-12-02: ~27 s
    # of a rollout step's 68 s).
    from masa.steps.report import _compute

    stats = {"wall_s": 6.0, "started_at": 100.0, "finished_at": 112.0, "heldout": {"accuracy": 0.5, "wall_s": 3.0}}
    assert _compute("rollout", stats) == 9.0
    assert _compute("rollout", {**stats, "heldout": None}) == 6.0  # shards other than 0 run no check


EXPECTED_LEGENDS = {
    "accuracy-tokens": ["GRPO", "MASA", "GRPO final accuracy 0.500", "GRPO reaches it at 123k tokens",
                        "MASA reaches it at 58k tokens"],
    "accuracy-wall": ["GRPO", "MASA", "GRPO final accuracy 0.500", "GRPO reaches it at 123 s",
                      "MASA reaches it at 58 s"],
    "meta-error": ["MASA (training rollouts)", "base: benchmark", "GRPO: benchmark", "MASA: benchmark"],
    "train-accuracy": ["GRPO", "MASA"],
    "calibration": ["perfect calibration", "base", "GRPO", "MASA"],
    "tokens-saved": ["gating", "cutoff"],
}


def check_layout(html: Path, tmp: Path, legends: dict[str, list[str]] | None = None) -> dict:
    """No element past 1280 px, no two text boxes overlapping, every chart with a legend outside its
    axes (and, given `legends`, naming exactly those series)."""
    got = layout(html, tmp)
    assert got["overflow"] == [], got["overflow"]
    assert got["overlaps"] == [], got["overlaps"]
    for c in got["charts"]:
        # one legend entry per drawn series (a chart with nothing measured says so and has none)
        assert len(c["legend"] or []) == len(c["series"]), c
        assert not c["legend_covers_axes"], c["name"]
    if legends is not None:
        assert {c["name"]: c["legend"] for c in got["charts"]} == legends
    return got


def test_report_layout_in_headless_chromium(tmp_path):
    if chromium() is None:
        pytest.skip("chromium not installed (Debian package `chromium`; .ci/run installs it)")
    html = tmp_path / "report.html"
    html.write_text(render_html(*report_inputs(promotion=PROMOTION)))
    check_layout(html, tmp_path, EXPECTED_LEGENDS)


def test_layout_check_catches_overflow_and_overlap(tmp_path):
    if chromium() is None:
        pytest.skip("chromium not installed")
    html = tmp_path / "bad.html"
    html.write_text('<!doctype html><html><body><table><tr><td style="white-space:nowrap">' + "wide " * 400 +
                    '</td></tr></table><p style="position:absolute;top:100px">one text</p>'
                    '<p style="position:absolute;top:104px">another text</p></body></html>')
    got = layout(html, tmp_path)
    assert any(o.startswith("TABLE") for o in got["overflow"])
    assert "one text | another text" in got["overlaps"]


def test_build_report_carries_the_promotion_record_and_the_timing_per_kind(tmp_path):
    # no round ran (an empty store): the report still builds from the benchmark results alone
    import json

    from masa.config import load_config
    from masa.steps.report import build_report

    cfg = load_config("smoke", [f"store={tmp_path / 'store'}"])
    _, results = report_inputs()
    evals = {}
    for i, (k, r) in enumerate(results.items()):
        evals[k] = str(tmp_path / f"{k}.json")
        Path(evals[k]).write_text(json.dumps({**r, "wall_s": 2.0, "started_at": 100.0 + 10 * i,
                                              "finished_at": 103.0 + 10 * i}))
    (tmp_path / "promotion.json").write_text(json.dumps(PROMOTION))
    out = {n: str(tmp_path / f"report.{n}") for n in ("json", "html", "md")}
    build_report(cfg, evals=evals, histories={}, json_out=out["json"], html_out=out["html"], md_out=out["md"],
                 promotion=str(tmp_path / "promotion.json"))
    report = json.loads(Path(out["json"]).read_text())
    assert report["promotion"] == PROMOTION
    # three benchmarks, 3 s spans with 2 s compute, 7 s apart: the first's overhead is 3 - 2 = 1 s, each
    # other's the 7 s gap since the previous one plus 1 s: 1 + 8 + 8 = 17 s
    assert report["timing"]["by_kind"]["benchmark"] == {"steps": 3, "compute_s": 6.0, "overhead_s": 17.0}
    assert set(report["timing"]["by_kind"]) == {"benchmark", "report"}
    assert ">promoted<" in Path(out["html"]).read_text() and "**promoted**" in Path(out["md"]).read_text()
    build_report(cfg, evals=evals, histories={}, json_out=out["json"], html_out=out["html"], md_out=out["md"])
    assert json.loads(Path(out["json"]).read_text())["promotion"] is None
    assert "No promotion step in this run." in Path(out["html"]).read_text()
