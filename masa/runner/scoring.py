"""Scoring step: verify solutions, reward both paths, compute group advantages, pick expert targets.

`score_shard` reads a rollout shard (docs/rollout-shard.md), and writes `scored.parquet` (every input
column plus correct, verifier_error, reward, reward_pass_rate/length/notion, advantage, zero_variance,
token_advantages)
and `experts.parquet`, returning the round's statistics.

Decisions (see docs/algorithm.md):

- Meta rows are re-parsed here field by field (`masa.algo.meta.parse_meta_fields`, the parser the
  rollout step's `parse_meta` builds on), so the rewarded values always follow this step's G and token
  budget; the meta_* columns are rewritten with the valid fields, `meta_parse_error` naming the others.
  A bad field zeroes only its own reward component (as the released `meta_cog.compute_score`);
  `meta_parse_rate` counts wholly valid predictions, the pass-rate MAE rows with a valid pass_rate.
- The meta path is rewarded against the solution rows' *rewards*: a rollout stopped by early cutoff
  counts as incorrect in the observed pass rate, the correct-length range and the notion counts. With
  `cutoff.meta_targets: uncut` (ours, off in the presets) the cut rows are left out of those statistics
  instead, and a prompt cut whole gives its meta rows no target, as a gated prompt does.
- A gated prompt (no solution rows) gives its meta rows reward 0, null components, advantage 0 and
  zero_variance True: with nothing observed there is nothing to align to, and a zero advantage keeps
  them out of the policy gradient (they still cost nothing but their tokens in the batch).
- GRPO groups are (group_id, path), normalised separately with the configured estimator.
- With ``advantage.meta_credit = "per-field"`` each scored meta row also gets `token_advantages`, one per
  response token: the tokens of each predicted value carry that value's own reward's group advantage
  (null elsewhere: the trainer then uses `advantage` for every token).
- Experts: per prompt the best parsed meta row strictly above `expert.min_reward`, its JSON values
  replaced by the observed statistics, re-tokenized with the model's tokenizer, EOS appended (the
  sampled responses end with it, and the clone must learn to stop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from masa.algo.advantages import flat_advantages, flat_field_advantages, pad_groups, token_advantages
from masa.algo.config import AlgorithmConfig
from masa.algo.cutoff import cut_evidence, cutoff_budget
from masa.algo.experts import expert_text, observed_targets, select_experts
from masa.algo.meta import MetaFields, meta_value_spans, parse_meta_fields
from masa.algo.rewards import notion_rewards, solution_reward
from masa.algo.scoring import advantage_groups, credited_fields, is_meta_group, meta_scores, token_fields
from masa.algo.verifier import verify_batch
from masa.schemas import EXPERT_SCHEMA, META, SCORED_COLUMNS, SCORING_NEEDS, SOLUTION, require_columns


def _read(rollouts_path: str) -> tuple[pa.Table, dict[str, list]]:
    table = pq.read_table(rollouts_path)
    require_columns(table.column_names, SCORING_NEEDS, f"{rollouts_path}: rollout shard")
    cols = table.to_pydict()
    bad = sorted({p for p in cols["path"] if p not in (SOLUTION, META)})
    if bad:
        raise ValueError(f"{rollouts_path}: unknown path values {bad}; expected {SOLUTION!r} or {META!r}")
    return table, cols


def _verify(cols: dict[str, list], sol: list[int], timeout_s: float,
            workers: int | None) -> tuple[list[bool | None], list[str | None]]:
    n = len(cols["path"])
    correct: list[bool | None] = [None] * n
    errors: list[str | None] = [None] * n
    verdicts = verify_batch([(cols["text"][i], cols["answer"][i]) for i in sol], timeout_s=timeout_s,
                            workers=workers)
    for i, v in zip(sol, verdicts, strict=True):
        correct[i], errors[i] = bool(v.correct), v.error
    return correct, errors


def _padded(values: Sequence | dict, rows: list[int], prompt_of: list[int], n_prompts: int,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row values of `rows` as [B, width] by prompt, with mask and each row's slot."""
    gi = torch.tensor([prompt_of[i] for i in rows], dtype=torch.long)
    vals = torch.tensor([values[i] for i in rows], dtype=dtype)
    return pad_groups(vals, gi, n_groups=n_prompts)


