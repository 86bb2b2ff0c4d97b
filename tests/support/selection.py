"""Which tests ``make test-fast`` (``pytest -m "not slow and not s3_server"``)
leaves out, as markers set at collection (a plugin of tests/conftest.py):

- ``slow``: the test starts a process (blobgate-server, blobgate-probe, the
  CLI, LocalStack, Node, a second network host). Set by the fixtures it uses,
  its folder, a both_s3s run on LocalStack, or by hand
  (``@pytest.mark.slow``); a test that starts a process without it fails, so
  the fast subset never starts one.
- ``s3_server``: the test talks to an S3 server (moto's or LocalStack's):
  it asks for one, or for a gateway that is not on the in-memory store.

What is left is the unit tests and the runs on the in-memory store."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.support import ROOT

# The fixtures that start a process, and the folders whose every test does.
SLOW_FIXTURES = {"processes", "localstack_endpoint", "node_client", "second_host"}
SLOW_FOLDERS = {"cli", "bench"}
# The fixtures that are an S3 server or a client of one; s3_endpoint (and
# the gateway on it) counts unless the test runs on the in-memory store.
S3_FIXTURES = {"moto_endpoint", "localstack_endpoint", "s3"}


def _run_kind(item: pytest.Item) -> str | None:
    """The store kind of a both_s3s run (``memory``, ``moto``, ``localstack``)."""
    callspec = getattr(item, "callspec", None)
    kind = None if callspec is None else callspec.params.get("store_kind")
    return None if kind is None else str(kind)


def _talks_to_s3(item: pytest.Item, fixtures: set[str]) -> bool:
    if fixtures & S3_FIXTURES:
        return True
    run = _run_kind(item)
    if run is not None:  # the contract suites' stores ask for s3_endpoint on S3 runs only
        return run != "memory"
    marker = item.get_closest_marker("store")
    on_memory = marker is not None and marker.args == ("memory",)
    return "s3_endpoint" in fixtures and not on_memory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = ROOT / "tests"
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        folder = item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""
        on_localstack = _run_kind(item) == "localstack"
        if on_localstack or folder in SLOW_FOLDERS or fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if _talks_to_s3(item, fixtures):
            item.add_marker(pytest.mark.s3_server)


# Processes the running test started, from Python's audit events (subprocess,
# fork, spawn): the fast subset's promise is checked, not kept by hand.
_started: list[str] = []
_SPAWNS = {"subprocess.Popen", "os.posix_spawn", "os.system", "os.fork", "os.forkpty"}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _SPAWNS:
        _started.append(f"{event} {args[1] if event == 'subprocess.Popen' else args}")


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_audit)  # for the rest of the process: it only appends to a list


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _started.clear()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """A test not marked slow fails if it (or its fixtures) started a process."""
    if _started and item.get_closest_marker("slow") is None:
        started = _started[0]
        _started.clear()
        pytest.fail(f"started a process without the slow marker: {started}", pytrace=False)
