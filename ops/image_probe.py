"""Run the built image and probe it, as ops/image-test's last step.

Runs inside a network namespace of its own (ops/image-test starts it there):
moto's S3 server and the Consul stand-in (tests/fakes/consul) on 127.0.0.1,
the container on the same loopback (podman's host network), with the
environment compose.yaml gives the gateway. Then: the image's HEALTHCHECK
(``podman healthcheck run``), a put/get/stat/rm round trip with the project's
CLI, compared byte for byte, and ``podman stop`` (SIGTERM) while an upload is
in flight: exit code 0, the upload complete in S3, no multipart upload left,
the instance deregistered from Consul. Any failure exits 1 with one line
saying what failed, after the container's log.

Environment (set by ops/image-test): IMAGE_TEST_PODMAN (podman with the run's
storage flags), IMAGE_TEST_IMAGE, IMAGE_TEST_DIR, IMAGE_TEST_ULIMITS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.consul import PASSING, ConsulAgent, parse_duration  # noqa: E402

PODMAN = os.environ["IMAGE_TEST_PODMAN"]
IMAGE = os.environ["IMAGE_TEST_IMAGE"]
RUN_DIR = Path(os.environ["IMAGE_TEST_DIR"])
ULIMITS = shlex.split(os.environ["IMAGE_TEST_ULIMITS"])
CLI = str(Path(sys.executable).parent / "blobgate")
NAME = "blobgate-image-test"
EXIT_NOT_FOUND = 3  # the CLI's exit code for NOT_FOUND
MiB = 1024 * 1024


class ProbeFailed(Exception):
    """A check that failed; its message says which and why."""


def say(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise ProbeFailed(f"podman {args[0]} exited {done.returncode}: {done.stderr.strip()}")
    return done


def cli(server: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--server", server, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(what: str, condition: Callable[[], bool], within: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise ProbeFailed(f"{what}: not within {within:.0f} s")
        time.sleep(every)


def compose_service() -> dict[str, Any]:
    """compose.yaml's blobgate service: its environment and stop grace period."""
    service: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][
        "blobgate"
    ]
    return service


def image_env() -> dict[str, str]:
    config = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Env}}", IMAGE).stdout
    )
    return dict(item.split("=", 1) for item in config)


def container_env(moto: str, consul: str) -> dict[str, str]:
    """compose.yaml's variables, with the addresses of this run's S3 and Consul."""
    env = {name: str(value) for name, value in compose_service()["environment"].items()}
    for name in ("BLOBGATE_S3_ENDPOINT", "BLOBGATE_S3_PUBLIC_ENDPOINT", "CONSUL_HTTP_ADDR"):
        if name not in env:
            raise ProbeFailed(f"compose.yaml no longer sets {name}: update ops/image_probe.py")
    env["BLOBGATE_S3_ENDPOINT"] = env["BLOBGATE_S3_PUBLIC_ENDPOINT"] = moto
    env["CONSUL_HTTP_ADDR"] = consul
    return env


def running() -> bool:
    state = podman("inspect", "--format", "{{.State.Status}}", NAME, check=False)
    return state.stdout.strip() == "running"


def healthy() -> bool:
    if not running():
        raise ProbeFailed("the container stopped before it was healthy")
    return podman("healthcheck", "run", NAME, check=False, timeout=30).returncode == 0


def check_user() -> None:
    """The server runs unprivileged, with a HOME that exists (useradd's)."""
    script = 'echo "$(id -u) $HOME"; test -d "$HOME" && test -w "$HOME" && echo writable'
    uid, home, *writable = podman("exec", NAME, "sh", "-c", script, check=False).stdout.split()
    if uid == "0":
        raise ProbeFailed("the server runs as root")
    if not writable:
        raise ProbeFailed(f"the server's HOME ({home}) does not exist or is not writable")
    say(f"runs as uid {uid}; its HOME, {home}, exists and is writable")


def round_trip(server: str, s3: Any, bucket: str) -> None:
    data = os.urandom(3 * MiB + 12345)
    sent, got = RUN_DIR / "round-trip.in", RUN_DIR / "round-trip.out"
    sent.write_bytes(data)
    key = "image-test/round-trip.bin"
    steps: list[tuple[str, list[str]]] = [
        ("put", ["put", "--no-progress", str(sent), key]),
        ("get", ["get", key, str(got)]),
        ("stat", ["--json", "stat", key]),
    ]
    for step, args in steps:
        done = cli(server, *args)
        if done.returncode != 0:
            raise ProbeFailed(f"blobgate {step} exited {done.returncode}: {done.stderr.strip()}")
        if step == "stat":
            size = json.loads(done.stdout)["size"]
            if int(size) != len(data):
                raise ProbeFailed(f"stat says {size} bytes, {len(data)} were put")
    if got.read_bytes() != data:
        raise ProbeFailed("get returned other bytes than put sent")
    done = cli(server, "rm", key)
    if done.returncode != 0:
        raise ProbeFailed(f"blobgate rm exited {done.returncode}: {done.stderr.strip()}")
    gone = cli(server, "stat", key)
    if gone.returncode != EXIT_NOT_FOUND:
        raise ProbeFailed(
            f"stat after rm: exit {gone.returncode}, not NOT_FOUND's {EXIT_NOT_FOUND}"
        )
    if s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"]:
        raise ProbeFailed("the object is still in S3 after rm")
    say(f"round trip through the container: put/get/stat/rm of {len(data)} bytes, exact")


