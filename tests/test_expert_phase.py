"""Behaviour cloning as a separate phase (`expert.mode: phase`, issue 14 item 6) beside the joint default.

The unit tests pin which experts a phase clones and the buffer's round trip; the slow test runs two real
1-rank DeepSpeed CPU rounds in phase mode and reads what the workers did from their metrics rows, the
published state and the weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from masa.train.config import TrainConfig
from masa.train.data import EXPERT, TrainSample, load_expert_samples
from masa.train.phase import anchor_rows, fill, load_buffer, save_buffer


def _expert(tag: int, n: int = 3, weights=None) -> TrainSample:
    return TrainSample((1, tag), (tag,) * n, None, 0.0, EXPERT, weights)


def test_fill_clones_full_batches_oldest_first_and_carries_the_rest():
    old = [_expert(10), _expert(11)]
    new = [_expert(20), _expert(21), _expert(22)]
    batches, left = fill(old, new, batch=2)
    # pool = 10 11 20 21 22: batches (10 11) (20 21), 22 waits
    assert [[s.prompt[1] for s in b] for b in batches] == [[10, 11], [20, 21]]
    assert [s.prompt[1] for s in left] == [22]
    batches, left = fill([], new, batch=4)
    assert batches == [] and left == new


def test_buffer_round_trips_through_the_state_dir(tmp_path):
    buf = [_expert(5, 2, (1.0, 3.0)), _expert(6, 4)]
    save_buffer(buf, tmp_path / "state")
    assert load_buffer(tmp_path / "state") == buf
    assert load_buffer(tmp_path / "none") == [] and load_buffer(None) == []
    save_buffer([], tmp_path / "empty")
    assert load_buffer(tmp_path / "empty") == []


def test_anchor_rows_are_solution_rows_without_advantage():
    rows = [TrainSample((1,), (i,), (-0.5,), 1.5, path, None, (2.0,) if path == "meta" else None)
            for i, path in enumerate(["solution", "meta", "solution", "solution", "meta"])]
    picked = anchor_rows(rows, 2, seed=3)
    # two of the three solution rows (tokens 0, 2, 3), never a meta row; each keeps its tokens and
    # recorded log-probs, and loses its advantage (so the phase step's surrogate is 0 on it)
    assert len(picked) == 2 and {s.response[0] for s in picked} <= {0, 2, 3}
    assert all(s.path == "solution" and s.advantage == 0.0 and s.token_advantages is None for s in picked)
    assert anchor_rows(rows, 2, seed=3) == picked  # the seed fixes the draw
    assert len(anchor_rows(rows, 10, seed=3)) == 3  # no more than there are


# ---------------------------------------------------------------- real DeepSpeed rounds


def _shards_without_advantage(model_dir, root: Path, *, n_experts: int) -> tuple[Path, Path]:
    """Scored and experts shards of 3 synthetic prompts whose advantages are all 0: with no weight decay
    the policy steps' gradient is exactly 0, so they move no weight and leave AdamW's moments at 0,
    and every change a round makes is its phase's."""
    from masa.train.synthetic import write_synthetic_shards

    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    scored, experts = write_synthetic_shards(root, vocab_size=vocab, n_prompts=3, n_experts=n_experts, seed=2)
    t = pq.read_table(scored)
    pq.write_table(t.set_column(t.column_names.index("advantage"), "advantage", [[0.0] * t.num_rows]), scored)
    return scored, experts


