"""Speedup figures of the report, by hand: cost of each branch to reach GRPO's final held-out accuracy."""

from masa.steps.report import cutoff_rounds, efficiency
from masa.steps.report_render import cost_to_reach, curves


def _rows(accs, tokens):
    return [{"heldout_accuracy": a, "rollout_tokens": t, "wall_s": t / 10} for a, t in zip(accs, tokens, strict=True)]


def test_cost_to_reach_first_point_at_or_above_target():
    assert cost_to_reach([(0, 0.4), (10, 0.5), (20, 0.6)], 0.5) == 10
    assert cost_to_reach([(0, 0.4), (10, None)], 0.5) is None


def test_speedup_by_hand():
    # GRPO: accuracy 0.40 before any round, 0.45 after 100 tokens, final 0.50 after 200 tokens.
    # MASA: 0.40, then 0.50 after 80 tokens. Target = GRPO's final 0.50: GRPO pays 200, MASA 80 -> 2.5x.
    rounds = {"grpo": _rows([0.40, 0.45], [100, 100]), "masa": _rows([0.40, 0.50], [80, 80])}
    assert curves(rounds["masa"], 0.55, "rollout_tokens") == [(0.0, 0.40), (80.0, 0.50), (160.0, 0.55)]
    eff = efficiency(rounds, {"grpo": 0.50, "masa": 0.55}, {})
    assert eff["speedup_tokens"] == 2.5 and eff["speedup_wall"] == 2.5
    assert eff["speedup_tokens_target_accuracy"] == 0.50 and eff["speedup_tokens_why_null"] is None


def test_null_speedups_say_why():
    # GRPO ends at 0.38, below the starting 0.40: both branches "reach" it at cost 0.
    rounds = {"grpo": _rows([0.40, 0.39], [100, 100]), "masa": _rows([0.40, 0.41], [80, 80])}
    eff = efficiency(rounds, {"grpo": 0.38, "masa": 0.42}, {})
    assert eff["speedup_tokens"] is None and "starting policy" in eff["speedup_tokens_why_null"]
    # MASA never reaches GRPO's 0.50
    rounds = {"grpo": _rows([0.40, 0.45], [100, 100]), "masa": _rows([0.40, 0.41], [80, 80])}
    eff = efficiency(rounds, {"grpo": 0.50, "masa": 0.42}, {})
    assert eff["speedup_wall"] is None and eff["speedup_wall_why_null"].startswith("MASA never reached")


def test_markdown_states_why_a_speedup_is_null():
    from masa.steps.report_render import render_markdown

    why = "the starting policy already had GRPO's final held-out accuracy 0.504"
    eff = {"speedup_tokens": None, "speedup_wall": None, "speedup_tokens_why_null": why,
           "tokens_saved_gating": 0, "tokens_saved_cutoff": 0}
    md = render_markdown({"run": {"name": "t"}, "efficiency": eff, "eval": {}})
    # plain text in Markdown: no HTML entities, and no JSON's "null" for a figure that does not exist
    assert f"Speedup to GRPO's final held-out accuracy: none in rollout tokens, none in wall time ({why})." in md


def test_speedup_sentence_gives_each_figure_and_the_basis():
    from masa.steps.report_render import speedup_sentence

    eff = {"speedup_tokens": 1.2149, "speedup_wall": 0.95, "final_accuracy_basis": "heldout-check",
           "speedup_note": "MASA-efficient reached it on the way but ended below it"}
    assert speedup_sentence(eff) == (
        "Speedup to GRPO's final held-out accuracy on the rounds' held-out check problems (as every point of the "
        "curves): 1.21× in rollout tokens, 0.95× in wall time (MASA-efficient reached it on the way but ended "
        "below it).")
    # one figure without the other: each says which
    assert "1.21× in rollout tokens, none in wall time (no wall clock)." in speedup_sentence(
        {"speedup_tokens": 1.2149, "speedup_wall": None, "speedup_wall_why_null": "no wall clock"})
    # the HTML puts figures in bold and escapes the prose
    html = speedup_sentence({**eff, "speedup_note": "a < b"}, lambda x: f"<b>{x}</b>", __import__("html").escape)
    assert "<b>1.21×</b> in rollout tokens" in html and "(a &lt; b)" in html


def test_final_point_is_measured_on_the_rounds_check_problems():
    # The benchmark holds 4 problems at k = 4: a solved 4/4, b 0/4, c 2/4, d 4/4 (benchmark avg@4 =
    # 10/16 = 0.625). The rounds' held-out check used b and c: the final point on them is
    # (0/4 + 2/4) / 2 = 0.25, standard error = sample SD of (0, 0.5) / sqrt(2) = 0.353553 / 1.414214 = 0.25.
    from masa.steps.report import final_point

    result = {"benchmarks": {"toy": {"accuracy": 0.625, "accuracy_stderr": 0.2, "k": 4,
                                     "correct_counts": {"a": 4, "b": 0, "c": 2, "d": 4}}}}
    assert final_point(["b", "c"], result) == (0.25, 0.25, "heldout-check")
    # a check problem the benchmark lacks (another dataset), or no counts: the benchmark's own figure
    assert final_point(["b", "x"], result) == (0.625, 0.2, "benchmark")
    assert final_point(None, result) == (0.625, 0.2, "benchmark")
    del result["benchmarks"]["toy"]["correct_counts"]
    assert final_point(["b", "c"], result) == (0.625, 0.2, "benchmark")


