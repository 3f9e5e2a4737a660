"""A TCP relay for tests and benchmarks: adds one-way delay, cuts connections, black-holes.

    relay = Relay(("127.0.0.1", 7101), delay=0.010)   # 10 ms each way: 20 ms round trip
    port = relay.start()                              # listens on 127.0.0.1:port
    relay.cut(outage=2.0)   # reset every connection; hold new ones silent for 2 s
    relay.stop()            # close everything (new connections are refused)

Used where the kernel has no `tc netem` (the sch_netem module is missing on our
CI machines) and to drop connections on purpose. Bytes are forwarded unchanged
(TLS passes through); each direction is delayed by `delay` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time


class Relay:
    """Forward connections made to `listen` to `target`, delayed, and cuttable."""

    def __init__(self, target: tuple[str, int], delay: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.target, self.delay, self.listen = target, delay, listen
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._silent_until = 0.0
        self.cuts = 0
        self.connections = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="relay")

    def start(self) -> int:
        """Start listening; return the port."""
        self._thread.start()
        return self._call(self._start())

    def cut(self, outage: float = 0.0) -> None:
        """Reset every open connection (RST); hold new ones silent for `outage` seconds."""
        self._silent_until = time.monotonic() + outage
        self.cuts += 1
        self._call(self._reset_all())

    def stop(self) -> None:
        """Close the listener and every connection, then the relay's thread."""
        if self._thread.is_alive():
            self._call(self._stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        return self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()

    async def _reset_all(self) -> None:
        for w in list(self._writers):
            sock = w.get_extra_info("socket")
            if sock is not None:  # linger 0: close sends RST, like a crashed host
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            w.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        silent = self._silent_until - time.monotonic()
        if silent > 0:  # a black hole: connected, but nothing gets through
            await asyncio.sleep(silent)
            await self._close(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            await self._close(writer)
            return
        self.connections += 1
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)
        await self._close(writer)
        await self._close(up_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(1 << 20)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.close()
