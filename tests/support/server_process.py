"""blobgate-server as a real subprocess, for tests of the process itself:
signals, logs, exit codes, and instances killed under load."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from tests.support import ROOT

# The checkout's portions of the blobgate namespace, for child processes.
SOURCE_PATH = os.pathsep.join(str(ROOT / part) for part in ("protos", "server", "client", "."))
SERVER = [sys.executable, "-m", "blobgate.server.main"]
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """A blobgate-server subprocess and the lines it logged."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[bytes] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            *SERVER,
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": SOURCE_PATH,
                **(env or {}),
            },
        )
        return cls(proc)

    @classmethod
    async def gateway(
        cls, moto_endpoint: str, bucket: str, *args: str, env: dict[str, str] | None = None
    ) -> ServerProcess:
        """``start`` a gateway on a free loopback port in front of the S3 at
        ``moto_endpoint``, ``bucket`` its default bucket (created), with
        ``args`` added and ``env`` in its environment."""
        return await cls.start(
            "--listen", "127.0.0.1:0",
            "--s3-endpoint", moto_endpoint,
            "--default-bucket", bucket,
            "--create-buckets",
            *args,
            env=env,
        )  # fmt: skip

    async def wait_listening(self, within: float = 30.0) -> int:
        """Read the log until the server says where it listens; its port."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.proc.stderr.readline()
                assert line, b"server exited before listening:\n" + b"".join(self.log)
                self.log.append(line)
                if match := LISTENING.search(line):
                    self._drain = asyncio.create_task(self._read_rest())
                    return int(match.group(1))

    async def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line)

    def text(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    async def kill(self) -> None:
        """SIGKILL (if still running) and wait for the process and its log."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._drain is not None:
            await self._drain
