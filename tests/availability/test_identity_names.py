"""Names that cannot be confused.

A gateway in mTLS mode (the in-memory store; certificates of one trusted
CA) with a policy naming a SPIFFE ID, a DNS SAN (``dns:``) and a CN
(``cn:``): a certificate shaped to pass for another kind of name is either
refused (UNAUTHENTICATED, saying what to fix) or named in its own kind, never
given another's rights. Then the policy loader: names no certificate can
have are refused for what they are (a policy file read whole or not at all:
test_policy_file_whole.py).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from blobgate.server.app import Gateway, StartupError, start_gateway
from blobgate.server.core.access_policy import Action, PolicyError, parse_policy
from blobgate.server.core.principal_names import IdentitySource
from blobgate.server.storage.factory import memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.fakes.pki import CA, Issued
from tests.support import ROOT
from tests.support.gateways import gateway_settings
from tests.support.helpers import upload_stream

Code = grpc.StatusCode
BUCKET = "names-test"
ALICE = "spiffe://example.org/ns/a/sa/alice"
BOB = "spiffe://example.org/ns/b/sa/bob"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
CERTIFICATE = IdentitySource.CERTIFICATE

# One grant per kind of name, each on its own folder.
POLICY = f"""
[[grant]]
principals = ["{ALICE}"]
buckets = ["{BUCKET}"]
prefixes = ["alice/"]
actions = ["read", "write"]

[[grant]]
principals = ["dns:api.example.org"]
buckets = ["{BUCKET}"]
prefixes = ["api/"]
actions = ["read", "write"]

[[grant]]
principals = ["cn:reports-batch"]
buckets = ["{BUCKET}"]
prefixes = ["batch/"]
actions = ["read", "write"]
"""


def backdate(path: Path, seconds: float = 60.0) -> None:
    """Give ``path`` an mtime ``seconds`` old: a file left alone, read at once."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def ca() -> CA:
    return CA()


@asynccontextmanager
async def gateway(tmp_path: Path, ca: CA) -> AsyncIterator[Gateway]:
    """An mTLS gateway with POLICY, and alice/doc, api/doc, batch/doc
    written by their owners."""
    cert_file, key_file = ca.server().write(tmp_path, "server")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    backdate(policy)
    settings = gateway_settings(
        "http://127.0.0.1:9",
        BUCKET,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        tls_client_ca_file=ca.write(tmp_path),
        auth_policy_file=policy,
    )
    started = await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
    try:
        owners = {
            "alice/doc": ca.client("alice", uris=(ALICE,)),
            "api/doc": ca.client("api", dns_names=("api.example.org",)),
            "batch/doc": ca.client("reports-batch"),
        }
        for key, owner in owners.items():
            async with channel(started.port, ca, owner) as ch:
                stub = storage_pb2_grpc.StorageServiceStub(ch)
                await stub.Upload(iter(upload_stream(key, b"secret")), timeout=10)
        yield started
    finally:
        await started.stop(grace=0.5)


def channel(port: int, ca: CA, client: Issued) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=OWN_CONNECTION)


async def outcomes(port: int, ca: CA, client: Issued, keys: tuple[str, ...]) -> dict[str, str]:
    """What a Stat of each key gives ``client``: OK, or the status and, for
    UNAUTHENTICATED, the message."""
    results = {}
    async with channel(port, ca, client) as ch:
        stub = storage_pb2_grpc.StorageServiceStub(ch)
        for key in keys:
            try:
                await stub.Stat(storage_pb2.StatRequest(key=key), timeout=10)
                results[key] = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                assert code is not None
                detail = f": {exc.details()}" if code == Code.UNAUTHENTICATED else ""
                results[key] = f"{code.name}{detail}"
    return results


KEYS = ("alice/doc", "api/doc", "batch/doc")
DENIED = "PERMISSION_DENIED"


def only(allowed: str | None) -> dict[str, str]:
    """``allowed`` OK, the other keys refused."""
    return {key: "OK" if key == allowed else DENIED for key in KEYS}


def unauthenticated(message: str) -> dict[str, str]:
    return dict.fromkeys(KEYS, f"UNAUTHENTICATED: {message}")


