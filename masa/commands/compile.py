HELP = "compile the pipeline to KFP IR YAML for a cluster (one file per run when the rounds need several)"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)
    p.add_argument("-o", "--output", default="pipeline.yaml",
                   help="IR YAML path (default: %(default)s; <stem>-partNN.yaml per run when there are several)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from masa.commands._common import cannot_write, load_cluster
    from masa.pipeline.compile import compile_pipeline, segment_paths

    cfg, version, found = load_cluster(args)
    paths = segment_paths(cfg, args.output)
    bad = cannot_write({"--output": Path(paths[0]).parent})
    if bad:
        print(f"masa compile: {bad[0]}", file=sys.stderr)
        return 2
    for c in found:
        if c.status == "warn":
            print(c.line())
    backend = ".".join(map(str, version))
    for i, (seg, path) in enumerate(zip(cfg.segments, paths, strict=True)):
        compile_pipeline(cfg, path, i, version)
        print(f"wrote {path} (rounds {seg.start + 1}-{seg.stop} of {cfg.rounds}) for KFP backend {backend}+")
    return 0
