"""The embedded default behind ``--dev``: moto's S3 server on loopback, in
this process, so the service runs with no AWS account and no other service.
Its data lives in memory and is lost on exit."""

from __future__ import annotations

from typing import Any

from blobgate.server.core.settings import Settings

DEV_LISTEN = "127.0.0.1:50051"
# moto accepts any credentials; these keep botocore from looking elsewhere.
DEV_CREDENTIALS = {
    "aws_access_key_id": "blobgate-dev",
    "aws_secret_access_key": "blobgate-dev",
    "region_name": "us-east-1",
}


class EmbeddedS3Error(Exception):
    pass


class EmbeddedS3:
    """moto's threaded S3 server on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise EmbeddedS3Error("--dev needs moto: pip install 'blobgate[embedded]'") from None
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> str:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def stop(self) -> None:
        self._server.stop()


def dev_settings(settings: Settings, endpoint: str) -> Settings:
    """The settings for --dev: the embedded S3, its buckets created and
    versioned (unless bucket_versioning was set), 127.0.0.1:50051 unless a
    listen address was given, and reflection and the gateway's lifecycle
    rules on unless turned off."""
    if settings.s3_endpoint:
        raise EmbeddedS3Error("--dev starts its own S3: drop --s3-endpoint / BLOBGATE_S3_ENDPOINT")
    update: dict[str, Any] = {
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "create_buckets": True,
    }
    if "bucket_versioning" not in settings.model_fields_set:
        update["bucket_versioning"] = True  # every overwrite and delete can be undone
    if "listen" not in settings.model_fields_set:
        update["listen"] = DEV_LISTEN
    if "reflection" not in settings.model_fields_set:
        update["reflection"] = True  # grpcurl and friends work with no .proto at hand
    if "manage_lifecycle" not in settings.model_fields_set:
        update["manage_lifecycle"] = True  # the expiry rules, as on a real deployment
    if "drain_delay" not in settings.model_fields_set:
        update["drain_delay"] = 0.0  # nobody to drain from on a laptop
    return settings.model_copy(update=update)