def test_zero_variance_share_of_a_round():
    from masa.steps.report import _zero_variance_share

    # 3 of 8 solution groups with all-equal rewards
    assert _zero_variance_share({"zero_variance_solution_groups": 3, "solution_groups": 8}) == 3 / 8
    # stats from before `solution_groups`: without gating every prompt has one group, 5 of 20
    assert _zero_variance_share({"zero_variance_solution_groups": 5, "n_prompts": 20, "gated_prompts": 0}) == 0.25
    # with gated prompts the groups are not the prompts: unknown, not a wrong share
    assert _zero_variance_share({"zero_variance_solution_groups": 5, "n_prompts": 20, "gated_prompts": 4}) is None
    assert _zero_variance_share({}) is None


def test_speedup_ceiling_by_hand():
    from masa.steps.report import speedup_ceiling
    from masa.steps.report_render import render_markdown

    # the columns toy's shape: half the solution tokens in zero-variance groups, meta 0.68x the solutions
    # (meta share 680 / 1680 = 0.40): 1000 / (1000 - 500 + 680) = 1000 / 1180 = 0.847, below 1
    assert speedup_ceiling(1000, 500, 680) == 1000 / 1180
    # the paper's shape (512-token predictions, 4,096-token solutions: meta 1/8 of the solutions):
    # 1000 / (500 + 125) = 1.6, the room the 1.5x bar needs
    assert speedup_ceiling(1000, 500, 125) == 1.6
    assert speedup_ceiling(None, 500, 125) is None and speedup_ceiling(1000, None, 125) is None
    # the report takes it from MASA's first round (the base model's), not from later ones
    rows = [{**r, "solution_tokens": s, "zero_variance_tokens": z, "meta_tokens": m}
            for r, (s, z, m) in zip(_rows([0.4, 0.5], [1680, 1000]), [(1000, 500, 680), (500, 0, 500)], strict=True)]
    eff = efficiency({"grpo": _rows([0.4, 0.45], [1000, 1000]), "masa": rows}, {"grpo": 0.5, "masa": 0.5}, {})
    assert eff["speedup_tokens_ceiling"] == 1000 / 1180
    md = render_markdown({"run": {"name": "t"}, "efficiency": {**eff, "tokens_saved_gating": 0, "tokens_saved_cutoff": 0},
                          "eval": {}})
    assert "At equal learning per round, the first round's costs allow at most 0.85× in tokens" in md


def test_gating_note_says_what_kept_gating_off():
    from masa.steps.report import gating_note
    from masa.steps.report_render import render_markdown

    def row(mae, on=False):
        return {"gating_active": on, "meta": {"pass_rate_mae_median": mae}}

    # on in one round of three: counted, no reason needed
    assert gating_note([row(0.4), row(0.2), row(0.1, on=True)], window=2, mae_threshold=0.25) == \
        {"gating_active_rounds": 1, "gating_why_off": None}
    # never on: the first, last and best error, and the switch it had to pass
    note = gating_note([row(0.445), row(None), row(0.297), row(0.314)], window=2, mae_threshold=0.25)
    assert note["gating_active_rounds"] == 0
    assert note["gating_why_off"] == ("the meta path's pass-rate error (MAE of the median prediction) went 0.445 -> "
                                      "0.314 over the rounds (best 0.297); gating switches on once its mean over the "
                                      "last 2 rounds is below 0.25")
    assert gating_note([row(None)], window=2, mae_threshold=0.25)["gating_why_off"].startswith("no round measured")
    # with the precision switch: the pooled hits over candidates are added (56 + 12 = 68 of 90 + 19 = 109: 0.62)
    rows = [{"gating_active": False, "meta": {"pass_rate_mae_median": m, "gate_hits": h, "gate_candidates": c}}
            for m, h, c in ((0.179, 56, 90), (0.166, 12, 19), (0.2, None, None))]
    assert gating_note(rows, window=2, mae_threshold=0.25, min_precision=0.8)["gating_why_off"].endswith(
        "gating switches on once its mean over the last 2 rounds is below 0.25, and once at least 0.8 of the prompts "
        "it would skip, pooled over the same rounds, were all wrong or all right (over the run: 68 of 109, 0.62)")
    # with the signal check: the run's pooled loss. Round 1: 3 of its 12 mixed groups among the would-be-
    # skipped, gating off; round 2: gating on, 2 mixed among the 10 explored of 50, so 10 skipped, and 7 kept
    # -> (3 + 10) / (3 + 10 + 9 + 7) = 13 / 29 = 0.45
    rows = [{"gating_active": False, "gated_prompts": g,
             "meta": {"pass_rate_mae_median": 0.2, "gate_hits": 1, "gate_candidates": c, "gate_mixed": mc, "mixed": m}}
            for mc, m, c, g in ((3, 12, 20, 0), (2, 9, 10, 40))]
    note = gating_note(rows, window=2, mae_threshold=0.25, min_precision=0.8, max_signal_loss=0.2)
    assert note["gating_why_off"].endswith(", and once it would skip at most 0.2 of the rolled-out prompts' mixed "
                                           "groups, GRPO's signal (over the run: 0.45)")
    md = render_markdown({"run": {"name": "t"}, "eval": {}, "efficiency": {
        "speedup_tokens": None, "speedup_wall": None, "tokens_saved_gating": 0, "tokens_saved_cutoff": 0, **note}})
    assert "Predictive gating never switched on: the meta path's" in md


