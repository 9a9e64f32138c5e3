"""The Serve app on real Ray Serve and real HTTP on 127.0.0.1 (tiny model, CPU): videos,
determinism, every client error, the API key, back pressure under load, batching, the page
in a real headless browser."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from serve.app import build
from serve.config import ServeConfig

API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FAST = {"num_frames": "4", "num_inference_steps": "2"}
CFG = ServeConfig(
    model="tiny",
    num_cpus=1.0,
    max_batch_size=4,
    max_ongoing_requests=4,
    max_queued_requests=2,
    retry_after_s=1,
    batch_wait_timeout_s=0.2,
    default_num_inference_steps=2,
    max_image_bytes=300_000,
    max_image_pixels=2_000_000,
    request_timeout_s=120.0,
    api_key=API_KEY,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(ray_cluster):
    """One Serve app for the module, on a free port; Serve (not Ray) is shut down at the end."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build(CFG), name="livephoto-test", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as c:
        yield c


def _encode(img: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    y, x = np.mgrid[0:72, 0:96]
    img = np.stack([x * 2, y * 3, (x + y) % 255], axis=-1).astype(np.uint8)
    img[20:40, 30:60] = (250, 40, 40)
    return _encode(img, "JPEG", quality=95)


def _animate(client, image: bytes | None, fields: dict, name="photo.jpg", ctype="image/jpeg"):
    files = {"image": (name, image, ctype)} if image is not None else None
    data = {"prompt": "the flag waves", **FAST, **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return client.post("/v1/animate", data=data, files=files)


def _decode(video: bytes) -> np.ndarray:
    with av.open(io.BytesIO(video)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# --------------------------------------------------------------------------- happy path


def test_healthz_and_model_info(client, url):
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "model": "ready"}  # no API key needed
    assert httpx.get(f"{url}/livez").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["model"] == "tiny" and info["source"] == "preset"
    assert (info["resolution"], info["num_frames"], info["intensity_levels"], info["max_frames"]) == (64, 8, 10, 32)
    assert info["limits"]["max_image_bytes"] == CFG.max_image_bytes and info["defaults"]["num_inference_steps"] == 2
    assert "/v1/animate" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.parametrize("fmt, ctype, frames", [("mp4", "video/mp4", 4), ("gif", "image/gif", 6)])
def test_animate_returns_a_video_with_the_requested_frames(client, photo, fmt, ctype, frames):
    r = _animate(client, photo, {"format": fmt, "num_frames": str(frames), "seed": "3", "intensity": "7", "fps": "4"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    assert r.headers["x-seed"] == "3" and r.headers["x-num-frames"] == str(frames)
    assert float(r.headers["x-inference-seconds"]) > 0 and int(r.headers["x-batch-size"]) >= 1
    video = _decode(r.content)
    assert video.shape == (frames, 64, 64, 3)


def test_same_seed_same_frames_and_random_seed_reported(client, photo):
    a = _animate(client, photo, {"seed": "11", "format": "gif"})
    b = _animate(client, photo, {"seed": "11", "format": "gif"})
    c = _animate(client, photo, {"seed": "12", "format": "gif"})
    assert a.status_code == b.status_code == c.status_code == 200
    assert np.array_equal(_decode(a.content), _decode(b.content))
    assert not np.array_equal(_decode(a.content), _decode(c.content))
    r = _animate(client, photo, {"format": "gif"})
    assert r.status_code == 200 and 0 <= int(r.headers["x-seed"]) < 2**32
    again = _animate(client, photo, {"format": "gif", "seed": r.headers["x-seed"]})
    assert np.array_equal(_decode(r.content), _decode(again.content))


# --------------------------------------------------------------------------- client mistakes


def _bad_images() -> dict[str, tuple[bytes, int]]:
    rng = np.random.default_rng(0)
    good = _encode(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), "JPEG")
    return {
        "not an image": (b"this is not an image at all", 415),
        "gif is not accepted": (_encode(np.zeros((32, 32, 3), np.uint8), "GIF"), 415),
        "truncated": (good[: len(good) // 2], 400),
        "empty file": (b"", 400),
        "over the pixel limit": (_encode(Image.new("RGB", (2000, 1200)), "PNG"), 413),  # 2.4 Mpx, a few KB
        "over the byte limit": (_encode(rng.integers(0, 255, (330, 330, 3), dtype=np.uint8), "PNG"), 413),
    }


@pytest.mark.parametrize("case", list(_bad_images()))
def test_bad_images_are_client_errors_naming_the_image(client, case):
    data, status = _bad_images()[case]
    r = _animate(client, data, {})
    assert r.status_code == status, (case, r.text)
    assert r.json()["detail"].startswith("image:"), r.json()


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 501}, "prompt"),
        ({"negative_prompt": "y" * 501}, "negative_prompt"),
        ({"intensity": "0"}, "intensity"),
        ({"intensity": "11"}, "intensity"),
        ({"intensity": "high"}, "intensity"),
        ({"intensity": "5.5"}, "intensity"),
        ({"num_frames": "1"}, "num_frames"),
        ({"num_frames": "33"}, "num_frames"),
        ({"num_inference_steps": "0"}, "num_inference_steps"),
        ({"num_inference_steps": "101"}, "num_inference_steps"),
        ({"guidance_scale": "-1"}, "guidance_scale"),
        ({"guidance_scale": "nan"}, "guidance_scale"),
        ({"guidance_scale": "31"}, "guidance_scale"),
        ({"guidance_start": "-0.1"}, "guidance_start"),
        ({"guidance_stop": "1.5"}, "guidance_stop"),
        ({"guidance_start": "0.6", "guidance_stop": "0.5"}, "guidance_start"),
        ({"seed": "-1"}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"fps": "0"}, "fps"),
        ({"format": "avi"}, "format"),
        ({"model": "/etc/passwd"}, "model"),  # requests never name server paths
    ],
)
def test_bad_fields_are_422_naming_the_field(client, photo, fields, field):
    r = _animate(client, photo, fields)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.json()


