"""Authentication: every StorageService call names who is calling, or is
refused with UNAUTHENTICATED before its handler runs.

The source is the server's mode: in mTLS the verified client certificate
(``identity.certificate_principal``), with ``jwt_jwks_file`` a bearer JWT
(``identity.JwtVerifier``); with neither (plaintext, or TLS alone) there is
no identity source, calls carry no principal, and no interceptor is
installed. Health and reflection are other services and pass untouched.

The interceptor reports a refusal itself; its place in the chain, and why,
is given in ``rpc.chain``. The principal goes into the call's access log
record and a contextvar (``identity.current_principal``) for what decides
rights and quotas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from blobgate.server.core.errors import Unauthenticated
from blobgate.server.core.identity import (
    AUTHORIZATION_KEY,
    JwtVerifier,
    acting_as,
    bearer_token,
    certificate_principal,
)
from blobgate.server.rpc.access_log import call_record
from blobgate.server.rpc.interceptors import Behaviour, Handler, MethodInterceptor, rewrap
from blobgate.server.rpc.status_codes import Context, abort

Authenticate = Callable[[Context], str]
"""Who is calling, from the call's context; raises Unauthenticated."""


def from_certificate(context: Context) -> str:
    """The principal of the call's verified client certificate."""
    principal = certificate_principal(context.auth_context())
    if principal is None:
        raise Unauthenticated(
            "the client certificate names no identity: present one with a URI SAN "
            "(e.g. a SPIFFE ID), a DNS SAN or a subject CN"
        )
    return principal


def from_bearer_token(verifier: JwtVerifier) -> Authenticate:
    """The ``sub`` of the call's bearer JWT, checked by ``verifier``."""

    def authenticate(context: Context) -> str:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(
                f"this call needs an identity: present a bearer token ({AUTHORIZATION_KEY}: "
                "Bearer <JWT>)"
            )
        return verifier.principal(token)

    return authenticate


class AuthenticationInterceptor(MethodInterceptor):
    """Refuses StorageService calls without an identity; records the
    principal of the others."""

    def __init__(self, authenticate: Authenticate) -> None:
        super().__init__()
        self._authenticate = authenticate

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rewrap(handler, lambda behaviour: self._guarded(behaviour, method))

    def _guarded(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                principal = self._authenticate(context)
            except Unauthenticated as exc:
                await abort(context, exc, method)
            call_record().principal = principal
            with acting_as(principal):
                return await behaviour(request, context)

        return call


def authentication_for(
    mutual_tls: bool, verifier: JwtVerifier | None
) -> AuthenticationInterceptor | None:
    """The interceptor of the server's identity source: the client
    certificate in mTLS, else a bearer JWT; None when there is neither."""
    if mutual_tls:
        return AuthenticationInterceptor(from_certificate)
    if verifier is not None:
        return AuthenticationInterceptor(from_bearer_token(verifier))
    return None


__all__ = [
    "AuthenticationInterceptor",
    "authentication_for",
    "from_bearer_token",
    "from_certificate",
]
