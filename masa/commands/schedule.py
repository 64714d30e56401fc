HELP = "create a recurring run (scheduled retraining) on a Kubeflow Pipelines endpoint"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)
    p.add_argument("--no-cache", action="store_true",
                   help="run every step even if KFP has a cached result (rebuilt image, replaced data)")
    p.add_argument("--host", default=None, help="KFP API endpoint (required unless --dry-run)")
    p.add_argument("--dry-run", metavar="YAML", default=None,
                   help="only compile the recurring run's pipeline to YAML (promote step, run identity); create nothing")
    p.add_argument("--cron", required=True, help="6-field cron: seconds minutes hours day month weekday")
    p.add_argument("--experiment", default="masa", help="experiment name (default: %(default)s)")
    p.add_argument("--namespace", default=None)
    p.add_argument("--job-name", default=None)


def run(args) -> int:
    import sys

    from masa.commands._common import load_cluster
    from masa.pipeline.compile import ClusterError, schedule

    cfg, version, _ = load_cluster(args)
    if args.dry_run:
        from masa.pipeline.compile import compile_pipeline

        print(f"compiled {compile_pipeline(cfg, args.dry_run, 0, version, scheduled=True)} (model {cfg.model!r})")
        return 0
    if not args.host:
        print("masa: --host is required (or --dry-run YAML to only compile)", file=sys.stderr)
        return 2
    try:
        job = schedule(cfg, host=args.host, cron=args.cron, experiment=args.experiment,
                       job_name=args.job_name, namespace=args.namespace, cache=not args.no_cache,
                       backend=version)
    except ValueError as e:
        print(f"masa: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"masa: {e}", file=sys.stderr)
        return 1
    print(f"recurring run {job} created: cron {args.cron!r}, max concurrency 1, no catch-up")
    return 0
