"""Whole remote files for the decoder, bounded in attempts, time and size.

HTTP(S) goes through ``requests`` with a connect/read timeout per attempt, a deadline over all
attempts and a size cap; object stores (s3://, gs://) through pyarrow's filesystems. Every
failure is a :class:`~pipelines.video.RowError` with a reason (``missing``, ``fetch_failed``,
``too_large``) and the attempts made, so a dead or slow source becomes error rows instead of
a hung job.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt; any other 4xx/5xx fails at once."""
GONE_STATUS = frozenset({404, 410})


def _row_error(reason: str, message: str) -> Exception:
    from pipelines.video import RowError

    return RowError(reason, message)


def fetch(url: str, cfg: Any) -> bytes:
    """The bytes at ``url`` (http(s)://, s3://, gs://); ``cfg`` is the job's InputConfig
    (``fetch_timeout_s``, ``fetch_retries``, ``fetch_deadline_s``, ``max_video_mb``)."""
    limit = int(cfg.max_video_mb * 2**20)
    if urlparse(url).scheme in ("http", "https"):
        return fetch_http(url, cfg.fetch_timeout_s, cfg.fetch_retries, cfg.fetch_deadline_s, limit)
    return fetch_object(url, limit)


def fetch_http(url: str, timeout_s: float, retries: int, deadline_s: float, max_bytes: int | None,
               first_line: bool = False) -> bytes:
    """GET ``url`` with at most ``retries`` more attempts, all within ``deadline_s`` seconds;
    ``first_line``: stop reading after the first newline (a CSV header) and return up to it."""
    import requests

    started = time.monotonic()
    deadline = started + deadline_s
    last, attempts = "", 0
    while attempts <= retries and time.monotonic() < deadline:
        attempts += 1
        left = deadline - time.monotonic()
        try:
            with requests.get(url, stream=True, timeout=(min(timeout_s, left), min(timeout_s, left))) as response:
                status = response.status_code
                if status in GONE_STATUS:
                    raise _row_error("missing", f"{url}: HTTP {status} {response.reason}")
                if status >= 400 and status not in RETRY_STATUS:
                    raise _row_error("fetch_failed", f"{url}: HTTP {status} {response.reason}")
                if status in RETRY_STATUS:
                    last = f"HTTP {status} {response.reason}"
                else:
                    return _read_body(response, url, deadline, max_bytes, first_line)
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".rstrip(": ")
        if attempts <= retries:
            time.sleep(max(0.0, min(0.25 * 2 ** (attempts - 1), deadline - time.monotonic())))
    raise _row_error(
        "fetch_failed",
        f"{url}: gave up after {attempts} attempt(s) in {time.monotonic() - started:.1f} s "
        f"(input.fetch_retries={retries}, input.fetch_deadline_s={deadline_s:g}): {last or 'deadline passed'}",
    )


def _read_body(response: Any, url: str, deadline: float, max_bytes: int | None, first_line: bool = False) -> bytes:
    import requests

    length = response.headers.get("Content-Length")
    if max_bytes is not None and length is not None and length.isdigit() and int(length) > max_bytes:
        raise _row_error("too_large", f"{url}: {int(length) / 2**20:.1f} MiB, input.max_video_mb is {max_bytes / 2**20:g}")
    body = bytearray()
    for chunk in response.iter_content(chunk_size=1 << 20):
        body += chunk
        if first_line and b"\n" in chunk:
            return bytes(body[: body.index(b"\n") + 1])
        if max_bytes is not None and len(body) > max_bytes:
            raise _row_error("too_large", f"{url}: more than input.max_video_mb={max_bytes / 2**20:g} MiB")
        if time.monotonic() > deadline:
            raise requests.Timeout(f"deadline passed after {len(body)} bytes")
    return bytes(body)


def fetch_object(url: str, max_bytes: int | None) -> bytes:
    """A whole object from s3:// or gs:// (pyarrow filesystems, with their own retries)."""
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(url)
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise _row_error("missing", f"no such object: {url}")
        if max_bytes is not None and info.size is not None and info.size > max_bytes:
            raise _row_error("too_large", f"{url}: {info.size / 2**20:.1f} MiB, input.max_video_mb is {max_bytes / 2**20:g}")
        with fs.open_input_stream(inner) as f:
            return f.read()
    except OSError as exc:
        raise _row_error("fetch_failed", f"{url}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
