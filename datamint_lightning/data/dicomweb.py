"""A PACS over DICOMweb (dicomweb-client): series found with QIDO-RS, retrieved with WADO-RS, results stored with
STOW-RS.

``dicomweb://host:port/path?study=<uid>&series=<uid>`` addresses a DICOMweb service over HTTP
(``dicomweb+https://`` over HTTPS); ``study`` and ``series`` may repeat, and a series may be named without its
study. Credentials never appear in the URL (it is refused, since command lines and logs show it): they come from
``DICOMWEB_USERNAME`` and ``DICOMWEB_PASSWORD`` (HTTP basic) or ``DICOMWEB_TOKEN`` (bearer). Every failure is
a ``DataError`` naming the server and what to do; none shows a credential.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from datamint_lightning.data.limits import check_voxels
from datamint_lightning.data.readers import NON_IMAGE_MODALITIES
from datamint_lightning.errors import ConfigError, DataError

SCHEMES = {"dicomweb": "http", "dicomweb+http": "http", "dicomweb+https": "https"}
USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = "DICOMWEB_USERNAME", "DICOMWEB_PASSWORD", "DICOMWEB_TOKEN"
TIMEOUT_S = 60


def is_dicomweb(text: str) -> bool:
    return str(text).split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True)
class DicomwebLocation:
    """A DICOMweb service (``url``: its http(s) root, never with credentials) and the studies/series asked for."""

    url: str
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()


def parse_location(text: str) -> DicomwebLocation:
    parts = urlsplit(str(text))
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ConfigError(
            f"{text!r} is not a DICOMweb address; expected dicomweb://host[:port]/path[?study=<uid>][&series=<uid>] "
            "(dicomweb+https:// for HTTPS)."
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"A DICOMweb address must not hold credentials ({parts.scheme}://{parts.hostname}...); set "
            f"{USERNAME_ENV} and {PASSWORD_ENV} (or {TOKEN_ENV}) in the environment instead."
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"study", "series"})
    if unknown:
        raise ConfigError(f"DICOMweb address {parts.hostname}: unknown query key(s) {unknown}; use study= and series=.")
    split = lambda key: tuple(uid.strip() for value in query.get(key, []) for uid in value.split(",") if uid.strip())
    url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return DicomwebLocation(url, split("study"), split("series"))


def client(location: DicomwebLocation):
    """A ``DICOMwebClient`` for ``location`` with the environment's credentials."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    token = os.environ.get(TOKEN_ENV)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif os.environ.get(USERNAME_ENV):
        session.auth = (os.environ[USERNAME_ENV], os.environ.get(PASSWORD_ENV, ""))
    api = DICOMwebClient(location.url, session=session, timeout=TIMEOUT_S)
    # a few quick retries for a busy server (429/503/...), not the library's five with seconds of back-off each
    api.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    return api


def _call(location: DicomwebLocation, what: str, function: Callable[[], Any]) -> Any:
    """``function()`` with network and HTTP failures turned into one clear ``DataError``."""
    import requests

    try:
        return function()
    except requests.exceptions.HTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise DataError(
                f"DICOMweb server {location.url} refused the credentials (HTTP {status}) for {what}; set "
                f"{USERNAME_ENV} and {PASSWORD_ENV} (or {TOKEN_ENV}) to an account allowed to do it."
            ) from None
        raise DataError(f"DICOMweb server {location.url} answered HTTP {status} to {what}.") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        reason = "timed out" if isinstance(error, requests.exceptions.Timeout) else "connection failed"
        raise DataError(f"DICOMweb server {location.url} cannot be reached for {what} ({reason}).") from None
    except requests.exceptions.RequestException as error:
        raise DataError(f"DICOMweb server {location.url}: {what} failed ({type(error).__name__}).") from None


def _value(attributes: dict[str, Any], tag: str, default: Any = "") -> Any:
    values = (attributes.get(tag) or {}).get("Value") or []
    return values[0] if values else default


def check_access(location: DicomwebLocation) -> None:
    """The server answers a search with these credentials (checked before any case is predicted)."""
    _call(location, "a study search (QIDO-RS)", lambda: client(location).search_for_studies(limit=1))


@dataclass(frozen=True)
class RemoteSeries:
    study: str
    series: str
    modality: str
    description: str


def find_series(location: DicomwebLocation) -> list[RemoteSeries]:
    """The image series ``location`` names (all of a study's image series, or the named series)."""
    if not location.studies and not location.series:
        raise ConfigError(f"input={location.url}: name the study (?study=<uid>) or series (?series=<uid>) to predict.")
    api = client(location)
    found: list[dict[str, Any]] = []
    for study in location.studies or (None,):
        filters = [{"SeriesInstanceUID": uid} for uid in location.series] or [{}]
        for search in filters:
            found += _call(
                location,
                f"a series search (QIDO-RS) in study {study or 'any'}",
                lambda study=study, search=search: api.search_for_series(
                    study_instance_uid=study, search_filters=search, get_remaining=True
                ),
            )
    series = {}
    for attributes in found:
        item = RemoteSeries(
            str(_value(attributes, "0020000D")),
            str(_value(attributes, "0020000E")),
            str(_value(attributes, "00080060")),
            str(_value(attributes, "0008103E")),
        )
        if item.modality not in NON_IMAGE_MODALITIES:
            series[item.series] = item
    missing = [uid for uid in location.series if uid not in series]
    if missing or not series:
        raise DataError(
            f"DICOMweb server {location.url} has no image series {', '.join(missing) or ''} "
            f"{'in study ' + ', '.join(location.studies) if location.studies else ''}".rstrip()
            + "."
        )
    return sorted(series.values(), key=lambda s: (s.study, s.series))


def retrieve_series(location: DicomwebLocation, remote: RemoteSeries, folder: Path) -> list[Path]:
    """Download one series (WADO-RS) into ``folder``, instance by instance; its size is checked first (QIDO-RS)."""
    api = client(location)
    what = f"series {remote.series}"
    instances = _call(
        location,
        f"the instances of {what} (QIDO-RS)",
        lambda: api.search_for_instances(
            remote.study, remote.series, fields=["Rows", "Columns", "NumberOfFrames"], get_remaining=True
        ),
    )
    frames = sum(int(_value(i, "00280008", 1) or 1) for i in instances)
    rows = max((int(_value(i, "00280010", 0) or 0) for i in instances), default=0)
    columns = max((int(_value(i, "00280011", 0) or 0) for i in instances), default=0)
    check_voxels((frames, rows, columns), f"DICOMweb {what}")  # before a byte of pixel data is fetched
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def download() -> None:
        for dataset in api.iter_series(remote.study, remote.series):
            path = folder / f"{len(paths):05d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)

    _call(location, f"retrieving {what} (WADO-RS)", download)
    if not paths:
        raise DataError(f"DICOMweb server {location.url} returned no instances for {what}.")
    return paths


def store(location: DicomwebLocation, dataset) -> None:
    """Store one DICOM object (STOW-RS); a refusal of any instance is an error."""
    api = client(location)
    answer = _call(
        location,
        f"storing {dataset.Modality} {dataset.SOPInstanceUID} (STOW-RS)",
        lambda: api.store_instances([dataset]),
    )
    failed = answer.get("FailedSOPSequence") if answer is not None else None
    if failed:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise DataError(
            f"DICOMweb server {location.url} refused to store {dataset.SOPInstanceUID} (reasons {reasons})."
        )
