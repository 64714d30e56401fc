HELP = "compile the pipeline to KFP IR YAML for a cluster"


def add_arguments(p):
    from masa.commands._common import add_config_arguments

    add_config_arguments(p, default_preset="paper")
    p.add_argument("-o", "--output", default="pipeline.yaml", help="IR YAML path (default: %(default)s)")


def run(args) -> int:
    from masa.commands._common import load
    from masa.pipeline.compile import compile_pipeline

    path = compile_pipeline(load(args), args.output)
    print(f"wrote {path}")
    return 0
