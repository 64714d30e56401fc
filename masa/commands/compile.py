HELP = "compile the pipeline to KFP IR YAML for a cluster (one file per run when the rounds need several)"


def add_arguments(p):
    from masa.commands._common import add_config_arguments

    add_config_arguments(p, default_preset="paper")
    p.add_argument("-o", "--output", default="pipeline.yaml",
                   help="IR YAML path (default: %(default)s; <stem>-partNN.yaml per run when there are several)")


def run(args) -> int:
    from masa.commands._common import load
    from masa.pipeline.compile import compile_pipeline, segment_paths

    cfg = load(args)
    for i, (seg, path) in enumerate(zip(cfg.segments, segment_paths(cfg, args.output), strict=True)):
        compile_pipeline(cfg, path, i)
        print(f"wrote {path} (rounds {seg.start + 1}-{seg.stop} of {cfg.rounds})")
    return 0
