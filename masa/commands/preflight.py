HELP = "check offline that a compile would run on a Kubeflow cluster (one line per check)"


def add_arguments(p):
    from masa.commands._common import add_cluster_arguments, add_config_arguments

    add_config_arguments(p, default_preset="paper")
    add_cluster_arguments(p)


def run(args) -> int:
    """Exit 0 when no check fails (warnings allowed), 1 otherwise."""
    from masa.commands._common import load_cluster

    _, _, found = load_cluster(args, refuse=False)
    for c in found:
        print(c.line())
    failed = sum(c.status == "FAIL" for c in found)
    print(f"preflight: {len(found) - failed} of {len(found)} checks pass" + (f", {failed} FAIL" if failed else ""))
    return 1 if failed else 0
