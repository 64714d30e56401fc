HELP = "copy a hub model, dataset or benchmark into the store once, pinned by revision (for cluster runs)"


def add_arguments(p):
    p.add_argument("kind", choices=("model", "dataset"), help="model, or dataset (training data or a benchmark)")
    p.add_argument("source", help="Hugging Face id (org/name) or a local directory / parquet / JSONL file")
    p.add_argument("--store", required=True, help="the run's store, e.g. s3://my-bucket/runs")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit (default main), pinned to its sha")
    p.add_argument("--split", default="train", help="dataset split (benchmarks: usually test)")


def run(args) -> int:
    """Print the staged URI as the setting to pass to compile/preflight."""
    import sys

    from masa.steps.stage import stage_dataset, stage_model

    try:
        if args.kind == "model":
            uri = stage_model(args.source, args.store, revision=args.revision)
            print(f"--set model={uri}")
        else:
            uri = stage_dataset(args.source, args.store, split=args.split, revision=args.revision)
            print(f"{uri}    (data.train, data.heldout or an entry of benchmark.datasets)")
    except Exception as e:  # hub unreachable, gated without a token, unknown id or split, bad file
        print(f"masa stage: {args.source}: {e}", file=sys.stderr)
        return 2
    return 0
