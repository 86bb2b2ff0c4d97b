"""The checks of the settings object and the values derived from it.

``SettingsChecks`` is the base of ``core.settings.Settings`` (which holds
every field): how single fields are read from their text forms (commas,
empty strings, case, host:port), how they must agree with each other (TLS
and identity sources, part and object sizes, memory shares), and the values
derived from them (each caller's shares, the largest object, the buckets).
Its methods run on the one ``Settings`` object; a failed check raises
ValueError, which pydantic reports naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Self

from pydantic import ByteSize, ValidationInfo, field_validator, model_validator

from blobgate.server.core.lifecycle import check_expiry_days
from blobgate.shared.consul_config import ConsulConfig

MiB = 1024 * 1024
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
# The data field of one message may be 4 MiB; leave room for framing.
MIN_MESSAGE_SIZE = 4 * MiB + 64 * 1024


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class SettingsChecks:
    """The validators and derived values of ``Settings``, apart from its
    fields."""

    if TYPE_CHECKING:
        # The fields the checks read, for the type checker only: Settings
        # declares them (with their defaults and descriptions), and mypy
        # checks that its declarations agree with these.
        s3_max_connections: int
        s3_connections_per_principal: int | None
        default_bucket: str
        allowed_buckets: list[str]
        part_size: ByteSize
        copy_threshold: ByteSize
        max_object_size: ByteSize | None
        max_message_size: ByteSize
        memory_budget: ByteSize
        memory_budget_per_principal: ByteSize | None
        max_streams: int
        max_streams_per_principal: int | None
        max_anonymous_calls: int
        max_unary_calls: int
        max_unary_calls_per_principal: int | None
        max_list_calls: int
        max_list_calls_per_principal: int | None
        max_health_watches: int
        tls_cert_file: Path | None
        tls_key_file: Path | None
        tls_client_ca_file: Path | None
        jwt_jwks_file: Path | None
        jwt_issuer: str | None
        jwt_audience: str | None
        auth_policy_file: Path | None

    @field_validator("allowed_buckets", "service_tags", mode="before")
    @classmethod
    def _allowed_from_text(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator(
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "check_tls_server_name",
        "jwt_jwks_file",
        "jwt_issuer",
        "jwt_audience",
        "auth_policy_file",
        "max_streams_per_principal",
        "memory_budget_per_principal",
        "s3_connections_per_principal",
        "max_unary_calls_per_principal",
        "max_list_calls_per_principal",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("expiry_days_allowed", mode="before")
    @classmethod
    def _days_from_text(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("expiry_days_allowed")
    @classmethod
    def _days_in_range(cls, value: list[int]) -> list[int]:
        return check_expiry_days(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("listen", "metrics_listen", "health_listen")
    @classmethod
    def _host_port(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name in ("metrics_listen", "health_listen") and value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("must be host:port, e.g. 0.0.0.0:50051")
        return value

    @field_validator("consul_http_addr")
    @classmethod
    def _consul_address(cls, value: str) -> str:
        ConsulConfig.parse(value)  # raises ValueError naming the accepted forms
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "tls_cert_file and tls_key_file go together (--tls-cert-file, --tls-key-file): "
                "give both or neither"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file: the server "
                "must serve TLS to ask for client certificates"
            )
        self._check_jwt()
        if (
            self.auth_policy_file is not None
            and self.tls_client_ca_file is None
            and self.jwt_jwks_file is None
        ):
            raise ValueError(
                "auth_policy_file needs an identity source to name callers: set "
                "tls_client_ca_file (mTLS, --tls-client-ca-file) or jwt_jwks_file (bearer JWTs, "
                "--jwt-jwks-file)"
            )
        if not S3_MIN_PART <= self.part_size <= S3_MAX_PART:
            raise ValueError("part_size must be between 5MiB and 5GiB (S3's limits)")
        if self.max_object_size is not None and self.max_object_size > self.object_size_limit:
            raise ValueError(
                f"max_object_size {self.max_object_size.human_readable()} needs more than "
                f"{S3_MAX_PARTS} parts of {self.part_size.human_readable()}: raise part_size "
                "or lower max_object_size"
            )
        if not S3_MIN_PART <= self.copy_threshold <= S3_MAX_PART:
            raise ValueError("copy_threshold must be between 5MiB and 5GiB (CopyObject's limit)")
        if self.memory_budget < self.part_size:
            raise ValueError("memory_budget must be at least part_size")
        self._check_shares()
        if self.max_message_size < MIN_MESSAGE_SIZE:
            raise ValueError("max_message_size must be at least 4MiB + 64KiB")
        if self.max_health_watches >= self.max_anonymous_calls:
            raise ValueError(
                f"max_health_watches {self.max_health_watches} must be less than "
                f"max_anonymous_calls {self.max_anonymous_calls}, so that health Check keeps "
                "room beside open Watch streams"
            )
        if (
            self.max_streams_per_principal is not None
            and self.max_streams_per_principal > self.max_streams
        ):
            raise ValueError(
                f"max_streams_per_principal {self.max_streams_per_principal} is more than "
                f"max_streams {self.max_streams}: lower it or raise max_streams"
            )
        return self

    def _check_shares(self) -> None:
        share = self.memory_budget_per_principal
        if share is not None and not self.part_size <= share <= self.memory_budget:
            raise ValueError(
                f"memory_budget_per_principal {share.human_readable()} must be between part_size "
                f"{self.part_size.human_readable()} (what one upload needs to make progress) and "
                f"memory_budget {self.memory_budget.human_readable()}"
            )
        connections = self.s3_connections_per_principal
        if connections is not None and connections > self.s3_max_connections:
            raise ValueError(
                f"s3_connections_per_principal {connections} is more than s3_max_connections "
                f"{self.s3_max_connections}: lower it or raise s3_max_connections"
            )
        for calls, name, limit, limit_name in (
            (self.max_unary_calls_per_principal, "max_unary_calls_per_principal",
             self.max_unary_calls, "max_unary_calls"),
            (self.max_list_calls_per_principal, "max_list_calls_per_principal",
             self.max_list_calls, "max_list_calls"),
        ):  # fmt: skip
            if calls is not None and calls > limit:
                raise ValueError(
                    f"{name} {calls} is more than {limit_name} {limit}: lower it or raise "
                    f"{limit_name}"
                )

    def _check_jwt(self) -> None:
        if self.jwt_jwks_file is None:
            if self.jwt_issuer is not None or self.jwt_audience is not None:
                raise ValueError("jwt_issuer and jwt_audience need jwt_jwks_file (--jwt-jwks-file)")
            return
        if self.tls_cert_file is None:
            raise ValueError(
                "jwt_jwks_file needs tls_cert_file and tls_key_file: bearer tokens must not "
                "cross plaintext"
            )
        if self.tls_client_ca_file is not None:
            raise ValueError(
                "jwt_jwks_file and tls_client_ca_file are two identity sources: choose one"
            )
        if not self.jwt_issuer or not self.jwt_audience:
            raise ValueError(
                "jwt_jwks_file needs jwt_issuer and jwt_audience (--jwt-issuer, --jwt-audience)"
            )

    @property
    def streams_per_principal(self) -> int:
        """Upload/Download streams one identified caller may hold: the setting,
        else a quarter of max_streams (at least 1)."""
        if self.max_streams_per_principal is not None:
            return self.max_streams_per_principal
        return max(1, self.max_streams // 4)

    @property
    def budget_per_principal(self) -> int:
        """Bytes of memory_budget one caller may hold: the setting, else a
        quarter of memory_budget (at least part_size)."""
        if self.memory_budget_per_principal is not None:
            return int(self.memory_budget_per_principal)
        return max(int(self.part_size), int(self.memory_budget) // 4)

    @property
    def unary_calls_per_principal(self) -> int:
        """Unary calls other than List one identified caller may hold at
        once: the setting, else a quarter of max_unary_calls (at least 1)."""
        if self.max_unary_calls_per_principal is not None:
            return self.max_unary_calls_per_principal
        return max(1, self.max_unary_calls // 4)

    @property
    def list_calls_per_principal(self) -> int:
        """Lists one identified caller may hold at once: the setting, else a
        quarter of max_list_calls (at least 1)."""
        if self.max_list_calls_per_principal is not None:
            return self.max_list_calls_per_principal
        return max(1, self.max_list_calls // 4)

    @property
    def connections_per_principal(self) -> int:
        """S3 data requests one caller may have at once: the setting, else a
        quarter of s3_max_connections (at least 1)."""
        if self.s3_connections_per_principal is not None:
            return self.s3_connections_per_principal
        return max(1, self.s3_max_connections // 4)

    @property
    def identity_source(self) -> bool:
        """Whether callers are named (mTLS or bearer JWTs)."""
        return self.tls_client_ca_file is not None or self.jwt_jwks_file is not None

    @property
    def object_size_limit(self) -> int:
        """The largest object accepted: the setting, else what S3's 10000 parts allow."""
        limit = self.part_size * S3_MAX_PARTS
        return limit if self.max_object_size is None else min(limit, self.max_object_size)

    @property
    def buckets(self) -> frozenset[str]:
        """Every bucket a client may name: the allowed set plus the default."""
        return frozenset([self.default_bucket, *self.allowed_buckets])
