"""A live duplex server on loopback for tests: its own thread and event loop."""

from __future__ import annotations

import asyncio
import threading

from server.app import DuplexServer


class LiveServer:
    """A DuplexServer on a background thread with its own event loop."""

    def __init__(self, server: DuplexServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(120), "server did not start"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
