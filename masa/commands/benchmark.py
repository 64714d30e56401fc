from masa.algo.prompts import RELEASED_INSTRUCTION

HELP = "benchmark a checkpoint: avg@k, pass@k and meta-awareness on math benchmarks (JSON)"


def add_arguments(p):
    p.add_argument("--model", required=True, help="checkpoint: local dir, s3:// URI or Hugging Face id")
    p.add_argument("--data", required=True, action="append",
                   help="benchmark: verl .parquet, .jsonl, or HF dataset id (repeatable)")
    p.add_argument("--k", type=int, default=4, help="samples per problem (default: %(default)s)")
    p.add_argument("--meta-k", type=int, default=None, help="meta predictions per problem (default: --k)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=512, help="new tokens per sample")
    p.add_argument("--max-problems", type=int, default=None)
    p.add_argument("--n-solution", type=int, default=8, help="G of the meta prompt's pass-rate range")
    p.add_argument("--max-prompt-tokens", type=int, default=1024,
                   help="skip (and count) problems with longer prompts (default: %(default)s)")
    p.add_argument("--meta-max-tokens", type=int, default=None,
                   help="response budget the meta prompt states: the training run's rollout.max_response_tokens "
                        "(default: --max-tokens)")
    p.add_argument("--instruction", default=RELEASED_INSTRUCTION,
                   help="appended to each problem (default: the paper code's %(default)r; '' for none, "
                        "as the toy was trained)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "transformers"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for benchmark.json (default: print to stdout)")
    p.add_argument("--preset", default=None,
                   help="benchmark as the pipeline's benchmark step of this preset does (its benchmark.*, "
                        "algorithm.n_solution, rollout.* settings and engine); the sampling flags above are "
                        "then not used")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --preset: override a setting, e.g. --set benchmark.k=8 (repeatable)")
    p.set_defaults(store=None)


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from masa.data.records import DataError
    from masa.engines import ModelNotFoundError
    from masa.runner.evaluate import EvalSettings, run_benchmarks

    if args.k < 1 or args.max_tokens < 1 or (args.meta_k is not None and args.meta_k < 1):
        print("masa benchmark: --k, --meta-k and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    s = EvalSettings(k=args.k, meta_k=args.meta_k, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                     max_problems=args.max_problems, n_solution=args.n_solution, seed=args.seed,
                     max_prompt_tokens=args.max_prompt_tokens, meta_max_tokens=args.meta_max_tokens,
                     solution_instruction=args.instruction)
    if args.overrides and not args.preset:
        print("masa benchmark: --set needs --preset", file=sys.stderr)
        return 2
    try:
        from masa.storage import resolve_model

        model = resolve_model(args.model)
        if args.preset:  # the benchmark step's settings and engine (masa.runner.settings)
            from masa.commands._common import load
            from masa.engines import make_engine
            from masa.runner.settings import benchmark_eval_settings, engine_config

            cfg = load(args)
            s = benchmark_eval_settings(cfg)
            engine = make_engine(engine_config(cfg, "benchmark", model, s.max_prompt_tokens + s.max_tokens))
            try:
                result = run_benchmarks(model, args.data, s, engine=engine)
            finally:
                engine.close()
        else:
            result = run_benchmarks(model, args.data, s, backend=args.backend)
    except (DataError, ModelNotFoundError, FileNotFoundError) as e:
        print(f"masa benchmark: {e}", file=sys.stderr)
        return 2
    result["model"] = args.model
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "benchmark.json").write_text(text)
        print(f"wrote {Path(args.out) / 'benchmark.json'}")
    else:
        print(text)
    return 0
