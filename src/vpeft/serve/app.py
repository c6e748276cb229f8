"""The HTTP inference service: one backbone in memory, any number of named adapters.

    GET  /health               {"status": "ok", "adapters": N, "requests": …, "batches": …}
    GET  /adapters             {"adapters": [{"name", "methods", "num_classes", "classes", …}]}
    POST /predict/{adapter}    multipart field `file` (an image), query `top_k`
                               -> [{"label": …, "score": …}, …]

Concurrent requests (for any adapters) are gathered by `BatchQueue` for at most `max_wait_ms`
(or until `max_batch` are waiting) and run as ONE mixed-adapter batch through the backbone
(`PeftModel(x, adapter_names=…)`), in a worker thread so the event loop keeps accepting
requests. Bad requests get a 4xx with a message: unknown adapter 404, oversized upload 413, not
an image 415, missing/malformed fields 422.

FastAPI and uvicorn come with the ``serve`` extra (``pip install 'vpeft[serve]'``). No
``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at runtime.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from .inference import ImageError, Prediction, Predictor, decode_image
from .limits import MAX_UPLOAD


def require_serve() -> None:
    """Raise a clear error when the ``serve`` extra is missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart, for file uploads)
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"the HTTP service needs the 'serve' extra ({err.name} is missing): "
            "pip install 'vpeft[serve]'"
        ) from None


@dataclass
class _Job:
    adapter: str
    image: torch.Tensor
    top_k: int
    future: asyncio.Future = field(repr=False)


class BatchQueue:
    """Gathers concurrent requests into mixed-adapter batches."""

    def __init__(self, predictor: Predictor, max_batch: int = 32, max_wait_ms: float = 5.0):
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.requests = 0
        self.batches = 0
        self.largest_batch = 0
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, adapter: str, image: torch.Tensor, top_k: int) -> list[Prediction]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(adapter, image, top_k, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(jobs) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            top_k = max(j.top_k for j in jobs)
            requests = [(j.adapter, j.image) for j in jobs]
            try:
                results = await asyncio.to_thread(self.predictor.predict, requests, top_k)
            except Exception as err:
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            self.requests += len(jobs)
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(jobs))
            for j, result in zip(jobs, results, strict=True):
                if not j.future.done():
                    j.future.set_result(result[: j.top_k])


def create_app(
    predictor: Predictor,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_upload_bytes: int = MAX_UPLOAD,
) -> Any:
    """The FastAPI application serving `predictor`'s adapters."""
    require_serve()
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile

    queue = BatchQueue(predictor, max_batch, max_wait_ms)
    adapters = predictor.describe()
    names = {a["name"] for a in adapters}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        queue.start()
        yield
        await queue.stop()

    app = FastAPI(title="vpeft", lifespan=lifespan)
    app.state.queue = queue

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "adapters": len(names),
            "requests": queue.requests,
            "batches": queue.batches,
            "largest_batch": queue.largest_batch,
        }

    @app.get("/adapters")
    async def list_adapters() -> dict[str, Any]:
        return {"adapters": adapters}

    @app.post("/predict/{adapter}")
    async def predict(
        adapter: str,
        request: Request,
        file: UploadFile = File(..., description="the image"),
        top_k: int = Query(5, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        if adapter not in names:
            raise HTTPException(404, f"unknown adapter {adapter!r}; adapters: {sorted(names)}")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes + 65536:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the file field is empty")
        try:
            image = await asyncio.to_thread(decode_image, data)
        except ImageError as err:
            raise HTTPException(415, f"file is not a supported image: {err}") from None
        results = await queue.submit(adapter, image, top_k)
        return [p.as_dict() for p in results]

    return app