@dataclass(frozen=True)
class _Observed:
    """What each prompt's solution rollouts did: ok = rewarded 1 (verified and not cut off)."""

    ok: torch.Tensor  # [B, G] bool
    length: torch.Tensor  # [B, G] long, response tokens
    mask: torch.Tensor  # [B, G] bool, real rows
    rows: list[list[int]]  # shard row indices of each prompt's solution rows, in slot order


def _observe(sol: list[int], sol_reward: torch.Tensor, lengths: list[int], prompt_of: list[int],
             n_prompts: int) -> _Observed:
    ok_by_row = dict(zip(sol, (sol_reward > 0).tolist(), strict=True))
    ok, mask, _ = _padded(ok_by_row, sol, prompt_of, n_prompts, torch.bool)
    length, _, _ = _padded(lengths, sol, prompt_of, n_prompts, torch.long)
    rows: list[list[int]] = [[] for _ in range(n_prompts)]
    for i in sol:  # `sol` is ordered by (prompt, sample_idx), the same order pad_groups gives slots
        rows[prompt_of[i]].append(i)
    return _Observed(ok, length, mask, rows)


def _meta_components(cols, meta: list[int], preds: list, prompt_of: list[int], n_prompts: int,
                     obs: _Observed, algo: AlgorithmConfig) -> dict[str, Any]:
    """Meta reward, components, validity and |k/G - p| per meta row ([M] each): the notion rewards
    (text-based) here, the rest in `masa.algo.scoring.meta_scores`."""
    fields = [p if isinstance(p, MetaFields) else MetaFields(None, None, None, ("unparsed",)) for p in preds]
    pos = {row: j for j, row in enumerate(meta)}
    r_not = torch.zeros(len(meta))
    for b in range(n_prompts):
        rows = [i for i in meta if prompt_of[i] == b]
        if not rows or not obs.rows[b]:
            continue
        notions = [fields[pos[i]].notions for i in rows]
        ok = obs.ok[b][obs.mask[b]].tolist()
        r = notion_rewards(notions, problem=cols["problem"][rows[0]],
                           solution_texts=[cols["text"][i] for i in obs.rows[b]], solution_correct=ok)
        r_not[[pos[i] for i in rows]] = r
    rw = algo.reward
    gate_low, gate_high = algo.gating.bounds(algo.n_solution)
    m = meta_scores(
        torch.tensor([f.pass_rate if f.pass_rate is not None else 0 for f in fields], dtype=torch.long),
        torch.tensor([f.solution_length if f.solution_length is not None else 1 for f in fields], dtype=torch.long),
        torch.tensor([f.pass_rate is not None for f in fields], dtype=torch.bool),
        torch.tensor([f.solution_length is not None for f in fields], dtype=torch.bool),
        torch.tensor([f.notions is not None for f in fields], dtype=torch.bool),
        torch.tensor([isinstance(p, MetaFields) for p in preds], dtype=torch.bool),  # at least one valid field
        r_not, torch.tensor([prompt_of[i] for i in meta], dtype=torch.long), obs.ok, obs.length, obs.mask,
        n_solution=algo.n_solution, length_strict=rw.length_strict, variant=rw.meta_reward,
        weight_pass_rate=rw.weight_pass_rate, weight_length=rw.weight_length, weight_notion=rw.weight_notion,
        pass_rate_variant=rw.pass_rate_reward, gate_low=gate_low, gate_high=gate_high)
    return {"reward": m.reward, "pass_rate": m.pass_rate, "length": m.length, "notion": m.notion,
            "parsed": m.parsed, "has_pass_rate": m.has_pass_rate, "abs_err": m.abs_err, "median_mae": m.median_mae,
            "gate_hits": m.gate_hits, "gate_candidates": m.gate_candidates, "gate_mixed": m.gate_mixed,
            "mixed": m.mixed,
            "parse_ok": torch.tensor([isinstance(p, MetaFields) and p.complete for p in preds], dtype=torch.bool)}


