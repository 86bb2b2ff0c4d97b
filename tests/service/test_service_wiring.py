"""How the StorageService is put on the server: every RPC registered, and
Download's hand-encoded data messages equal to what protobuf would write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from blobgate.client.wire import UPLOAD_ACCEPTED_KEY
from blobgate.server.rpc.codecs import add_to_server, encoded_data_message, set_timestamp
from blobgate.server.rpc.handlers import StorageServicer
from blobgate.v1 import storage_pb2 as pb


@pytest.mark.parametrize(
    "pieces",
    [[b""], [b"a"], [b"ab", b"c"], [b"x" * 127], [b"x" * 128], [b"y" * 70000, b"z" * 1048576]],
)
def test_encoded_data_message_parses_as_protobuf(pieces: list[bytes]) -> None:
    encoded = encoded_data_message(pieces)
    assert encoded == pb.DownloadResponse(data=b"".join(pieces)).SerializeToString()
    assert pb.DownloadResponse.FromString(encoded).data == b"".join(pieces)


class _RecordingServer:
    def __init__(self) -> None:
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        assert service == "blobgate.v1.StorageService"
        self.registered = handlers


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 12, 7, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 12, 7, 3, 4, 5, 999999),  # naive: UTC
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
        datetime(2026, 1, 1, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_set_timestamp_is_protobufs_from_datetime(when: datetime) -> None:
    expected, got = Timestamp(), Timestamp()
    expected.FromDatetime(when)
    set_timestamp(got, when)
    assert (got.seconds, got.nanos) == (expected.seconds, expected.nanos)


def test_every_rpc_is_registered_with_its_streaming_kind() -> None:
    server = _RecordingServer()
    add_to_server(StorageServicer.__new__(StorageServicer), server)  # type: ignore[arg-type]
    methods = pb.DESCRIPTOR.services_by_name["StorageService"].methods
    assert set(server.registered) == {m.name for m in methods}
    for method in methods:
        handler = server.registered[method.name]
        assert handler.request_streaming == method.client_streaming, method.name
        assert handler.response_streaming == method.server_streaming, method.name


async def test_upload_accepts_a_good_spec_in_initial_metadata(stub: Any) -> None:
    call = stub.Upload(timeout=20)
    await call.write(pb.UploadRequest(spec=pb.UploadSpec(key="accepted.txt")))
    metadata = dict(await call.initial_metadata())
    assert metadata.get(UPLOAD_ACCEPTED_KEY) == "accepted"
    await call.write(pb.UploadRequest(data=b"abc"))
    await call.done_writing()
    assert (await call).object.size == 3


async def test_upload_refusing_a_spec_sends_no_acceptance(stub: Any) -> None:
    call = stub.Upload(timeout=20)
    await call.write(pb.UploadRequest(spec=pb.UploadSpec(key="/leading-slash")))
    metadata = dict(await call.initial_metadata() or ())
    assert UPLOAD_ACCEPTED_KEY not in metadata
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "leading slash" in (refused.value.details() or "")
