"""Who is calling: the principal of a call, from the verified client
certificate (mTLS) or from a bearer JWT (TLS with ``jwt_jwks_file``).

A certificate's principal is its URI SAN (a SPIFFE ID such as
``spiffe://example.org/ns/x/sa/y``), else ``dns:`` and its first DNS SAN,
else ``cn:`` and its subject CN, of the certificate gRPC's TLS handshake
verified (``core.principal_names``: each kind its own spelling, no fallback
past an unusable name). A JWT's principal is its
``sub``, once its signature (a key of the JWKS file, with that key's own
algorithm: RS256, ES256 or HS256; ``alg: none`` never), issuer, audience and
expiry check out. The JWKS file is read at start-up (an unusable one stops
it) and again when it changes.

Callers are told what to present, never why a token failed beyond
"expired" or "not valid for this service"; tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from blobgate.server.core.errors import Unauthenticated
from blobgate.server.core.principal_names import certificate_principal
from blobgate.server.core.settings import Settings

log = logging.getLogger(__name__)

# Bounds on hostile input: a JWKS file, a token, a principal.
MAX_JWKS_BYTES = 1024 * 1024
MAX_TOKEN_BYTES = 8 * 1024
MAX_PRINCIPAL = 1024
# Clock skew allowed on exp / nbf / iat, seconds.
LEEWAY = 30

_principal: ContextVar[str | None] = ContextVar("blobgate_principal", default=None)


def current_principal() -> str | None:
    """The authenticated principal of the call running in this task (and the
    tasks it starts); None outside a call or when the server has no
    identity source. Set by ``rpc.authentication``; read by what decides
    rights and quotas."""
    return _principal.get()


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    """Make ``principal`` the current one for the block."""
    token = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(token)


# How often (seconds) a call may look at the JWKS file's stamp.
RELOAD_CHECK_INTERVAL = 1.0

ALGORITHMS = frozenset({"RS256", "ES256", "HS256"})
AUTHORIZATION_KEY = "authorization"
_BEARER = "bearer "

_Stamp = tuple[int, int, int, int]


class IdentityError(Exception):
    """A setting of the identity source is unusable; the message names it."""


def _label(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')} / BLOBGATE_{name.upper()})"


def usable_principal(value: object) -> str | None:
    """``value`` if it is a principal fit for a log line and a rule: a
    non-empty, bounded string of printable characters; else None."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PRINCIPAL:
        return None
    return value if value.isprintable() else None


@dataclass(frozen=True)
class _Key:
    kid: str | None
    algorithm: str
    key: Any


def _stamp(path: Path) -> _Stamp:
    try:
        info = path.stat()
    except OSError as exc:
        raise IdentityError(
            f"bad setting {_label('jwt_jwks_file')}: cannot read {path}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"bad setting {_label('jwt_jwks_file')}: {path} is not a regular file")
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def load_jwks(path: Path) -> tuple[_Key, ...]:
    """The usable keys of a JWKS file (RS256, ES256, HS256); IdentityError
    naming the setting when there are none or the file is not a JWKS."""
    bad = f"bad setting {_label('jwt_jwks_file')}: {path}"
    try:
        with path.open("rb") as file:
            data = file.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise IdentityError(f"{bad}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_JWKS_BYTES:
        raise IdentityError(f"{bad} is larger than 1MiB")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IdentityError(f"{bad} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise IdentityError(f'{bad} is not a JWKS: no "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", "RS256") not in ALGORITHMS:  # "none" and the rest: never
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, NotImplementedError):
            continue
        if jwk.algorithm_name not in ALGORITHMS:
            continue
        kid = entry.get("kid")
        keys.append(_Key(kid if isinstance(kid, str) else None, jwk.algorithm_name, jwk.key))
    if not keys:
        raise IdentityError(f"{bad} holds no usable signing key (RS256, ES256 or HS256)")
    return tuple(keys)


class JwtVerifier:
    """Verifies bearer JWTs against a JWKS file, picking up a changed file
    at the next call (at most one look per second)."""

    def __init__(self, jwks_file: Path, issuer: str, audience: str) -> None:
        self._path = jwks_file
        self._issuer = issuer
        self._audience = audience
        self._lock = threading.Lock()
        self._stamp = _stamp(jwks_file)
        self._keys = load_jwks(jwks_file)
        self._failed: _Stamp | None = None
        self._checked = time.monotonic()
        self.reloads = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        """None when no JWKS file is set."""
        if settings.jwt_jwks_file is None:
            return None
        assert settings.jwt_issuer is not None and settings.jwt_audience is not None
        return cls(settings.jwt_jwks_file, settings.jwt_issuer, settings.jwt_audience)

    def _current_keys(self) -> tuple[_Key, ...]:
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_INTERVAL:
            return self._keys
        with self._lock:
            self._checked = now
            try:
                stamp = _stamp(self._path)
            except IdentityError:
                return self._keys  # mid-rename, or gone: keep the keys we have
            if stamp in (self._stamp, self._failed):
                return self._keys
            try:
                keys = load_jwks(self._path)
            except IdentityError as exc:
                self._failed = stamp
                log.warning("JWKS file changed but does not load; keeping the old keys: %s", exc)
                return self._keys
            self._keys, self._stamp, self._failed = keys, stamp, None
            self.reloads += 1
        log.info("JWKS reloaded from %s (%d keys)", self._path, len(keys))
        return keys

    def principal(self, token: str) -> str:
        """The ``sub`` of a valid token; Unauthenticated otherwise."""
        invalid = Unauthenticated(
            "the bearer token is not valid for this service: present a valid one "
            f"({AUTHORIZATION_KEY}: Bearer <JWT>)"
        )
        if len(token) > MAX_TOKEN_BYTES:
            raise invalid
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:  # "none" and anything unlisted
            raise invalid
        candidates = [
            key
            for key in self._current_keys()
            if key.algorithm == algorithm and (kid is None or key.kid == kid)
        ]
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=LEEWAY,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the bearer token has expired: present a fresh one") from None
            except jwt.InvalidSignatureError:
                continue  # another key may have signed it
            except jwt.PyJWTError:
                raise invalid from None
            principal = usable_principal(claims.get("sub"))
            if principal is None:
                raise invalid
            return principal
        raise invalid


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the call's ``authorization: Bearer <token>`` metadata;
    None when there is none (or it is not a bearer token)."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY and isinstance(value, str):
            if value[: len(_BEARER)].lower() == _BEARER:
                token = value[len(_BEARER) :].strip()
                return token or None
            return None
    return None


__all__ = [
    "AUTHORIZATION_KEY",
    "IdentityError",
    "JwtVerifier",
    "acting_as",
    "bearer_token",
    "certificate_principal",
    "current_principal",
    "load_jwks",
    "usable_principal",
]