def _experts(cols, meta: list[int], m: dict[str, torch.Tensor], prompt_of: list[int], n_prompts: int,
             obs: _Observed, tokenizer: Callable[[], Any], algo: AlgorithmConfig) -> list[dict[str, Any]]:
    """Expert rows (EXPERT_SCHEMA) of the prompts whose best meta row beats the threshold."""
    if not (algo.uses_meta and algo.expert.enabled and meta):
        return []
    mprompt = [prompt_of[i] for i in meta]
    local = list(range(len(meta)))
    rew, _, _ = _padded(m["reward"].tolist(), local, mprompt, n_prompts, torch.float32)
    ok, mask, slot = _padded(m["parsed"].tolist(), local, mprompt, n_prompts, torch.bool)
    chosen = select_experts(rew, ok & mask, min_reward=algo.expert.min_reward)
    k, L = observed_targets(obs.ok, obs.length, obs.mask, n_solution=algo.n_solution)
    row_at = {(mprompt[j], int(slot[j])): meta[j] for j in local}
    picks = [(b, row_at[(b, int(chosen[b]))]) for b in range(n_prompts) if int(chosen[b]) >= 0]
    if not picks:
        return []
    tok = tokenizer()
    out = []
    for b, i in picks:
        text = expert_text(cols["text"][i], pass_rate=int(k[b]), solution_length=int(L[b]))
        ids, weights = _expert_tokens(tok, text, algo.expert.value_weight)
        out.append({"prompt_id": cols["prompt_id"][i], "prompt_token_ids": list(cols["prompt_token_ids"][i]),
                    "response_token_ids": ids, "text": text, "reward": float(rew[b, int(chosen[b])]),
                    "token_weights": weights})
    return out


def _expert_tokens(tok, text: str, value_weight: float) -> tuple[list[int], list[float]]:
    """Token ids of an expert target (+ eos) and their BC weights: `value_weight` on the tokens that
    overlap the pass_rate / solution_length digits (fast tokenizer offsets), 1 elsewhere."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = meta_value_spans(text)
    weights = [value_weight if any(a < e and s < b for s, e in spans) else 1.0 for a, b in enc["offset_mapping"]]
    ids = list(enc["input_ids"])
    if tok.eos_token_id is not None:
        ids, weights = ids + [tok.eos_token_id], weights + [1.0]
    return ids, weights


def _field_token_advantages(cols, meta: list[int], m: dict[str, torch.Tensor], prompt_of: list[int],
                            adv: torch.Tensor, tokenizer: Callable[[], Any],
                            algo: AlgorithmConfig) -> dict[int, list[float]]:
    """Row -> per-token advantages of each scored meta row under per-field credit (masa.algo.advantages).

    Only fields the meta reward weighs get their own credit; unparsed and gated rows keep their scalar.
    """
    rw, cfg = algo.reward, algo.advantage
    fields = credited_fields(variant=rw.meta_reward, weight_pass_rate=rw.weight_pass_rate,
                             weight_length=rw.weight_length, weight_notion=rw.weight_notion)
    rows = [j for j in range(len(meta)) if bool(m["parsed"][j])]
    if not rows or not fields:
        return {}
    comps = torch.stack([m[c][rows].to(torch.float32) for c, _ in fields], -1)
    gi = torch.tensor([prompt_of[meta[j]] for j in rows], dtype=torch.long)
    field_adv = flat_field_advantages(comps, gi, estimator=cfg.estimator, eps=cfg.eps, unbiased=cfg.unbiased_std)
    tok = tokenizer()
    keys = [key for _, key in fields]
    per_row = [_token_fields(tok, cols["response_token_ids"][meta[j]], keys) for j in rows]
    token_field = torch.full((len(rows), max(map(len, per_row))), -1, dtype=torch.long)
    for r, f in enumerate(per_row):
        token_field[r, : len(f)] = torch.tensor(f, dtype=torch.long)
    seq_adv = adv[torch.tensor([meta[j] for j in rows], dtype=torch.long)]
    out = token_advantages(seq_adv, field_adv, token_field)
    return {meta[j]: out[r, : len(per_row[r])].tolist() for r, j in enumerate(rows)}


def _token_fields(tok, ids: Sequence[int], keys: list[str]) -> list[int]:
    """Index into `keys` of the field whose value each response token overlaps, else -1
    (`masa.algo.scoring.token_fields` over the tokens' own decoded pieces)."""
    return token_fields(tok.batch_decode([[int(i)] for i in ids]), keys)


def _lazy_tokenizer(path: str) -> Callable[[], Any]:
    """The model's tokenizer, loaded on first use and once: experts and per-field credit both need it,
    a shard without parsed meta rows needs neither."""
    loaded: list[Any] = []

    def get() -> Any:
        if not loaded:
            from transformers import AutoTokenizer

            loaded.append(AutoTokenizer.from_pretrained(path))
        return loaded[0]

    return get


def _set(table: pa.Table, name: str, values: list, typ: pa.DataType) -> pa.Table:
    arr = pa.array(values, type=typ)
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, arr) if i >= 0 else table.append_column(name, arr)