def _nll(model_dir, experts: list[TrainSample]) -> float:
    """Token-mean NLL of the experts' responses under the model: the BC loss of a full-batch step."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in experts:
            ids = torch.tensor([s.prompt + s.response])
            lp = torch.log_softmax(m(ids).logits[0, :-1].float(), -1)
            total -= lp[len(s.prompt) - 1 :].gather(-1, ids[0, len(s.prompt):, None]).sum().item()
            n += len(s.response)
    return total / n


@pytest.mark.slow
def test_phase_mode_clones_buffered_experts_in_their_own_steps(tiny_model_dir, tmp_path):
    from masa.runner.training import train_round
    from masa.train import checkpoint as ckpt

    # the policy step moves nothing, so the first phase step's BC loss is the input model's NLL
    scored, experts = _shards_without_advantage(tiny_model_dir, tmp_path / "data", n_experts=3)
    e = load_expert_samples(experts)
    lr = 1e-3
    cfg = TrainConfig(lr=lr, warmup_steps=2, weight_decay=0.0, steps_per_round=1, bc_mode="phase",
                      bc_phase_batch=2, bc_phase_steps=2, bc_phase_lr=5e-3, seed=1)

    r1 = train_round(str(tiny_model_dir), str(scored), str(experts), str(tmp_path / "r1"), cfg, nproc=1)
    pol, ph = [r for r in r1["steps"] if "phase" not in r], [r for r in r1["steps"] if "phase" in r]
    # the policy step has no experts in it; the phase clones experts 0 and 1 (2 steps over both)
    assert len(pol) == 1 and pol[0]["expert/tokens"] == 0 and pol[0]["lr"] == pytest.approx(lr / 2)
    assert [r["phase"] for r in ph] == ["expert", "expert"] and [r["step"] for r in ph] == [1, 1]
    assert [r["expert/tokens"] for r in ph] == [len(e[0].response) + len(e[1].response)] * 2
    # phase LRs: 5e-3 x (1, 0.5 (1 + cos(pi / 2)) = 0.5)
    assert [r["lr"] for r in ph] == pytest.approx([5e-3, 2.5e-3])
    assert ph[0]["bc_loss"] == pytest.approx(_nll(tiny_model_dir, e[:2]), rel=1e-4)
    assert ph[1]["bc_loss"] < ph[0]["bc_loss"]  # the first step cloned them
    # expert 2 waits in the published state for the next round
    state = tmp_path / "r1" / ckpt.STATE_DIR
    assert load_buffer(state) == [e[2]] and ckpt.read_train_state(state)["expert_buffer"] == 1
    assert ckpt.read_train_state(state)["global_step"] == 1

    r2 = train_round(str(tmp_path / "r1"), str(scored), str(experts), str(tmp_path / "r2"), cfg, nproc=1)
    pol, ph = [r for r in r2["steps"] if "phase" not in r], [r for r in r2["steps"] if "phase" in r]
    # the policy schedule ignored the phase: global step 2 at the full warmed-up lr (not the phase's last)
    assert [(r["step"], r["lr"]) for r in pol] == [(2, pytest.approx(lr))]
    # pool: carried 2, then this round's 0 1 2 -> batches (2, 0) and (1, 2), nothing left
    assert [r["expert/tokens"] for r in ph] == [len(e[2].response) + len(e[0].response)] * 2 + \
        [len(e[1].response) + len(e[2].response)] * 2
    assert load_buffer(tmp_path / "r2" / ckpt.STATE_DIR) == []
    assert all(math.isfinite(r["bc_loss"]) for r in ph)
    assert _nll(tmp_path / "r2", e) < _nll(tiny_model_dir, e)


def _logps(model_dir, rows: list[TrainSample]) -> torch.Tensor:
    """Every response token's log-prob under the model, concatenated."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for s in rows:
            ids = torch.tensor([s.prompt + s.response])
            lp = torch.log_softmax(m(ids).logits[0, :-1].float(), -1)
            out.append(lp[len(s.prompt) - 1 :].gather(-1, ids[0, len(s.prompt):, None])[:, 0])
    return torch.cat(out)


