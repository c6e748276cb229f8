"""A bounded load test of `vpeft serve`'s app: N requests from C concurrent clients spread over
K adapters, against a server started here on 127.0.0.1 (free port) and stopped at the end.
Reports throughput, p50 / p99 latency and how many mixed batches the requests formed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --requests 200 --concurrency 16
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

import vpeft
from vpeft.serve.app import create_app
from vpeft.serve.inference import Predictor

BACKBONE = "vit-tiny-synth"


def adapters(folder: Path, k: int) -> dict[str, Path]:
    files = {}
    for i in range(k):
        method = ("lora", "ssf", "bitfit", "adapter")[i % 4]
        pm = vpeft.apply(vpeft.create_backbone(BACKBONE), method, num_classes=10)
        with torch.no_grad():
            for p in pm.trainable_parameters().values():
                p.add_(torch.randn_like(p) * 0.05)
        files[f"task{i}"] = folder / f"task{i}.safetensors"
        pm.save(files[f"task{i}"])
    return files


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    args = parser.parse_args()
    if args.requests > 5000 or args.concurrency > 64:
        parser.error("bounded load test: at most 5000 requests and 64 clients")
    with tempfile.TemporaryDirectory() as tmp:
        pm = vpeft.load_adapters(
            vpeft.create_backbone(BACKBONE), adapters(Path(tmp), args.adapters)
        )
    app = create_app(Predictor(pm), args.max_batch, args.max_wait_ms)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    images = [png(i) for i in range(16)]
    names = pm.adapters
    client = httpx.Client(timeout=args.timeout, limits=httpx.Limits(max_connections=64))

    def call(i: int) -> float:
        start = time.perf_counter()
        reply = client.post(
            f"{url}/predict/{names[i % len(names)]}", files={"file": ("x.png", images[i % 16])}
        )
        reply.raise_for_status()
        return time.perf_counter() - start

    try:
        for i in range(8):  # warm-up
            call(i)
        before = client.get(f"{url}/health").json()
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            latencies = sorted(pool.map(call, range(args.requests)))
        elapsed = time.perf_counter() - start
        after = client.get(f"{url}/health").json()
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    batches = after["batches"] - before["batches"]
    print(
        f"{args.requests} requests, {args.concurrency} clients, {len(names)} adapters: "
        f"{args.requests / elapsed:.1f} req/s, p50 {p(0.50):.1f} ms, p99 {p(0.99):.1f} ms, "
        f"mean latency {statistics.mean(latencies) * 1000:.1f} ms, {batches} batches "
        f"(mean {args.requests / max(batches, 1):.1f} requests/batch)"
    )


if __name__ == "__main__":
    main()
