HELP = "submit a run to a Kubeflow Pipelines endpoint (one segment of rounds; --follow chains the rest)"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)
    p.add_argument("--no-cache", action="store_true",
                   help="run every step even if KFP has a cached result (rebuilt image, replaced data)")
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    p.add_argument("--experiment", default="masa", help="experiment name (default: %(default)s)")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--run-name", default=None)
    p.add_argument("--segment", type=int, default=0, help="segment of rounds to submit, from 0 (default: %(default)s)")
    p.add_argument("--follow", action="store_true",
                   help="wait for each run to succeed, then submit the next segment, to the last")


def run(args) -> int:
    import sys

    from masa.commands._common import load_cluster
    from masa.pipeline.compile import ClusterError, submit

    cfg, version, _ = load_cluster(args)
    n = len(cfg.segments)
    try:
        ids = submit(cfg, host=args.host, experiment=args.experiment, namespace=args.namespace,
                     run_name=args.run_name, segment=args.segment, follow=args.follow,
                     cache=not args.no_cache, backend=version)
    except ClusterError as e:
        print(f"masa: {e}", file=sys.stderr)
        return 1
    for run_id in ids:
        print(f"run {run_id} created in experiment {args.experiment!r} at {args.host}", flush=True)
    if n > 1 and not args.follow:
        print(f"this configuration runs in {n} segments; submit the next with --segment {args.segment + 1}")
    return 0
