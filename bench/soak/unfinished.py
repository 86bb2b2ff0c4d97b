"""A call no well-behaved client makes, over raw HTTP/2 (the ``h2``
library on an asyncio socket, TLS with ALPN h2 when the gateway serves TLS):
a Stat without a token that announces one large gRPC request message, sends
as much of it as flow control lets through, and then neither finishes it nor
goes away. A unary call's request is read whole before any handler (the
identity check included) runs, so gRPC buffers what arrives; an Upload
(client streaming) would be refused UNAUTHENTICATED at its headers."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings

from bench.soak.identity import Access

STAT_PATH = "/blobgate.v1.StorageService/Stat"
STALL = 2.0  # seconds without more flow-control credit: the server stopped reading


class UnfinishedMessage:
    """One Stat on its own connection whose request message never ends."""

    def __init__(self, access: Access, announced: int) -> None:
        self._access = access
        self._announced = announced
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.sent = 0  # bytes of the message sent
        self.status: str | None = None  # grpc-status, if the server ended the call
        self.reset = False  # the server reset the stream
        self.closed = False  # the server closed the connection
        self.settled = asyncio.Event()  # sent all the server would take (or failed)

    def outcome(self) -> str:
        """How the call stands: still held open, or how the server ended it."""
        if self.status is not None:
            return f"ended by the server, grpc-status {self.status}"
        if self.reset:
            return "reset by the server"
        if self.closed:
            return "connection closed by the server"
        return "held open"

    async def hold(self, stop: asyncio.Event) -> None:
        """Connect, announce the message, send what the server takes of it,
        then hold the call open until ``stop`` is set."""
        access = self._access
        context = access.ssl_context()
        try:
            self._reader, self._writer = await asyncio.open_connection(
                access.host, access.port, ssl=context,
                server_hostname=access.host if context is not None else None,
            )  # fmt: skip
            self._conn.initiate_connection()
            self._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            scheme = "http" if context is None else "https"
            self._conn.send_headers(1, [
                (":method", "POST"), (":scheme", scheme), (":path", STAT_PATH),
                (":authority", access.address), ("content-type", "application/grpc"),
                ("te", "trailers"),
            ])  # fmt: skip
            await self._flush()
            await self._send(struct.pack(">BI", 0, self._announced), 5)
            await self._send(b"", self._announced - 1)  # one byte short, whatever happens
            self.settled.set()
            while not stop.is_set() and not self._over():
                await self._pump(0.5)
        finally:
            self.settled.set()
            if self._writer is not None:
                self._writer.transport.abort()

    def _over(self) -> bool:
        return self.status is not None or self.reset or self.closed

    async def _flush(self) -> None:
        assert self._writer is not None
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _send(self, data: bytes, count: int) -> None:
        """Send ``count`` bytes (``data``, or zeros if empty) within the
        flow-control windows; stop when the server gives no more credit for
        STALL seconds (it holds what it has)."""
        left = count
        while left and not self._over():
            window = self._conn.local_flow_control_window(1)
            window = min(window, self._conn.max_outbound_frame_size)
            if window <= 0:
                if not await self._pump(STALL):
                    return
                continue
            size = min(window, left)
            piece = data[count - left : count - left + size] if data else bytes(size)
            self._conn.send_data(1, piece)
            left -= size
            self.sent += size
            await self._flush()

    async def _pump(self, within: float) -> bool:
        """Handle one batch of frames; False if none came within ``within``."""
        assert self._reader is not None
        try:
            raw = await asyncio.wait_for(self._reader.read(65536), within)
        except TimeoutError:
            return False
        except OSError:  # reset, or a TLS error
            raw = b""
        if not raw:
            self.closed = True
            return False
        for event in self._conn.receive_data(raw):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers = {_text(k): _text(v) for k, v in event.headers or ()}
                if "grpc-status" in headers:
                    self.status = headers["grpc-status"]
            elif isinstance(event, h2.events.StreamReset):
                self.reset = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
        with contextlib.suppress(ConnectionError):
            await self._flush()
        return True


def _text(value: str | bytes) -> str:
    """A header name or value (h2 decodes them to str with header_encoding)."""
    return value.decode() if isinstance(value, bytes) else value
