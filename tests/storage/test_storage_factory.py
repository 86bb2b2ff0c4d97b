"""The storage factory builds one stack whichever backend it is given, and
asks a backend only through ``protocols.Backend``: the same decorators in the
same order over S3 and in-memory, and over a backend it has never heard of,
whose quota markers, instrumentation and sweep tally it still uses."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blobgate.server.core.errors import ResourceExhausted
from blobgate.server.core.identity import acting_as
from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.core.settings import Settings
from blobgate.server.storage.factory import Storage, build_storage, memory_config
from blobgate.server.storage.memory.backend import MemoryBackend
from blobgate.server.storage.protocols import (
    EXPIRED_SESSION,
    Backend,
    ObjectRef,
    PutOptions,
    SessionSpec,
)
from blobgate.server.storage.quotas import SESSION_MARKERS, principal_prefix
from blobgate.server.storage.s3.backend import S3Backend
from tests.support.gateways import gateway_settings

STORAGE = Path(__file__).resolve().parents[2] / "server" / "blobgate" / "server" / "storage"

OBJECT_STACK = ["AuthorizedStore", "MeteredStore", "StreamLimitedStore", "StreamLimitedStore"]
SESSION_STACK = [
    "AuthorizedSessions",
    "MeteredSessions",
    "StreamLimitedSessions",
    "SessionQuota",
    "StreamLimitedSessions",
]


def _stack(store: object) -> tuple[list[str], object]:
    """The decorators' class names, outermost first, and the store under
    them. Decorators keep what they wrap in ``_inner`` (storage.decorators):
    read here only to see the shape of the stack."""
    names: list[str] = []
    while hasattr(store, "_inner"):
        names.append(type(store).__name__)
        store = store._inner
    return names, store


def _assert_the_stack(storage: Storage, backend: Backend) -> None:
    objects, innermost_objects = _stack(storage.objects)
    sessions, innermost_sessions = _stack(storage.sessions)
    assert objects == OBJECT_STACK
    assert sessions == SESSION_STACK
    assert innermost_objects is backend.objects
    assert innermost_sessions is backend.sessions
    assert storage.backend is backend


class ForeignBackend:
    """A backend the factory does not know: the in-memory one behind a class
    of its own, keeping what is asked of its capabilities."""

    def __init__(self, settings: Settings) -> None:
        self._memory = MemoryBackend(memory_config(settings))
        self.objects = self._memory.objects
        self.sessions = self._memory.sessions
        self.records = self._memory.records
        self.sweep_tally: Counter[str] = Counter()
        self.instrumented: list[CollectorRegistry] = []

    def instrument(self, registry: CollectorRegistry) -> None:
        self.instrumented.append(registry)

    async def start(self) -> None:
        await self._memory.start()

    async def close(self) -> None:
        await self._memory.close()

    async def ensure_buckets(self, buckets: list[str]) -> None:
        await self._memory.ensure_buckets(buckets)

    async def reconcile_lifecycle(
        self, buckets: list[str], expiry_days: Sequence[int], rules: Sequence[PrefixRule]
    ) -> None:
        await self._memory.reconcile_lifecycle(buckets, expiry_days, rules)

    async def check(self) -> None:
        await self._memory.check()


def test_the_same_stack_over_s3_and_in_memory(moto_endpoint: str, bucket: str) -> None:
    settings = gateway_settings(moto_endpoint, bucket)
    s3 = build_storage(settings, registry=CollectorRegistry())  # the factory's own choice
    assert isinstance(s3.backend, S3Backend)
    _assert_the_stack(s3, s3.backend)
    # Instrumented through the protocol: every S3 request will be measured.
    assert s3.backend.connection.instrumentation is not None
    memory_backend = MemoryBackend(memory_config(settings))
    memory = build_storage(settings, backend=memory_backend, registry=CollectorRegistry())
    _assert_the_stack(memory, memory_backend)


async def test_a_backend_the_factory_does_not_know_gets_the_whole_stack(
    moto_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(moto_endpoint, bucket, max_sessions_per_principal=1)
    backend = ForeignBackend(settings)
    registry = CollectorRegistry()
    storage = build_storage(settings, backend=backend, registry=registry)
    _assert_the_stack(storage, backend)
    assert backend.instrumented == [registry]
    await backend.ensure_buckets([bucket])

    # The session quota keeps its markers among the backend's records.
    spec = SessionSpec(ObjectRef(bucket, "k"), PutOptions("application/octet-stream", {}))
    with acting_as("alice"):
        await storage.sessions.start_session(spec)
        with pytest.raises(ResourceExhausted, match="resumable upload sessions open"):
            await storage.sessions.start_session(spec)
    markers = await backend.records.list(bucket, SESSION_MARKERS, 10)
    assert [entry.key.startswith(principal_prefix("alice")) for entry in markers] == [True]

    # The sweep metrics read the backend's tally.
    backend.sweep_tally[EXPIRED_SESSION] += 2
    await storage.sessions.sweep([bucket])
    expired = registry.get_sample_value("blobgate_sessions_ended_total", {"reason": "expired"})
    assert expired == 2


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The modules ``path`` imports from, and the names it imports."""
    modules: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules, names


BACKENDS = ("blobgate.server.storage.s3", "blobgate.server.storage.memory")


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(STORAGE.glob("*.py")) if p.name != "factory.py"],
    ids=lambda p: p.name,
)
def test_only_the_factory_names_a_backend(path: Path) -> None:
    """The decorators and protocols import no backend package: what they
    need of one comes through ``protocols.Backend``."""
    modules, _ = _imports(path)
    assert [m for m in modules if m.startswith(BACKENDS)] == []


@pytest.mark.parametrize("folder", ["s3", "memory"])
def test_a_backend_takes_its_own_config(folder: str) -> None:
    """Neither backend imports the other, nor the gateway's whole settings."""
    other = next(b for b in BACKENDS if not b.endswith(f".{folder}"))
    paths = sorted((STORAGE / folder).glob("*.py"))
    assert len(paths) > 3
    for path in paths:
        modules, names = _imports(path)
        assert not any(m.startswith(other) for m in modules), path
        assert "Settings" not in names, path
