"""`duplex bench --server URL`: the same scenarios against a running `duplex serve`.

Each run is one websocket session (`client.remote.RemoteSession`), driven in
real time; `--sessions N` holds N of them at once, which is how the server's
capacity is measured. The server's memory and CPU time are read from its
`/metrics` (`process_resident_memory_bytes`, `process_cpu_seconds_total`)
before, during and after the runs.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

from benchmarks.runner import SessionFactory
from client.remote import RemoteError, RemoteSession, protocol_for
from duplex.clock import Clock
from duplex.ports import Steps


def session_factory(url: str, token: str | None, policies: Sequence[str]) -> SessionFactory:
    """Sessions on the server at `url`, one per run; checks the policies fit the protocol."""
    protocol_for(url, policies)

    def make(clock: Clock, policy: str) -> Steps:
        return RemoteSession(url, policy=policy, token=token)

    return make


def metrics_url(url: str) -> str:
    """ws://host:port/v1/stream -> http://host:port/metrics"""
    parts = urlparse(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunparse((scheme, parts.netloc, "/metrics", "", "", ""))


def server_metric(url: str, name: str, token: str | None = None) -> float:
    """One unlabelled value from the server's Prometheus metrics."""
    request = urllib.request.Request(metrics_url(url))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            lines = response.read().decode().splitlines()
    except OSError as error:
        raise RemoteError(f"cannot reach the server at {metrics_url(url)}: {error}") from None
    for line in lines:
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise ValueError(f"{metrics_url(url)} reports no {name}")


def server_rss_mb(url: str, token: str | None = None) -> float:
    """The server process's resident memory."""
    return server_metric(url, "process_resident_memory_bytes", token) / 2**20


def server_cpu_s(url: str, token: str | None = None) -> float:
    """CPU seconds the server process has used, all its threads together."""
    return server_metric(url, "process_cpu_seconds_total", token)


class ServerWatch:
    """Samples the server's memory every `interval_s` on a thread (the peak and the
    baseline) and reads its CPU time at the start and the end: how busy the runs kept
    it, in cores."""

    def __init__(self, url: str, token: str | None, interval_s: float = 1.0) -> None:
        self._url, self._token, self._interval = url, token, interval_s
        self._cpu_s, self._started = server_cpu_s(url, token), time.monotonic()
        self.baseline_mb = server_rss_mb(url, token)
        self.peak_mb = self.baseline_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak_mb = max(self.peak_mb, server_rss_mb(self._url, self._token))
            except RemoteError:
                continue  # a busy server may miss a sample

    def stop(self, sessions: int) -> dict[str, Any]:
        """{"memory": MB idle, at peak, per session; "cpu": seconds used, cores busy}."""
        self._stop.set()
        self._thread.join(5)
        used = server_cpu_s(self._url, self._token) - self._cpu_s
        wall = time.monotonic() - self._started
        return {
            "memory": {
                "baseline_mb": round(self.baseline_mb, 1),
                "peak_mb": round(self.peak_mb, 1),
                "per_session_mb": round((self.peak_mb - self.baseline_mb) / max(1, sessions), 1),
            },
            "cpu": {"seconds": round(used, 1), "cores": round(used / wall, 2) if wall else 0.0},
        }
