"""Preflight checks that need the cluster: what the offline checks (pipeline/preflight.py) cannot see.

With `masa preflight --kubeconfig FILE [--namespace NS]` we read, with the user's own credentials, that the
run's namespace holds what its pods will ask for: the S3 Secret with every key the step pods read
(`masa.storage.s3.SECRET_KEYS`), the service account the runs use and the image pull secrets it names, and,
for multi-node training, the `masa-deepspeed` TrainingRuntime the TrainJob references. Each is a GET;
nothing is created or changed. Each check is one line, FAIL naming what is missing and how to create it.
"""

from __future__ import annotations

import base64

from masa.config import RunConfig
from masa.pipeline.preflight import Check
from masa.storage.s3 import SECRET_KEYS
from masa.train.trainjob import GROUP, RUNTIME, VERSION


def api_clients(kubeconfig: str, context: str | None = None):
    """(CoreV1Api, CustomObjectsApi, namespace of the context or "default") from a kubeconfig file."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig, context=context)
    _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    ns = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CoreV1Api(api), client.CustomObjectsApi(api), ns


def _status(e: Exception) -> int | None:
    return getattr(e, "status", None)


def _get(fn, *args):
    """The object, or None when the API answers 404; other errors propagate to the caller's check."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the client raises ApiException; 404 is an answer, not a failure
        if _status(e) == 404:
            return None
        raise


def _secret(core, ns: str, name: str) -> Check:
    obj = _get(core.read_namespaced_secret, name, ns)
    if obj is None:
        return Check("cluster-secret", "FAIL", f"Secret {ns}/{name} not found: create it from "
                     "manifests/templates/s3-credentials.secret.yaml (docs/deploy.md, step 3)")
    keys = set((obj.data or {}).keys())  # the API returns stringData folded into data
    missing = [k for k in SECRET_KEYS if k not in keys]
    if missing:
        return Check("cluster-secret", "FAIL", f"Secret {ns}/{name} lacks {', '.join(missing)}: step pods fail "
                     "with CreateContainerConfigError")
    empty = [k for k in SECRET_KEYS if not base64.b64decode((obj.data or {}).get(k) or b"")]
    if empty:
        return Check("cluster-secret", "warn", f"Secret {ns}/{name}: {', '.join(empty)} empty")
    return Check("cluster-secret", "ok", f"Secret {ns}/{name} has {', '.join(SECRET_KEYS)}")


def _service_account(core, ns: str, name: str) -> list[Check]:
    sa = _get(core.read_namespaced_service_account, name, ns)
    if sa is None:
        return [Check("cluster-service-account", "FAIL", f"ServiceAccount {ns}/{name} not found: apply "
                      "manifests/ (kubectl apply -k manifests, docs/deploy.md step 4)")]
    out = [Check("cluster-service-account", "ok", f"ServiceAccount {ns}/{name}")]
    pulls = [r.name for r in (sa.image_pull_secrets or [])]
    absent = [p for p in pulls if _get(core.read_namespaced_secret, p, ns) is None]
    if absent:
        out.append(Check("cluster-pull-secrets", "FAIL", f"{name} names image pull secret(s) "
                         f"{', '.join(absent)} that do not exist in {ns}: image pulls will fail"))
    else:
        out.append(Check("cluster-pull-secrets", "ok", f"{len(pulls)} image pull secret(s) present" if pulls else
                         "none named (public images, or the node's credentials)"))
    return out


def _runtime(custom, ns: str, cfg: RunConfig) -> Check:
    if cfg.resources.train_nodes <= 1 and not cfg.resources.train_service:
        return Check("cluster-trainingruntime", "ok", "not used (single-node training in the step pod)")
    obj = _get(custom.get_namespaced_custom_object, GROUP, VERSION, ns, "trainingruntimes", RUNTIME)
    if obj is None:
        return Check("cluster-trainingruntime", "FAIL", f"TrainingRuntime {ns}/{RUNTIME} not found: apply "
                     "manifests/trainingruntime.yaml (needs Kubeflow Trainer v2)")
    return Check("cluster-trainingruntime", "ok", f"TrainingRuntime {ns}/{RUNTIME}")


def live_checks(cfg: RunConfig, core, custom, ns: str) -> list[Check]:
    """Every cluster check, each a GET in namespace `ns`; an unreachable API is one FAIL line."""
    try:
        out = [_secret(core, ns, cfg.resources.s3_secret)]
        out += _service_account(core, ns, cfg.resources.service_account)
        out.append(_runtime(custom, ns, cfg))
    except Exception as e:  # noqa: BLE001 - any transport/auth error is the answer of this check
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        return [Check("cluster", "FAIL", f"cannot read namespace {ns}: {str(reason).splitlines()[0]}")]
    return out