def _meta_columns(n: int, meta: list[int], preds: list) -> dict[str, list]:
    cols: dict[str, list] = {k: [None] * n for k in ("meta_pass_rate", "meta_solution_length", "meta_notions",
                                                      "meta_parse_error")}
    for i, p in zip(meta, preds, strict=True):
        if isinstance(p, MetaFields):  # the valid fields; the others' reasons in meta_parse_error
            cols["meta_pass_rate"][i], cols["meta_solution_length"][i] = p.pass_rate, p.solution_length
            cols["meta_notions"][i] = None if p.notions is None else list(p.notions)
            cols["meta_parse_error"][i] = "; ".join(p.errors) or None
        else:
            cols["meta_parse_error"][i] = p.reason
    return cols


def _scored_table(table: pa.Table, meta_cols: dict[str, list], scored: dict[str, list]) -> pa.Table:
    """The rollout shard with the meta columns rewritten and the scoring columns set (`SCORED_COLUMNS`)."""
    values = {**meta_cols, **scored}
    for f in SCORED_COLUMNS:
        table = _set(table, f.name, values[f.name], f.type)
    return table


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if len(xs) else 0.0


def _mean_or_none(xs: Sequence[float]) -> float | None:
    """None, not 0, when nothing was measured: an MAE of 0 over no parsed prediction would switch
    predictive gating on (it reads this value) although the meta path has shown nothing."""
    return float(sum(xs) / len(xs)) if len(xs) else None