async def test_names_spelled_like_another_kind_never_get_its_rights(tmp_path: Path, ca: CA) -> None:
    uri_fix = (
        "present one whose URI SAN is a URI of printable ASCII, at most 1024 characters "
        "(e.g. a SPIFFE ID)"
    )
    shapes = {
        # A CN is cn:..., whatever it looks like.
        "CN spelled like a SPIFFE ID": (ca.client(ALICE), only(None)),
        # A DNS SAN must be a DNS name: no ':' or '/', so never a URI.
        "DNS SAN spelled like a SPIFFE ID": (
            ca.client("x", dns_names=(ALICE,)),
            unauthenticated(
                f"the client certificate's DNS SAN {ALICE!r} is not usable: it is not a DNS "
                "name (letters, digits, '-', '_', dots): present one whose first DNS SAN is "
                "a host name of at most 253 characters"
            ),
        ),
        # A URI SAN that is present but unusable is refused, not passed over for the CN.
        "URI SAN with CR/LF": (
            ca.client("reports-batch", uris=(ALICE + "\r\n",)),
            unauthenticated(
                f"the client certificate's URI SAN {ALICE + chr(13) + chr(10)!r} is not "
                f"usable: it holds control or non-ASCII characters: {uri_fix}"
            ),
        ),
        # gRPC's own summary of the certificate cuts a name at a NUL byte.
        "URI SAN with a NUL": (
            ca.client("reports-batch", uris=(ALICE + "\x00x",)),
            unauthenticated(
                f"the client certificate's URI SAN {ALICE + chr(0) + 'x'!r} is not "
                f"usable: it holds control or non-ASCII characters: {uri_fix}"
            ),
        ),
        # The schemes dns: and cn: are the other kinds' spellings.
        "URI SAN spelled dns:": (
            ca.client("c", uris=("dns:api.example.org",)),
            unauthenticated(
                "the client certificate's URI SAN 'dns:api.example.org' is not usable: its "
                f"scheme 'dns' is kept for DNS SAN and CN names: {uri_fix}"
            ),
        ),
        "URI SAN spelled CN:": (
            ca.client("c", uris=("CN:reports-batch",)),
            unauthenticated(
                "the client certificate's URI SAN 'CN:reports-batch' is not usable: its "
                f"scheme 'CN' is kept for DNS SAN and CN names: {uri_fix}"
            ),
        ),
        # Which of two SPIFFE IDs is the caller? Neither.
        "two URI SANs": (
            ca.client("c", uris=(BOB, ALICE)),
            unauthenticated(
                "the client certificate has 2 URI SANs: present one with a single URI SAN "
                "(its SPIFFE ID), so that it names one principal"
            ),
        ),
        # A CN with a line break in it is no name for a log line or a rule.
        "CN with a line feed": (
            ca.client("reports-batch\n"),
            unauthenticated(
                "the client certificate's subject CN 'reports-batch\\n' is not usable: it is "
                "empty or holds control characters: present one whose CN is printable, at "
                "most 64 characters"
            ),
        ),
    }
    async with gateway(tmp_path, ca) as started:
        seen = {
            name: await outcomes(started.port, ca, cert, KEYS) for name, (cert, _) in shapes.items()
        }
    assert seen == {name: expected for name, (_, expected) in shapes.items()}


async def test_precedence_uri_then_dns_then_cn_each_in_its_own_spelling(
    tmp_path: Path, ca: CA
) -> None:
    shapes = {
        "URI SAN plus CN": (ca.client("reports-batch", uris=(ALICE,)), only("alice/doc")),
        "URI, DNS SANs and CN": (
            ca.client("reports-batch", uris=(ALICE,), dns_names=("api.example.org",)),
            only("alice/doc"),
        ),
        # The first DNS SAN, in lower case (DNS names know no case).
        "two DNS SANs and a CN": (
            ca.client("reports-batch", dns_names=("API.Example.org", "other.example")),
            only("api/doc"),
        ),
        "the granted DNS name second": (
            ca.client("c", dns_names=("other.example", "api.example.org")),
            only(None),
        ),
        "CN only": (ca.client("reports-batch"), only("batch/doc")),
        # cn:api.example.org is not dns:api.example.org.
        "CN spelled like the granted DNS name": (ca.client("api.example.org"), only(None)),
    }
    async with gateway(tmp_path, ca) as started:
        seen = {
            name: await outcomes(started.port, ca, cert, KEYS) for name, (cert, _) in shapes.items()
        }
    assert seen == {name: expected for name, (_, expected) in shapes.items()}


