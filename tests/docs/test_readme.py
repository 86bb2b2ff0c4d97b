"""The docs stay honest: every setting is in the configuration table under
its flag and its variable, every guarantee names tests that exist, every
relative link in README.md and docs/ leads to a file (and heading) in the
repository, nothing in the repository points outside it, every Python
example compiles, and docs/security.md's client examples run as written."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from blobgate.server.app import start_gateway
from blobgate.server.core.access_policy import load_policy
from blobgate.server.core.settings import FILE_ONLY, Settings
from tests.fakes.consul import ConsulAgent
from tests.fakes.pki import CA
from tests.support import ROOT
from tests.support.cli import run_cli
from tests.support.gateways import gateway_settings
from tests.support.helpers import eventually

README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
GUARANTEES = DOCS / "guarantees.md"
# The design folder beside a checkout; spelled in two pieces so that this
# file does not point there itself.
OUTSIDE = ".." + "/shared"


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = [line for line in CONFIGURATION.read_text().splitlines() if line.startswith("| `")]
    for name, field in Settings.model_fields.items():
        if name in FILE_ONLY:  # tables: no flag
            assert any(f"| `{name}` | config file only |" in row for row in rows), name
            continue
        flag = "--" + name.replace("_", "-")
        # Consul's standard variables keep their own names (the field's alias).
        aliases = getattr(field.validation_alias, "choices", [])
        variable = aliases[-1] if aliases else "BLOBGATE_" + name.upper()
        assert any(f"| `{name}` | `{flag}` / `{variable}` |" in row for row in rows), (
            f"docs/configuration.md's table lacks {name}"
        )


def test_every_guarantee_names_tests_that_exist() -> None:
    text = GUARANTEES.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 15
    for row in rows:
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row)
        assert named, f"a guarantee without a test: {row[:60]}"
        for path, test in named:
            tree = ast.parse((ROOT / path).read_text())
            defined = {
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert test in defined, f"docs/guarantees.md names {path}::{test}, which does not exist"


_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"\]\(([^)\s]+)\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def _prose(text: str) -> str:
    """Markdown without code blocks and code spans, where links are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchors(markdown: Path) -> set[str]:
    """The heading anchors GitHub gives a Markdown file."""
    anchors = set()
    for line in _FENCE.sub("", markdown.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
            slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("document", _documents(), ids=lambda path: path.name)
def test_relative_links_resolve(document: Path) -> None:
    text = _prose(document.read_text())
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        name = document.relative_to(ROOT)
        assert resolved.is_relative_to(ROOT), f"{name} links outside the repository: {target}"
        assert resolved.exists(), f"{name} links to {target}, which does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{name} links to {target}: no such heading"


def _repository_files() -> list[Path]:
    """Tracked files, and new ones not ignored: what the next commit can hold."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (an unpacked source archive): every file outside
        # the tools' own folders.
        tools = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        return [p for p in ROOT.rglob("*") if not tools & set(p.relative_to(ROOT).parts)]
    return [ROOT / name for name in listed.decode().split("\0") if name]


@pytest.mark.slow
def test_no_file_points_outside_the_repository() -> None:
    offenders = []
    for path in _repository_files():
        if not path.is_file():  # deleted meanwhile, or a link to a folder
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        if OUTSIDE in data.decode("utf-8", "replace"):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"these files refer to {OUTSIDE}: {offenders}"


def test_the_security_examples_load(tmp_path: Path) -> None:
    """Every TOML example in docs/security.md loads: the policies as
    policies, the rest as the server's settings."""
    text = (DOCS / "security.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    policies = [block for block in blocks if "[[grant]]" in block]
    settings = [block for block in blocks if "[[grant]]" not in block]
    assert policies and settings
    for number, block in enumerate(policies):
        path = tmp_path / f"policy{number}.toml"
        path.write_text(block)
        rules, _ = load_policy(path)
        assert len(rules.grants) == block.count("[[grant]]")
    for block in settings:
        Settings(**tomllib.loads(block))


def _blocks(document: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", document.read_text(), re.S | re.M)


@pytest.mark.parametrize("document", _documents(), ids=lambda path: path.name)
def test_python_examples_compile(document: Path) -> None:
    """Every Python example is a program as written: no top-level await."""
    for number, block in enumerate(_blocks(document, "python")):
        compile(block, f"{document.name}, python example {number}", "exec")


@pytest.mark.slow
async def test_the_security_client_examples_run(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """docs/security.md's Python and CLI callers, run as written against the
    configuration it describes: an mTLS server whose SVID carries
    blobgate.service.consul beside its SPIFFE ID, found through Consul.
    Only the /run/spire/ paths become this test's files."""
    text = (DOCS / "security.md").read_text()
    [python] = [b for b in _blocks(DOCS / "security.md", "python") if "consul://" in b]
    [command] = [b for b in _blocks(DOCS / "security.md", "sh") if "consul://" in b]
    spire = tmp_path / "spire"
    spire.mkdir()
    ca = CA("example.org bundle")
    ca.write(spire, "bundle")
    (spire / "bundle.crt").rename(spire / "bundle.pem")
    workload = ca.svid("spiffe://example.org/ns/reports/sa/generator")
    (spire / "svid.pem").write_bytes(workload.cert)
    (spire / "svid_key.pem").write_bytes(workload.key)
    server_cert, server_key = ca.svid(
        "spiffe://example.org/ns/storage/sa/blobgate", dns_names=("blobgate.service.consul",)
    ).write(tmp_path, "server")
    assert "-dns blobgate.service.consul" in text  # the documented entry gives that name
    (tmp_path / "report.csv").write_text("day,total\n2026-12-01,42\n")

    agent_identity = ca.client("consul-agent")
    with ConsulAgent(
        min_check_interval=0.1,
        tls_ca=ca.pem,
        tls_cert=agent_identity.cert,
        tls_key=agent_identity.key,
    ) as agent:
        settings = gateway_settings(
            moto_endpoint,
            bucket,
            tls_cert_file=server_cert,
            tls_key_file=server_key,
            tls_client_ca_file=spire / "bundle.pem",
            consul=True,
            consul_http_addr=agent.address,
            check_interval=0.2,
            check_tls_server_name="blobgate.service.consul",
        )
        gateway = await start_gateway(settings)
        try:
            assert gateway.registration is not None
            service_id = gateway.registration.service_id

            async def passing() -> None:
                assert agent.check_status(service_id) == "passing"

            await eventually(passing, within=15)
            env = {"CONSUL_HTTP_ADDR": agent.address}
            here = f"{spire}/"
            program = python.replace("/run/spire/", here)
            ran = await run_cli("-c", program, program=(sys.executable,), cwd=tmp_path, env=env)
            assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
            scripts = str(Path(sys.executable).parent)
            listed = await run_cli(
                "-c",
                command.replace("/run/spire/", here),
                program=("bash",),
                cwd=tmp_path,
                env={**env, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"},
            )
            assert (listed.returncode, listed.stderr) == (0, ""), listed.stderr
            assert listed.text == "daily/2026-12-01.csv\n"
        finally:
            await gateway.stop(grace=0.5)


@pytest.mark.slow
async def test_the_readme_undo_example_runs(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """README.md's "Undo a mistake", run as written against a gateway set
    up as --dev sets it up (a versioned bucket): the restore brings the
    first draft back."""
    [example] = [b for b in _blocks(README, "sh") if "blobgate restore" in b]
    gateway = await start_gateway(gateway_settings(moto_endpoint, bucket, bucket_versioning=True))
    try:
        scripts = str(Path(sys.executable).parent)
        ran = await run_cli(
            "-ec",
            example,
            program=("bash",),
            cwd=tmp_path,
            env={
                "BLOBGATE_SERVER": f"127.0.0.1:{gateway.port}",
                "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}",
            },
        )
    finally:
        await gateway.stop(grace=0.5)
    assert (ran.returncode, ran.stderr) == (0, ""), ran.stderr
    out = ran.text
    assert out.count("first draft\n") == 2, out  # cat of the old version, then of the restored
    assert "rm notes.txt: deleted (delete marker" in out
    last_listing = out.rstrip().splitlines()[-4:]  # three versions and the marker
    current = [line for line in last_listing if line.startswith("* ")]
    assert len(current) == 1 and current[0].endswith("(delete marker)"), last_listing
