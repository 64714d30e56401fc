HELP = "compile the pipeline to KFP IR YAML for a cluster"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)
    p.add_argument("-o", "--output", default="pipeline.yaml", help="IR YAML path (default: %(default)s)")


def run(args) -> int:
    from masa.commands._common import load_cluster
    from masa.pipeline.compile import compile_pipeline

    cfg, version, found = load_cluster(args)
    for c in found:
        if c.status == "warn":
            print(c.line())
    path = compile_pipeline(cfg, args.output, version)
    print(f"wrote {path} for KFP backend {'.'.join(map(str, version))}+")
    return 0