def test_speedup_noise_flags_a_crossing_the_run_did_not_keep():
    from masa.steps.report import speedup_noise

    # GRPO's final check 0.25 with s.e. 0.05 -> interval 1.96 * 0.05 = 0.098. MASA crossed it (a speedup
    # exists) and ended at 0.23 < 0.25: the note says so.
    points = {"grpo": (0.25, 0.05, "heldout-check"), "masa": (0.23, 0.05, "heldout-check")}
    out = speedup_noise({"speedup_tokens": 2.0, "speedup_wall": None}, points)
    assert abs(out["speedup_target_interval"] - 0.098) < 1e-12
    assert "ended at 0.230, below it" in out["speedup_note"] and "(± 0.098)" in out["speedup_note"]
    # Ending at or above the target, or never crossing it (no speedup), gives no note.
    kept = {**points, "masa": (0.25, 0.05, "heldout-check")}
    assert speedup_noise({"speedup_tokens": 2.0, "speedup_wall": None}, kept)["speedup_note"] is None
    assert speedup_noise({"speedup_tokens": None, "speedup_wall": None}, points)["speedup_note"] is None
    # Without a standard error the interval is unknown, the note still stands.
    out = speedup_noise({"speedup_tokens": 2.0}, {"grpo": (0.25, None, "benchmark"), "masa": (0.2, None, "benchmark")})
    assert out["speedup_target_interval"] is None and "(±" not in out["speedup_note"]


def test_markdown_carries_the_speedup_note():
    from masa.steps.report_render import render_markdown

    note = "MASA-efficient reached GRPO's final held-out accuracy 0.250 (± 0.098) on the way but ended at 0.230"
    eff = {"speedup_tokens": 2.0, "speedup_wall": 1.1, "speedup_note": note,
           "tokens_saved_gating": 0, "tokens_saved_cutoff": 0}
    assert f"({note})" in render_markdown({"run": {"name": "t"}, "efficiency": eff, "eval": {}})


def test_cutoff_excess_counts_only_the_samples_that_ran_past_the_budget():
    from masa.steps.report import cutoff_excess

    # budget 100; GRPO's samples of the prompt: 60, 80 (stopped short: they say nothing of a cut
    # sample's length), 130 and 170 (past it by 30 and 70): the cut sample is charged (30 + 70) / 2 = 50.
    # The old estimate, mean(60, 80, 130, 170) - 100 = 10, charged it as if it might have stopped short
    assert cutoff_excess(100, [60, 80, 130, 170]) == 50
    assert cutoff_excess(100, [60, 100]) is None  # none ran past it (100 is at it, not past)


def test_cutoff_savings_of_a_round_by_hand():
    from masa.steps.report import cutoff_savings

    a, b, c = [60, 80, 130, 170], [40, 90], [200]  # GRPO's samples of prompts a, b and c
    # a at 100: 50 (above); a at 150: only 170 ran past, 20; c at 120: 80; b at 50: 90 ran past, 40
    assert cutoff_savings([(100, a), (150, a), (120, c), (50, b)]) == 50 + 20 + 80 + 40
    # b at 95 (nothing of b's ran past 95) and a prompt GRPO did not sample: each charged the round's
    # other estimates' mean, (50 + 80) / 2 = 65, since a cut sample did run past its budget
    assert cutoff_savings([(100, a), (120, c), (95, b), (30, [])]) == 50 + 80 + 65 + 65
    assert cutoff_savings([(95, b)]) == 0  # nothing in the round to estimate from
    # without a GRPO branch: the round's own uncut lengths for every cut sample
    own = [60, 130, 170]
    assert cutoff_savings([(100, own), (150, own)]) == (30 + 70) / 2 + 20


def test_cutoff_rounds_counts_the_rounds_it_acted_in():
    # off for two rounds while its switch waited, then on: 2 of 4; a round rolled out before the flag
    # existed (None) makes the count unknown rather than 0
    assert cutoff_rounds([{"cutoff_active": False}, {"cutoff_active": False}, {"cutoff_active": True},
                          {"cutoff_active": True}]) == 2
    assert cutoff_rounds([{"cutoff_active": True}, {}]) is None