def _stats(cols, sol, meta, sol_reward, m, prompt_of, zero_var, gidx, experts, obs) -> dict[str, Any]:
    lengths = [len(t) for t in cols["response_token_ids"]]
    gated = cols.get("gated") or [False] * len(lengths)
    groups = {int(g): bool(z) for g, z in zip(gidx.tolist(), zero_var.tolist(), strict=True)}
    out: dict[str, Any] = {
        "n_prompts": len(obs.rows), "n_solution_rows": len(sol), "n_meta_rows": len(meta),
        "train_accuracy": _mean(sol_reward.tolist()),
        "gated_prompts": len({prompt_of[i] for i, g in enumerate(gated) if g}),
        "cutoff_samples": sum(fr == "cutoff" for fr in cols["finish_reason"]),
        "zero_variance_groups": sum(groups.values()),
        # the denominator of the share of prompts that give GRPO no signal (a gated prompt has no group)
        "solution_groups": sum(not is_meta_group(g) for g in groups),
        "zero_variance_solution_groups": sum(z for g, z in groups.items() if not is_meta_group(g)),
        "zero_variance_meta_groups": sum(z for g, z in groups.items() if is_meta_group(g)),
        "rollout_tokens": sum(lengths),
        "solution_tokens": sum(lengths[i] for i in sol), "meta_tokens": sum(lengths[i] for i in meta),
        # the solution tokens that bought no GRPO signal: what perfect predictive gating could save
        "zero_variance_solution_tokens": sum(lengths[i] for i in sol if zero_var[i]),
        "n_experts": len(experts),
    }
    meta_keys = ("meta_parse_rate", "meta_pass_rate_mae", "meta_pass_rate_mae_median", "meta_gate_hits",
                 "meta_gate_candidates", "meta_gate_mixed", "meta_mixed", "meta_reward_mean", "meta_reward_pass_rate_mean",
                 "meta_reward_length_mean", "meta_reward_notion_mean")
    out.update(dict.fromkeys(meta_keys))  # None without meta rows (GRPO), so every round has the same keys
    if m is not None:
        ok = m["parsed"]
        scorable = [bool(obs.mask[prompt_of[i]].any()) for i in meta]
        out["meta_parse_rate"] = _mean(m["parse_ok"].tolist())
        out["meta_pass_rate_mae"] = _mean_or_none(m["abs_err"][m["has_pass_rate"]].tolist())
        out["meta_pass_rate_mae_median"] = m["median_mae"]
        out["meta_gate_hits"], out["meta_gate_candidates"] = m["gate_hits"], m["gate_candidates"]
        out["meta_gate_mixed"], out["meta_mixed"] = m["gate_mixed"], m["mixed"]
        out["meta_reward_mean"] = _mean_or_none([r for r, s in zip(m["reward"].tolist(), scorable, strict=True) if s])
        for k in ("pass_rate", "length", "notion"):
            out[f"meta_reward_{k}_mean"] = _mean_or_none(m[k][ok].tolist())
    return out


def _cut_evidence(cols, sol: list[int], meta: list[int], sol_reward: torch.Tensor, prompt_of: list[int],
                  n_prompts: int, algo: AlgorithmConfig, max_tokens: int) -> tuple[int | None, int | None]:
    """Early cutoff's switch evidence (`masa.algo.cutoff.cut_evidence`): the budgets the rollout step would
    set, from its own parse of the meta rows (the shard's meta_solution_length, as `masa.runner.rollout.
    decide` reads it), against the passing solutions of the prompts it did not act on (their rows' max_tokens
    is the response cap). (None, None) where the round has no cutoff to judge (GRPO, MASA, cutoff off)."""
    c = algo.cutoff
    if not (algo.efficient and c.enabled and meta and sol and "max_tokens" in cols
            and "meta_solution_length" in cols):
        return None, None
    pred = {i: cols["meta_solution_length"][i] for i in meta}
    length, mask, _ = _padded({i: v or 0 for i, v in pred.items()}, meta, prompt_of, n_prompts, torch.long)
    valid, _, _ = _padded({i: v is not None for i, v in pred.items()}, meta, prompt_of, n_prompts, torch.bool)
    budget = cutoff_budget(length, valid & mask, multiplier=c.multiplier, min_tokens=min(c.min_tokens, max_tokens),
                           max_tokens=max_tokens)
    applied = torch.zeros(n_prompts, dtype=torch.bool)
    for i in sol:
        applied[prompt_of[i]] |= cols["max_tokens"][i] < max_tokens
    passed = dict(zip(sol, (sol_reward > 0).tolist(), strict=True))
    ok, sol_mask, _ = _padded(passed, sol, prompt_of, n_prompts, torch.bool)
    lens, _, _ = _padded({i: len(cols["response_token_ids"][i]) for i in sol}, sol, prompt_of, n_prompts, torch.long)
    return cut_evidence(budget, applied, lens, ok, sol_mask)


