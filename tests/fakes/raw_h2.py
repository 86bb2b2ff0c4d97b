"""A raw HTTP/2 gRPC client (the ``h2`` library over an asyncio socket), for
what no well-behaved gRPC client sends: messages over the limit, frames cut
short, bad flags, resets and dropped connections at chosen points."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def grpc_frame(message: bytes, *, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message."""
    return struct.pack(">BI", int(compressed), len(message)) + message


class RawCall:
    """One gRPC call on its own HTTP/2 connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        *,
        scheme: str = "http",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._port = port
        self._scheme = scheme
        self._headers = list(headers)
        self._reader = reader
        self._writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config=config)
        self.stream_id = 1
        self._settings_received = False
        self.status: str | None = None
        self.message = ""
        self.reset = False
        self.ended = False

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        tls: ssl.SSLContext | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> RawCall:
        """A call to ``path``, over TLS with ``tls`` (its ALPN set to h2
        here), with ``headers`` added to every stream's."""
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=None if tls is None else "localhost"
        )
        call = cls(reader, writer, port, scheme="http" if tls is None else "https", headers=headers)
        call._conn.initiate_connection()
        call._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        call._send_headers(path)
        await call._flush()
        return call

    def _send_headers(self, path: str) -> None:
        self._conn.send_headers(
            self.stream_id,
            [
                (":method", "POST"),
                (":scheme", self._scheme),
                (":path", path),
                (":authority", f"127.0.0.1:{self._port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *self._headers,
            ],
        )

    async def _await_settings(self) -> None:
        while not self._settings_received:
            if not await self._pump(10):
                raise RuntimeError("the server closed before sending its settings")

    async def peer_max_concurrent_streams(self) -> int:
        """The server's SETTINGS_MAX_CONCURRENT_STREAMS for this connection."""
        await self._await_settings()
        return int(self._conn.remote_settings.max_concurrent_streams)

    async def open_stream(self, path: str) -> None:
        """Start another call on the same connection; later sends go to it.
        RuntimeError if the server's concurrent-stream limit is reached."""
        await self._await_settings()
        try:
            self.stream_id = self._conn.get_next_available_stream_id()
            self._send_headers(path)
        except h2.exceptions.TooManyStreamsError as exc:
            raise RuntimeError(f"the server allows no more concurrent streams: {exc}") from None
        self.reset = self.ended = False
        await self._flush()

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _pump(self, within: float) -> bool:
        """Read and handle one batch of frames; False once the socket closed."""
        try:
            raw = await asyncio.wait_for(self._reader.read(65536), within)
        except (TimeoutError, ConnectionError):
            return False
        if not raw:
            return False
        for event in self._conn.receive_data(raw):
            if isinstance(event, h2.events.DataReceived):
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers = dict(event.headers)
                if "grpc-status" in headers:
                    self.status = str(headers["grpc-status"])
                    self.message = str(headers.get("grpc-message", ""))
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream_id:
                self.reset = True
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_received = True
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream_id:
                self.ended = True
        await self._flush()
        return True

    def _finished(self) -> bool:
        return self.reset or self.ended

    async def send(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send ``data`` as DATA frames, within the peer's flow-control
        windows; stop early if the server ends the stream."""
        view = memoryview(data)
        while view and not self._finished():
            window = min(
                self._conn.local_flow_control_window(self.stream_id),
                self._conn.max_outbound_frame_size,
            )
            if window <= 0:
                if not await self._pump(10):
                    return
                continue
            piece, view = view[:window], view[window:]
            self._conn.send_data(self.stream_id, bytes(piece), end_stream=end_stream and not view)
            await self._flush()
        if end_stream and not data and not self._finished():
            self._conn.end_stream(self.stream_id)
            await self._flush()

    async def send_messages(self, messages: Sequence[bytes], *, end_stream: bool = True) -> None:
        """Send protobuf-serialised messages, each in its own gRPC frame."""
        for i, message in enumerate(messages):
            last = i == len(messages) - 1
            await self.send(grpc_frame(message), end_stream=end_stream and last)

    async def reset_stream(self) -> None:
        """RST_STREAM with CANCEL, as a client that gives up does."""
        self._conn.reset_stream(self.stream_id, error_code=8)
        await self._flush()
        self.reset = True  # the stream is over; nothing more will come

    async def wait_end(self, within: float = 15.0) -> None:
        """Read until the server ends or resets the stream (or closes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self._finished() and loop.time() < deadline:
            if not await self._pump(max(0.01, deadline - loop.time())):
                return

    def abort(self) -> None:
        """Drop the TCP connection without a word."""
        self._writer.transport.abort()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
