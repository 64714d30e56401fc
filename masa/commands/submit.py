HELP = "submit a run to a Kubeflow Pipelines endpoint"


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


def run(args) -> int:
    from masa.commands._common import load_cluster
    from masa.pipeline.compile import submit

    cfg, version, _ = load_cluster(args)
    run_id = submit(cfg, host=args.host, experiment=args.experiment, namespace=args.namespace,
                    run_name=args.run_name, cache=not args.no_cache, backend=version)
    print(f"run {run_id} created in experiment {args.experiment!r} at {args.host}")
    return 0
