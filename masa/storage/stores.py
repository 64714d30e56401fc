"""Opening a store by URI: the one place that knows every `Store` implementation (`masa.storage.base` is
the interface the implementations build on, so it cannot import them back)."""

from __future__ import annotations

from masa.storage.base import Store
from masa.storage.local import LocalStore


def open_store(uri: str, **s3_options) -> Store:
    """Open the store at `uri`: `/abs/dir`, `rel/dir`, `file:///abs/dir` or `s3://bucket[/prefix]`.

    `s3_options` are fields of `masa.storage.s3.S3Config` (e.g. `max_attempts=5`); they are
    rejected for local stores. S3 credentials come only from the standard boto3 chain.
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"invalid store URI {uri!r}: expected a directory, file:// or s3:// URI")
    if uri.startswith("s3://"):
        # boto3 loads only for an s3:// store (a local run never needs it)
        from masa.storage.s3 import S3Config, S3Store

        return S3Store(uri, S3Config(**s3_options))
    if s3_options:
        raise ValueError(f"S3 options {sorted(s3_options)} given for non-S3 store URI {uri!r}")
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise ValueError(f"unsupported store URI scheme {scheme!r} in {uri!r}; use a path, file:// or s3://")
    return LocalStore(uri)