def registered(agent: ConsulAgent) -> list[str]:
    return [sid for sid, svc in agent.services().items() if svc["Service"] == "blobgate"]


def stop_during_upload(server: str, s3: Any, bucket: str, agent: ConsulAgent, grace: int) -> None:
    """SIGTERM while a multipart upload is in flight: it completes, exit 0."""
    data = os.urandom(64 * MiB + 7)
    sent = RUN_DIR / "in-flight.in"
    sent.write_bytes(data)
    key = "image-test/in-flight.bin"
    upload = subprocess.Popen(
        [CLI, "--server", server, "put", "--no-progress", str(sent), key],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "a multipart upload in S3 before SIGTERM",
            lambda: bool(s3.list_multipart_uploads(Bucket=bucket).get("Uploads")),
            within=60,
            every=0.05,
        )
        in_flight = upload.poll() is None
        started = time.monotonic()
        podman("stop", "-t", str(grace), NAME, timeout=grace + 30)
        stopped_in = time.monotonic() - started
        _, errors = upload.communicate(timeout=60)
    finally:
        if upload.poll() is None:
            upload.kill()
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", NAME).stdout.strip()
    signal = podman("image", "inspect", "--format", "{{.Config.StopSignal}}", IMAGE).stdout.strip()
    say(
        f"podman stop -t {grace} ({signal or 'SIGTERM'}) with an upload "
        f"{'in flight' if in_flight else 'just finished'}: stopped in {stopped_in:.1f} s, "
        f"exit code {exit_code}"
    )
    if exit_code != "0":
        raise ProbeFailed(f"the server exited {exit_code} on SIGTERM, not 0")
    if upload.returncode != 0:
        raise ProbeFailed(f"the upload in flight at SIGTERM failed: {errors.strip()}")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if hashlib.sha256(body).digest() != hashlib.sha256(data).digest():
        raise ProbeFailed("the object uploaded across SIGTERM differs from what was sent")
    left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if left:
        raise ProbeFailed(f"{len(left)} multipart upload(s) left in S3 after the stop")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    if keys != [key]:
        raise ProbeFailed(f"S3 holds {keys} after the stop, not only {key}")
    if registered(agent):
        raise ProbeFailed("the instance is still registered in Consul after the stop")
    say(
        f"nothing lost: the {len(data)} bytes in S3 exactly, no multipart upload or session "
        "record left, deregistered from Consul"
    )


def probe(moto: str, agent: ConsulAgent) -> None:
    service = compose_service()
    env = container_env(moto, agent.address)
    bucket = env["BLOBGATE_DEFAULT_BUCKET"]
    grace = round(parse_duration(service.get("stop_grace_period", "10s")))  # compose's default
    port = image_env()["BLOBGATE_LISTEN"].rsplit(":", 1)[1]
    server = f"127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )

    podman("rm", "--force", "--ignore", NAME)
    args = ["run", "--detach", "--name", NAME, "--network", "host", *ULIMITS]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    started = time.monotonic()
    podman(*args, IMAGE)
    wait_for("the HEALTHCHECK (podman healthcheck run) passing", healthy, within=60)
    say(f"HEALTHCHECK passed {time.monotonic() - started:.1f} s after the start")
    check_user()
    wait_for(
        "the instance registered in Consul with its gRPC check passing",
        lambda: any(agent.check_status(sid) == PASSING for sid in registered(agent)),
        within=30,
    )
    say("registered in Consul, the agent's gRPC check on the container passing")
    round_trip(server, s3, bucket)
    stop_during_upload(server, s3, bucket, agent, grace)


def main() -> int:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's line per request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    agent = ConsulAgent()
    agent.start()
    try:
        host, port = moto.get_host_and_port()
        probe(f"http://{host}:{port}", agent)
        return 0
    except Exception as failure:
        log = podman("logs", "--tail", "40", NAME, check=False)
        print(f"The container's log:\n{log.stdout}{log.stderr}", file=sys.stderr)
        if not isinstance(failure, ProbeFailed | subprocess.TimeoutExpired):
            raise
        print(f"image-test: FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        podman("rm", "--force", "--ignore", NAME, check=False)
        for name in ("round-trip.in", "round-trip.out", "in-flight.in"):
            (RUN_DIR / name).unlink(missing_ok=True)
        agent.stop()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
