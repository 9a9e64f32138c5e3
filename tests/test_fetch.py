"""Remote videos over real HTTP on 127.0.0.1: every way a server fails becomes an error row
with its reason, within bounded attempts and time; preprocessing from HTTP loses no row."""

from __future__ import annotations

import csv
import http.server
import threading
import time

import pyarrow.parquet as pq
import pytest

from pipelines.fetch import fetch_http
from pipelines.preprocess import run
from pipelines.video import RowError
from sample_fixtures import preprocess_config


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        kind = self.path.strip("/").split("/", 1)[0]
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = self.files.get(name, b"")
        if kind == "ok" and name in self.files:
            self._send(200, body)
        elif kind == "flaky":  # 503 once, then the file
            self._send(503, b"busy") if self.hits[self.path] == 1 else self._send(200, body)
        elif kind == "slow":  # no answer for longer than the client's timeout
            time.sleep(3)
            self._send(200, body)
        elif kind == "short":  # promises the whole file, sends half, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "drop":  # closes without a response
            self.close_connection = True
            self.connection.close()
        elif kind == "forbidden":
            self._send(403, b"no")
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server(sample_dir):
    videos = sorted(p for p in (sample_dir / "videos").rglob("*.mp4") if p.parent.name != "broken")[:3]
    Handler.files = {p.name: p.read_bytes() for p in videos}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", videos
    httpd.shutdown()
    httpd.server_close()


def _reason(url: str, **kw) -> tuple[str, str, float]:
    args = {"timeout_s": 1.0, "retries": 1, "deadline_s": 10.0, "max_bytes": 10 * 2**20, **kw}
    started = time.perf_counter()
    with pytest.raises(RowError) as err:
        fetch_http(url, **args)
    return err.value.reason, str(err.value), time.perf_counter() - started


def test_each_server_failure_has_its_reason_and_bounded_attempts(server):
    base, videos = server
    name = videos[0].name
    assert fetch_http(f"{base}/ok/{name}", 1.0, 0, 10.0, None) == videos[0].read_bytes()
    assert fetch_http(f"{base}/flaky/{name}", 1.0, 1, 10.0, None) == videos[0].read_bytes()  # a 503 is retried
    reason, message, _ = _reason(f"{base}/ok/nothing.mp4")
    assert reason == "missing" and "HTTP 404" in message and Handler.hits["/ok/nothing.mp4"] == 1  # a 404 is not retried
    reason, message, _ = _reason(f"{base}/forbidden/{name}")
    assert reason == "fetch_failed" and "HTTP 403" in message and Handler.hits[f"/forbidden/{name}"] == 1
    for kind in ("short", "drop", "slow"):
        reason, message, _ = _reason(f"{base}/{kind}/{name}", retries=2)
        assert reason == "fetch_failed" and "gave up after 3 attempt(s)" in message and "input.fetch_retries=2" in message, message
        assert Handler.hits[f"/{kind}/{name}"] == 3
    reason, message, seconds = _reason(f"{base}/slow/{videos[1].name}", retries=10, deadline_s=2.5)
    assert reason == "fetch_failed" and "input.fetch_deadline_s=2.5" in message and Handler.hits[f"/slow/{videos[1].name}"] <= 3
    assert seconds < 8  # the deadline bounds the whole fetch; a hang would not return at all
    reason, message, _ = _reason(f"{base}/ok/{name}", max_bytes=1000)
    assert reason == "too_large" and "input.max_video_mb" in message
    reason, message, _ = _reason("http://127.0.0.1:9/nothing.mp4", retries=0)  # nothing listens
    assert reason == "fetch_failed" and "ConnectionError" in message


def test_preprocess_from_http_keeps_every_row(ray_cluster, sample_dir, server, tmp_path):
    base, videos = server
    rows = [(f"{base}/ok/{p.name}", p.stem) for p in videos[:2]] + [
        (f"{base}/ok/gone.mp4", "h_missing"), (f"{base}/short/{videos[2].name}", "h_short"),
        (f"{base}/drop/{videos[2].name}", "h_drop"),
    ]
    path = tmp_path / "remote.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerows([(vid, url, "PT3S", "remote", f"video {vid}") for url, vid in rows])
    Handler.files[path.name] = path.read_bytes()  # the CSV itself comes over HTTP too
    header = fetch_http(f"{base}/ok/{path.name}", 2.0, 0, 5.0, None, first_line=True)
    assert header == b"videoid,contentUrl,duration,page_dir,name\r\n"
    summary = run(preprocess_config(sample_dir, tmp_path / "out", **{
        "input.csv": f"{base}/ok/{path.name}", "input.video_root": None, "input.fetch_timeout_s": 2.0,
        "input.fetch_retries": 1,
    }))
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_accounted"]) == (5, 2, True)
    assert summary["errors"] == {"fetch_failed": 2, "missing": 1}
    clips = pq.read_table(tmp_path / "out" / "clips", columns=["videoid", "video_path"]).to_pandas()
    assert sorted(clips.videoid) == sorted(p.stem for p in videos[:2]) and clips.video_path.str.startswith(base).all()
    errors = pq.read_table(tmp_path / "out" / "errors").to_pandas().set_index("videoid")
    assert errors.error.to_dict() == {"h_missing": "missing", "h_short": "fetch_failed", "h_drop": "fetch_failed"}