# --- the policy's names -------------------------------------------------------


def grant(principal: str) -> str:
    return (
        f'[[grant]]\nprincipals = ["{principal}"]\nbuckets = ["b"]\nprefixes = [""]\n'
        'actions = ["read"]\n'
    )


@pytest.mark.parametrize(
    ("principal", "message"),
    [
        (
            "api.example.org",
            "grant[0].principals: 'api.example.org' names no kind of certificate name: write "
            "'dns:api.example.org' or 'cn:api.example.org'",
        ),
        (
            "admin@example.com",
            "grant[0].principals: 'admin@example.com' names no kind of certificate name: "
            "write 'cn:admin@example.com'",
        ),
        (
            "dns:spiffe://example.org/x",
            "grant[0].principals: 'dns:spiffe://example.org/x': after 'dns:', it is not a DNS "
            "name (letters, digits, '-', '_', dots)",
        ),
        ("cn:" + "x" * 65, "after 'cn:', it is longer than 64 characters"),
        (
            "DNS:api.example.org",
            "grant[0].principals: 'DNS:api.example.org' cannot be a URI SAN: its scheme 'DNS' "
            "is kept for DNS SAN and CN names",
        ),
        (
            "spiffe://example.org/a b",
            "grant[0].principals: 'spiffe://example.org/a b' cannot be a URI SAN: it is not a "
            "URI (scheme:rest, URI characters only)",
        ),
    ],
)
def test_a_name_no_certificate_can_have_is_refused_saying_how_to_write_it(
    principal: str, message: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(grant(principal), CERTIFICATE)
    assert message in str(caught.value)
    # A JWT's sub is any printable string: the same name is fine there.
    assert parse_policy(grant(principal), IdentitySource.JWT).allows(
        principal, Action.READ, "b", "k"
    )


def test_each_kind_of_name_matches_only_its_own_spelling() -> None:
    names = ["*", ALICE, "dns:API.example.org", "cn:reports-batch", "cn:Reports Batch"]
    rules = [parse_policy(grant(name), CERTIFICATE) for name in names]
    assert [r.grants[0].principals for r in rules] == [
        frozenset({"*"}),
        frozenset({ALICE}),
        frozenset({"dns:api.example.org"}),  # DNS names in lower case, as certificates give them
        frozenset({"cn:reports-batch"}),
        frozenset({"cn:Reports Batch"}),
    ]
    assert not rules[2].allows("cn:api.example.org", Action.READ, "b", "k")
    assert not rules[3].allows("dns:reports-batch", Action.READ, "b", "k")


def test_the_documented_policies_load_in_their_mode() -> None:
    """docs/security.md's policies: the mTLS one with certificate names, the
    JWT one with subjects that are no certificate name."""
    text = (ROOT / "docs" / "security.md").read_text()
    policies = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[grant]]" in b]
    mtls, jwt_subjects = policies
    assert len(parse_policy(mtls, CERTIFICATE).grants) == mtls.count("[[grant]]")
    assert len(parse_policy(jwt_subjects, IdentitySource.JWT).grants) == 2
    with pytest.raises(PolicyError, match="names no kind of certificate name"):
        parse_policy(jwt_subjects, CERTIFICATE)


async def test_a_bare_name_stops_start_up_and_is_refused_on_reload(
    tmp_path: Path, ca: CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="blobgate.server.core.access_policy")
    fix = "'reports-batch' names no kind of certificate name: write 'dns:reports-batch' or "
    async with gateway(tmp_path, ca) as started:
        policy = started.storage.policy
        path = tmp_path / "policy.toml"
        path.write_text(POLICY.replace("cn:reports-batch", "reports-batch"))
        backdate(path, 30)
        assert policy.reload() is False
        assert any(fix in record.getMessage() for record in caplog.records)
        # The rights in force stay: the CN still reads batch/.
        assert await outcomes(started.port, ca, ca.client("reports-batch"), KEYS) == only(
            "batch/doc"
        )
        settings = started.settings
    with pytest.raises(StartupError, match=fix):
        await start_gateway(settings, backend=MemoryBackend(memory_config(settings)))
