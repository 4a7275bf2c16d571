"""Dynamic batching for the classifier API: concurrent requests become one model call.

Each request hands its texts to the ``Batcher`` and waits: a thread blocks in ``submit``; the
app's async endpoints queue them with ``submit_future`` and await the result on the event loop. A worker thread (``workers``
of them, default 1) takes the first waiting request, gathers whatever else is waiting (and, while
the server is under concurrent load, whatever arrives within ``max_wait_ms``) up to ``max_size``
texts, and runs them as one ``predict_proba`` call (the predictors sort a call's texts by length
and run them in length-sorted batches, so padding stays small). The rows go back to their requests.
One worker gathers the most per call: on the quiet 2-core AMD EPYC VM, ONNX int8 at 32 clients
served 389 requests/s with 1 worker, 287 with 2 and 324 with 8 (httpx client; 471 / 425 / 382 with
wrk), because more workers split the queue into smaller calls that compete for the same two cores
(docs/results.md, issue 20). The price: while a large call (a 256-text batch request) runs in
the worker, requests that arrive wait for it; raise ``workers`` where such calls are common.

Latency: a lone request is never held back: the gather window opens only when the previous
gathered call served more than one request, and through ``submit`` a request that finds no call
running and none waiting runs at once in its own thread (no hand-off); under load
the model runs fewer, larger calls, which is where the throughput comes from (ONNX Runtime
spends a large part of a one-text call on per-call overhead).

Errors stay per request: when a gathered call fails, every request in it is run again on its
own, so one bad request gets its own error and the others their answers.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

MODES = ("auto", "on", "off")


@dataclass
class BatchingConfig:
    mode: str = field(default="auto", metadata={"help": "auto (on for the ONNX backends), on or off"})
    max_wait_ms: float = field(default=2.0, metadata={"help": "under concurrent load, wait at most this long for more requests to join a call"})
    max_size: int = field(default=64, metadata={"help": "texts per gathered model call (a larger single request still runs whole)"})
    workers: int = field(default=1, metadata={"help": "gathered calls in flight at once (thread-safe predictors only; others get 1); 1 gathers the most per call"})

    def enabled_for(self, backend: str | None) -> bool:
        if self.mode not in MODES:
            raise ValueError(f"batching mode {self.mode!r}: valid are {', '.join(MODES)}")
        if self.mode == "auto":
            return str(backend or "").startswith("onnx")
        return self.mode == "on"


@dataclass
class _Request:
    texts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """Gathers concurrent ``submit(texts)`` calls into calls of ``fn(texts) -> (N, C)``."""

    def __init__(self, fn: Callable[[list[str]], np.ndarray], max_size: int = 64, max_wait_ms: float = 2.0,
                 workers: int = 1):
        self.fn, self.max_size, self.max_wait = fn, max(1, max_size), max(0.0, max_wait_ms) / 1000
        self.workers = max(1, workers)
        self.calls = 0  # model calls made (for tests and /healthz)
        self.requests = 0  # requests answered
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._loaded = False  # the last call served more than one request
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._active = 0  # calls running (the workers' and the direct ones)

    def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities (len(texts), C) for these texts, computed together with whatever other
        requests are waiting; the exception of this request's own call if it fails. When no call
        is running and nothing waits, the request runs at once in this thread (no hand-off)."""
        with self._count_lock:
            idle = self._active == 0 and self._queue.empty()
            if idle:
                self._active += 1
                self.calls += 1
                self.requests += 1
        if idle:
            try:
                return self._checked(list(texts))
            finally:
                with self._count_lock:
                    self._active -= 1
        return self.submit_future(texts).result()

    def submit_future(self, texts: list[str]) -> Future:
        """Queue these texts for the worker and return at once: the future's result is their
        probabilities (len(texts), C) or the exception of their call. For callers that must not
        block (the app's async endpoints await it with ``asyncio.wrap_future``), so no request
        holds a thread while it waits."""
        self._ensure_worker()
        request = _Request(list(texts))
        self._queue.put(request)
        return request.future

    def _checked(self, texts: list[str]) -> np.ndarray:
        probs = np.asarray(self.fn(texts))
        if probs.ndim != 2 or probs.shape[0] != len(texts):
            raise RuntimeError(f"predict_proba returned shape {probs.shape} for {len(texts)} texts")
        return probs

    def _ensure_worker(self) -> None:
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    for i in range(self.workers):
                        t = threading.Thread(target=self._loop, name=f"slimtext-batcher-{i}", daemon=True)
                        t.start()
                        self._threads.append(t)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].texts)
            deadline = time.monotonic() + (self.max_wait if self._loaded else 0.0)
            while size < self.max_size:
                left = deadline - time.monotonic()
                try:
                    request = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(request)
                size += len(request.texts)
            self._loaded = len(batch) > 1
            with self._count_lock:
                self._active += 1
            try:
                self._run(batch)
            finally:
                with self._count_lock:
                    self._active -= 1

    def _run(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        try:
            with self._count_lock:
                self.calls += 1
            probs = self._checked(texts)
        except Exception as e:  # noqa: BLE001 - delivered to the request(s) it belongs to
            if len(batch) == 1:
                with self._count_lock:
                    self.requests += 1
                batch[0].future.set_exception(e)
            else:  # find whose texts failed: each request on its own
                for r in batch:
                    self._run([r])
            return
        start = 0
        with self._count_lock:
            self.requests += len(batch)
        for r in batch:
            r.future.set_result(probs[start:start + len(r.texts)])  # (n_r, C)
            start += len(r.texts)