def test_missing_image_and_non_multipart(client):
    r = _animate(client, None, {})
    assert r.status_code == 422 and r.json()["detail"].startswith("image:")
    r = client.post("/v1/animate", json={"prompt": "the flag waves"})
    assert r.status_code == 422 and r.json()["detail"].startswith("image:")
    r = client.post("/v1/animate", data={"prompt": "x", "image": "not a file"})
    assert r.status_code == 422 and r.json()["detail"].startswith("image:")


def test_request_over_the_body_limit_is_413(client):
    big = b"\0" * (CFG.max_request_bytes + 1)
    r = client.post("/v1/animate", content=big, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request:")


def test_api_key(url, photo):
    files = {"image": ("p.jpg", photo, "image/jpeg")}
    data = {"prompt": "the flag waves", **FAST, "format": "gif"}
    for headers in ({}, {"Authorization": "Bearer wrong-key-xxxx"}, {"Authorization": API_KEY}):
        r = httpx.post(f"{url}/v1/animate", data=data, files=files, headers=headers, timeout=60)
        assert r.status_code == 401 and r.json()["detail"].startswith("authorization:")
        assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/v1/model", headers=headers).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/").status_code == 200
    r = httpx.post(f"{url}/v1/animate", data=data, files=files, headers=AUTH, timeout=60)
    assert r.status_code == 200


# --------------------------------------------------------------------------- load, batching


def test_concurrent_requests_are_batched(client, url, photo):
    def one(i: int) -> httpx.Response:  # this app's queue is tiny (2): a burst may see a 503, retry it
        for _ in range(20):
            r = _animate(client, photo, {"seed": str(i), "format": "gif"})
            if r.status_code != 503:
                return r
            time.sleep(0.1)
        return r

    before = client.get("/v1/model").json()["batch_sizes"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(4)))
    assert [r.status_code for r in answers] == [200] * 4
    after = client.get("/v1/model").json()["batch_sizes"]
    grew = {int(k) for k, v in after.items() if v > before.get(k, 0)}
    assert max(grew) > 1, after
    assert max(int(r.headers["x-batch-size"]) for r in answers) > 1


