"""``datamint[+http|+https]://`` tracking URIs: the server they name and the API key (``DATAMINT_API_KEY``).

The key is read from the environment only, never from (or written into) a URI, so it cannot reach params, tags,
artifacts or logs; MLflow sends it as a bearer token.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from datamint_lightning.errors import TrackingError

API_KEY_ENV = "DATAMINT_API_KEY"
API_URL_ENV = "DATAMINT_API_URL"
SCHEMES = ("datamint", "datamint+http", "datamint+https")


def server_url(uri: str) -> str:
    """The ``http(s)`` URL of the Datamint server a ``datamint[+http|+https]://`` URI names."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise TrackingError(
            f"{parts.scheme}:// is not a Datamint tracking URI; use one of {', '.join(s + '://' for s in SCHEMES)}."
        )
    if parts.username or parts.password:
        raise TrackingError(
            f"Put the Datamint API key in {API_KEY_ENV}, not in the tracking URI {parts.scheme}://***@{parts.hostname}."
        )
    transport = parts.scheme.partition("+")[2] or "https"
    if not parts.netloc:
        base = os.environ.get(API_URL_ENV)
        if not base:
            raise TrackingError(f"Tracking URI {uri!r} names no server: write datamint://<host> or set {API_URL_ENV}.")
        return base.rstrip("/") + parts.path.rstrip("/")
    return urlunsplit((transport, parts.netloc, parts.path.rstrip("/"), "", ""))


def host_creds(uri: str):
    """The server URL with the API key from ``DATAMINT_API_KEY``; one clear error when it is missing."""
    from mlflow.utils.rest_utils import MlflowHostCreds

    url = server_url(uri)
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise TrackingError(
            f"Tracking URI {uri!r} needs a Datamint API key: set the {API_KEY_ENV} environment "
            "variable (it is sent as a bearer token and never recorded)."
        )
    return MlflowHostCreds(url, token=key)