@pytest.mark.slow
def test_phase_anchor_holds_the_solutions_where_the_phase_found_them(tiny_model_dir, tmp_path):
    from masa.runner.training import train_round
    from masa.train.data import load_policy_samples

    scored, experts = _shards_without_advantage(tiny_model_dir, tmp_path / "data", n_experts=2)
    sols = [s for s in load_policy_samples(scored) if s.path == "solution"]
    base = _logps(tiny_model_dir, sols)
    drift, rows = {}, {}
    for coef in (0.0, 100.0):
        cfg = TrainConfig(lr=1e-3, warmup_steps=2, weight_decay=0.0, steps_per_round=1, bc_mode="phase",
                          bc_phase_batch=2, bc_phase_steps=8, bc_phase_lr=1e-4, bc_phase_anchor=coef, seed=1)
        r = train_round(str(tiny_model_dir), str(scored), str(experts), str(tmp_path / f"a{coef}"), cfg, nproc=1)
        rows[coef] = [x for x in r["steps"] if "phase" in x]
        drift[coef] = float((_logps(tmp_path / f"a{coef}", sols) - base).abs().mean())
    anchored = rows[100.0]
    # as many anchor rows as experts (2), drawn from the solution rows: their tokens are in every step
    assert all(x["solution/tokens"] > 0 for x in anchored) and all(x["solution/tokens"] == 0 for x in rows[0.0])
    # the reference is the policy as the phase found it: at the first step the KL is exactly 0 (k3 of
    # equal log-probs), and so is its gradient, so the first step is the unanchored one; then it bites
    assert anchored[0]["solution/kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert anchored[0]["bc_loss"] == pytest.approx(rows[0.0][0]["bc_loss"], rel=1e-5)
    assert all(x["solution/kl_ref"] > 0 for x in anchored[1:])
    # the solutions' log-probs moved less under the anchor than without it: measured 0.20 against 0.42
    # nats a token (2026-12-05), the first of the 8 steps being the same in both
    assert drift[100.0] < 0.6 * drift[0.0]


def _policy_adam(state_dir: Path) -> dict:
    """Rank 0's AdamW state for its (single) partition, as DeepSpeed saved it."""
    from masa.train import checkpoint as ckpt

    sd = torch.load(state_dir / ckpt.DS_TAG / "zero_pp_rank_0_mp_rank_00_optim_states.pt", map_location="cpu",
                    weights_only=False)["optimizer_state_dict"]["base_optimizer_state"]
    (st,) = (sd["state"] if "state" in sd else sd).values() if isinstance(sd, dict) else sd
    return st


def _moved(a: Path, b: Path) -> torch.Tensor:
    """|weight change| of every element the round moved."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    d = torch.cat([(wb[k].float() - wa[k].float()).abs().flatten() for k in wa])
    return d[d > 0]


@pytest.mark.slow
def test_own_phase_moments_leave_the_policy_moments_alone(tiny_model_dir, tmp_path):
    from masa.runner.training import train_round
    from masa.train import checkpoint as ckpt
    from masa.train.phase import MOMENTS_FILE, load_moments

    # every change is the phase's single step (one batch of 2 experts)
    scored, experts = _shards_without_advantage(tiny_model_dir, tmp_path / "data", n_experts=2)
    lr = 5e-3
    state, moved = {}, {}
    for mode in ("shared", "own"):
        cfg = TrainConfig(lr=1e-3, warmup_steps=2, weight_decay=0.0, steps_per_round=1, bc_mode="phase",
                          bc_phase_batch=2, bc_phase_steps=1, bc_phase_lr=lr, bc_phase_moments=mode, seed=1)
        train_round(str(tiny_model_dir), str(scored), str(experts), str(tmp_path / mode), cfg, nproc=1)
        state[mode] = tmp_path / mode / ckpt.STATE_DIR
        moved[mode] = _moved(Path(tiny_model_dir), tmp_path / mode)
    # AdamW's update is lr x m_hat / sqrt(v_hat), elementwise, for the phase's gradient g:
    # - shared: the phase step is the moments' 2nd (the policy's zero-gradient step was the 1st), so
    #   m = 0.1 g, v = 0.001 g^2, m_hat = 0.1 g / (1 - 0.9^2), v_hat = 0.001 g^2 / (1 - 0.999^2):
    #   |update| = lr x (0.1 / 0.19) / sqrt(0.001 / 0.001999) = 0.74413 lr
    # - own: the phase's fresh moments take their 1st step, m_hat = g, v_hat = g^2: |update| = lr
    assert moved["shared"].median().item() == pytest.approx(lr * (0.1 / 0.19) / (0.001 / 0.001999) ** 0.5, rel=1e-3)
    assert moved["own"].median().item() == pytest.approx(lr, rel=1e-3)
    # what each round leaves for the next policy steps: shared, the phase's gradient in the policy's
    # moments (2 steps); own, the policy's zero moments (1 step) and the phase's beside them
    shared, own = _policy_adam(state["shared"]), _policy_adam(state["own"])
    assert int(shared["step"]) == 2 and shared["exp_avg_sq"].abs().max() > 0
    assert not (state["shared"] / MOMENTS_FILE.format(rank=0)).exists()
    assert int(own["step"]) == 1 and own["exp_avg_sq"].abs().max() == 0
    (kept,) = load_moments(state["own"], 0)
    assert int(kept["step"]) == 1 and kept["exp_avg_sq"].abs().max() > 0

    # the next round continues the phase's moments from the state: its step is their 2nd, and the
    # policy's stay zero
    r2 = tmp_path / "own-r2"
    train_round(str(tmp_path / "own"), str(scored), str(experts), str(r2), cfg, nproc=1)
    (kept2,) = load_moments(r2 / ckpt.STATE_DIR, 0)
    assert int(kept2["step"]) == 2 and not torch.equal(kept2["exp_avg_sq"], kept["exp_avg_sq"])
    assert int(_policy_adam(r2 / ckpt.STATE_DIR)["step"]) == 2
    assert _policy_adam(r2 / ckpt.STATE_DIR)["exp_avg_sq"].abs().max() == 0