def score_shard(rollouts_path: str, out_dir: str, *, tokenizer_path: str, algo: AlgorithmConfig,
                max_response_tokens: int, verifier_timeout_s: float = 5.0,
                verifier_workers: int | None = None) -> dict[str, Any]:
    """Score a rollout shard into out_dir/scored.parquet and out_dir/experts.parquet; return stats.

    `verifier_workers` is passed to `verify_batch` (None: one process per CPU; 0: in process).
    """
    table, cols = _read(rollouts_path)
    tokenizer = _lazy_tokenizer(tokenizer_path)
    n = len(cols["path"])
    index = {g: b for b, g in enumerate(sorted(set(cols["group_id"])))}
    prompt_of = [index[g] for g in cols["group_id"]]
    n_prompts = len(index)
    by_slot = sorted(range(n), key=lambda i: (prompt_of[i], cols["sample_idx"][i]))
    sol = [i for i in by_slot if cols["path"][i] == SOLUTION]
    meta = [i for i in by_slot if cols["path"][i] == META]

    correct, verr = _verify(cols, sol, verifier_timeout_s, verifier_workers)
    cutoff = torch.tensor([cols["finish_reason"][i] == "cutoff" for i in sol], dtype=torch.bool)
    sol_reward = solution_reward(torch.tensor([bool(correct[i]) for i in sol], dtype=torch.bool), cutoff)
    # what the meta path is rewarded against (and its experts rewritten with): every solution, or with
    # cutoff.meta_targets "uncut" those that ran to their end (a prompt cut whole observes nothing)
    seen = ~cutoff if algo.cutoff.meta_targets == "uncut" else torch.ones_like(cutoff)
    obs = _observe([i for i, s in zip(sol, seen.tolist(), strict=True) if s], sol_reward[seen],
                   [len(t) for t in cols["response_token_ids"]], prompt_of, n_prompts)
    preds = [parse_meta_fields(cols["text"][i], n_solution=algo.n_solution, max_response_tokens=max_response_tokens)
             for i in meta]
    m = _meta_components(cols, meta, preds, prompt_of, n_prompts, obs, algo) if meta else None

    reward = [0.0] * n
    parts: dict[str, list] = {k: [None] * n for k in ("pass_rate", "length", "notion")}
    for i, r in zip(sol, sol_reward.tolist(), strict=True):
        reward[i] = r
    if m is not None:
        for j, i in enumerate(meta):
            reward[i] = float(m["reward"][j])
            if bool(m["parsed"][j]):  # components only where a prediction met observations
                for k in parts:
                    parts[k][i] = float(m[k][j])

    # One GRPO group per (prompt, path)
    gidx = advantage_groups(prompt_of, [p == META for p in cols["path"]])
    adv_cfg = algo.advantage
    adv, zero_var = flat_advantages(torch.tensor(reward, dtype=torch.float32), gidx, estimator=adv_cfg.estimator,
                                    eps=adv_cfg.eps, unbiased=adv_cfg.unbiased_std)

    tok_adv: list = [None] * n  # per-token advantages where per-field credit applies, else the row's one
    if m is not None and adv_cfg.meta_credit == "per-field":
        for i, a in _field_token_advantages(cols, meta, m, prompt_of, adv, tokenizer, algo).items():
            tok_adv[i] = a

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = {"correct": correct, "verifier_error": verr, "reward": reward, "advantage": adv.tolist(),
              "zero_variance": zero_var.tolist(), "token_advantages": tok_adv,
              **{f"reward_{k}": vals for k, vals in parts.items()}}
    pq.write_table(_scored_table(table, _meta_columns(n, meta, preds), scored), out / "scored.parquet")

    experts = _experts(cols, meta, m, prompt_of, n_prompts, obs, tokenizer, algo) if m is not None else []
    pq.write_table(pa.Table.from_pylist(experts, schema=EXPERT_SCHEMA), out / "experts.parquet")
    stats = _stats(cols, sol, meta, sol_reward, m, prompt_of, zero_var, gidx, experts, obs)
    stats["verifier_errors"] = sum(e is not None for e in verr)
    stats["cutoff_would_cut"], stats["cutoff_passing"] = _cut_evidence(cols, sol, meta, sol_reward, prompt_of,
                                                                       n_prompts, algo, max_response_tokens)
    return stats
