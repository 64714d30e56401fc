HELP = "check that a compile would run on a Kubeflow cluster (offline; with --kubeconfig also the cluster)"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)
    p.add_argument("--kubeconfig", default=None, metavar="FILE",
                   help="also check the cluster (read-only GETs): the S3 Secret and its keys, the service account "
                        "and its image pull secrets, the TrainingRuntime for multi-node training")
    p.add_argument("--context", default=None, help="kubeconfig context (default: its current context)")
    p.add_argument("--namespace", default=None,
                   help="namespace the runs go to (default: the context's namespace, else default)")


def run(args) -> int:
    """Exit 0 when no check fails (warnings allowed), 1 otherwise."""
    from masa.commands._common import load_cluster

    cfg, _, found = load_cluster(args, refuse=False)
    if args.kubeconfig:
        from masa.pipeline.live_checks import api_clients, live_checks

        try:
            core, custom, ns = api_clients(args.kubeconfig, args.context)
        except Exception as e:  # noqa: BLE001 - a bad kubeconfig is one line, like every other check
            from masa.pipeline.preflight import Check

            found.append(Check("cluster", "FAIL", f"cannot load kubeconfig {args.kubeconfig}: {e}"))
        else:
            found += live_checks(cfg, core, custom, args.namespace or ns)
    for c in found:
        print(c.line())
    failed = sum(c.status == "FAIL" for c in found)
    print(f"preflight: {len(found) - failed} of {len(found)} checks pass" + (f", {failed} FAIL" if failed else ""))
    return 1 if failed else 0
