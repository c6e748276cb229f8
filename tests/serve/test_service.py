"""`vpeft serve`'s app on a real socket (127.0.0.1, free port) with a real HTTP client."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

import vpeft
from tests.serve.test_predict import BACKBONE, adapter_file
from vpeft.serve.app import create_app
from vpeft.serve.inference import Predictor, decode_image


def png(seed: int, size: int = 36) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    files = {"shapes": adapter_file(root, "shapes", "lora", 3, 1),
             "tex": adapter_file(root, "tex", "ssf", 4, 2)}  # fmt: skip
    predictor = Predictor(vpeft.load_adapters(vpeft.create_backbone(BACKBONE), files))
    app = create_app(predictor, max_batch=16, max_wait_ms=100, max_upload_bytes=50_000)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield url, predictor
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_health_and_adapters(service) -> None:
    url, _ = service
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    adapters = httpx.get(f"{url}/adapters").json()["adapters"]
    assert [a["name"] for a in adapters] == ["shapes", "tex"]
    assert adapters[0]["methods"] == ["lora"] and adapters[1]["classes"][0] == "tex_class0"


def test_predict_matches_the_library(service) -> None:
    url, predictor = service
    data = png(3)
    reply = httpx.post(f"{url}/predict/tex", files={"file": ("a.png", data)}, params={"top_k": 2})
    assert reply.status_code == 200, reply.text
    expected = predictor.predict([("tex", decode_image(data))], 2)[0]
    assert [r["label"] for r in reply.json()] == [p.label for p in expected]
    assert reply.json()[0]["score"] == pytest.approx(expected[0].score, abs=1e-5)


def test_concurrent_requests_for_different_adapters_share_batches(service) -> None:
    url, predictor = service
    before = httpx.get(f"{url}/health").json()
    jobs = [("shapes" if i % 2 else "tex", png(10 + i)) for i in range(8)]

    def call(job):
        name, data = job
        return httpx.post(f"{url}/predict/{name}", files={"file": ("x.png", data)}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, jobs))
    assert all(r.status_code == 200 for r in replies)
    for (name, data), reply in zip(jobs, replies, strict=True):
        expected = predictor.predict([(name, decode_image(data))], 5)[0]
        assert reply.json()[0]["label"] == expected[0].label
    after = httpx.get(f"{url}/health").json()
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8  # some requests were batched together
    assert after["largest_batch"] > 1


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [
        ("/predict/nope", {"files": {"file": ("a.png", png(1))}}, 404),
        ("/predict/tex", {"files": {"file": ("a.txt", b"hello, not an image")}}, 415),
        ("/predict/tex", {"files": {"file": ("big.png", b"x" * 60_000)}}, 413),
        ("/predict/tex", {"files": {"other": ("a.png", png(1))}}, 422),
        ("/predict/tex", {"content": b"garbage", "headers": {"content-type": "text/plain"}}, 422),
        ("/predict/tex?top_k=0", {"files": {"file": ("a.png", png(1))}}, 422),
    ],
)
def test_bad_requests_get_4xx_and_the_service_keeps_serving(service, path, kwargs, status) -> None:
    url, _ = service
    reply = httpx.post(f"{url}{path}", **kwargs)
    assert reply.status_code == status
    assert reply.json()["detail"]
    ok = httpx.post(f"{url}/predict/shapes", files={"file": ("a.png", png(2))})
    assert ok.status_code == 200