def test_bounded_load_answers_200_or_503_and_recovers(url, photo):
    """40 requests, 8 at a time, against 4 ongoing + 2 queued: the rest get 503 + Retry-After."""

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, headers=AUTH, timeout=90) as c:
            return _animate(c, photo, {"seed": str(i), "format": "gif"})

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(40)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 4 and codes.count(503) >= 1, codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["detail"].startswith("model:")
    assert time.monotonic() - start < 120
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        assert _animate(c, photo, {"format": "gif"}).status_code == 200


def _model_replica_pid() -> int:
    """The model replica's process: a descendant of this pytest process (its Ray cluster), by Ray's process title."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica:livephoto-test:LivePhotoModel" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            pass
    assert len(found) == 1, found
    return found[0]


def test_killed_model_replica_answers_503_then_serve_restarts_it(url, photo):
    """A real SIGKILL of the model replica's process while it runs a request."""
    import signal

    pid = _model_replica_pid()
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        in_flight = pool.submit(_animate, c, photo, {"num_frames": "8", "num_inference_steps": "40", "format": "gif"})
        time.sleep(1.5)  # the request is in the replica's forward by now
        assert not in_flight.done()
        os.kill(pid, signal.SIGKILL)
        answer = in_flight.result(timeout=90)
        assert answer.status_code == 503, (answer.status_code, answer.text)
        assert answer.headers["retry-after"] == "1" and answer.json()["detail"].startswith("model: the replica")
        assert time.monotonic() - started < 60
        # Serve replaces the replica; /healthz says so, then requests succeed again
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and c.get("/healthz").json().get("model") != "ready":
            time.sleep(0.5)
        assert c.get("/healthz").json() == {"status": "ok", "model": "ready"}
        assert _animate(c, photo, {"format": "gif"}).status_code == 200
        assert _model_replica_pid() != pid


def test_a_replica_that_cannot_load_its_model_fails_the_app_with_its_own_error(url, tmp_path):
    """A saved model whose base folder is missing here: the app fails to deploy (after
    max_constructor_retries), and what the user sees is the replica's exception, not only
    "Deploying application ... failed"."""
    from ray import serve

    from model.pipeline import LivePhotoPipeline
    from serve.__main__ import deployment_errors

    folder = tmp_path / "model"
    LivePhotoPipeline.from_pretrained("tiny").save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())  # as saved on a base that is not on this machine
    index["model_config"]["base_model"], index["unet"] = str(tmp_path / "sd15-not-here"), [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    broken = ServeConfig(model=str(folder), num_gpus=0.0, max_constructor_retries=1)
    with pytest.raises(RuntimeError, match="Deploying application broken failed"):
        serve.run(build(broken), name="broken", route_prefix="/broken")
    try:
        detail = deployment_errors("broken")
        assert "deployment LivePhotoModel:" in detail and "cannot load" in detail and "sd15-not-here" in detail
    finally:
        serve.delete("broken")


# --------------------------------------------------------------------------- the page, in a browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (make browser-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_page_in_headless_chromium(url, tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo_path = tmp_path / "photo.png"
    Image.fromarray(np.tile(np.arange(0, 240, 3, dtype=np.uint8)[None, :, None], (60, 1, 3))).save(photo_path)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(url + "/")
        assert driver.title == "LivePhoto"
        driver.find_element(By.ID, "image").send_keys(str(photo_path))
        driver.find_element(By.ID, "prompt").send_keys("the clouds drift")
        driver.execute_script(
            "const s = document.getElementById('intensity'); s.value = 8; s.dispatchEvent(new Event('input'));"
            "document.getElementById('api_key').value = arguments[0];"
            "document.getElementById('num_frames').value = '4';",
            API_KEY,
        )
        assert driver.find_element(By.ID, "intensity-value").text == "8"
        driver.find_element(By.ID, "animate").click()
        loaded = "const r = document.getElementById('result'); return !r.hidden && r.complete && r.naturalWidth > 0;"
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(loaded) or "error" in d.find_element(By.ID, "status").get_attribute("class"))
        status = driver.find_element(By.ID, "status").text
        assert driver.execute_script(loaded), status
        assert driver.execute_script("return document.getElementById('result').naturalWidth") == 64
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
        assert link.get_attribute("download").endswith(".gif") and "seed" in status
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
