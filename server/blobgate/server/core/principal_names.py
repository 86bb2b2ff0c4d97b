"""How principals are spelled, so that names of different kinds never meet.

In mTLS mode a certificate's principal is its URI SAN as it is (a SPIFFE ID
such as ``spiffe://example.org/ns/x/sa/y``), else ``dns:`` and its first DNS
SAN in lower case (``dns:api.example.org``), else ``cn:`` and its subject CN
(``cn:reports-batch``). The three never collide: a DNS name has no ``:`` and
a URI SAN with the scheme ``dns`` or ``cn`` is refused, so a CN or a DNS SAN
spelled like a SPIFFE ID is never that SPIFFE ID. The names are read from the
verified leaf certificate itself, not from gRPC's summary of it (which cuts a
name at a NUL byte).

No fallback: a certificate whose URI SAN is present but unusable (control
characters, not a URI, too long, the scheme ``dns`` or ``cn``, or several URI
SANs), or whose first DNS SAN is not a DNS name, or whose CN is unusable, is
refused, with a message saying what to fix; it is never read as the next kind.

In JWT mode the principal is the token's ``sub`` as it is: a JWT-SVID carries
a SPIFFE ID there. The two modes exclude each other (settings), so a policy is
read for one of them: ``grant_principal`` checks a grant's principal against
the spellings of the server's mode.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

from blobgate.server.core.errors import Unauthenticated
from blobgate.server.core.settings import Settings

MAX_URI = 1024  # the URI SAN, as the policy's names (policy_file.MAX_NAME)
MAX_DNS = 253  # a DNS name (RFC 1035)
MAX_CN = 64  # ub-common-name (RFC 5280)
DNS_PREFIX = "dns:"
CN_PREFIX = "cn:"
_RESERVED_SCHEMES = frozenset({"dns", "cn"})
_PEM_KEY = "x509_pem_cert"  # gRPC's auth context: the verified leaf certificate

# RFC 3986: a scheme, then URI characters only (percent-escapes well formed).
_URI = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*):(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 1123 host names, with '_' (service labels) and a leading '*.' wildcard.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")


class IdentitySource(enum.StrEnum):
    """Where the server's principals come from."""

    CERTIFICATE = "mtls"  # the client certificate (tls_client_ca_file)
    JWT = "jwt"  # a bearer JWT's sub (jwt_jwks_file)


def identity_source(settings: Settings) -> IdentitySource | None:
    """The server's identity source; None without one."""
    if settings.tls_client_ca_file is not None:
        return IdentitySource.CERTIFICATE
    if settings.jwt_jwks_file is not None:
        return IdentitySource.JWT
    return None


def _shown(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


def uri_problem(value: str) -> str | None:
    """Why ``value`` cannot be a URI SAN principal; None when it can."""
    if not value.isprintable() or not value.isascii():
        return "it holds control or non-ASCII characters"
    if len(value) > MAX_URI:
        return f"it is longer than {MAX_URI} characters"
    match = _URI.fullmatch(value)
    if match is None:
        return "it is not a URI (scheme:rest, URI characters only)"
    if match.group(1).lower() in _RESERVED_SCHEMES:
        return f"its scheme {match.group(1)!r} is kept for DNS SAN and CN names"
    return None


def dns_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS name; None when it is."""
    if not value.isprintable() or not value.isascii():
        return "it holds control or non-ASCII characters"
    if len(value) > MAX_DNS:
        return f"it is longer than {MAX_DNS} characters"
    if _DNS.fullmatch(value) is None:
        return "it is not a DNS name (letters, digits, '-', '_', dots)"
    return None


def cn_problem(value: str) -> str | None:
    """Why ``value`` cannot be a CN principal; None when it can."""
    if not value or not value.isprintable():
        return "it is empty or holds control characters"
    if len(value) > MAX_CN:
        return f"it is longer than {MAX_CN} characters"
    return None


def _refuse(what: str, value: str, problem: str, fix: str) -> Unauthenticated:
    return Unauthenticated(
        f"the client certificate's {what} {_shown(value)} is not usable: {problem}: {fix}"
    )


def _texts(values: Iterable[object]) -> list[str]:
    return [value if isinstance(value, str) else repr(value) for value in values]


def _unreadable() -> Unauthenticated:
    return Unauthenticated(
        "the client certificate's names cannot be read: present one with a well-formed "
        "subject and subject alternative names"
    )


def _names(pem: bytes) -> tuple[list[str], list[str], list[str]]:
    """The URI SANs, DNS SANs and subject CNs of a PEM certificate, in order."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cns = _texts(attribute.value for attribute in common_names)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return [], [], cns
        uris = _texts(sans.get_values_for_type(x509.UniformResourceIdentifier))
        return uris, _texts(sans.get_values_for_type(x509.DNSName)), cns
    except ValueError:  # malformed names, a duplicated extension
        raise _unreadable() from None


@functools.lru_cache(maxsize=1024)
def _principal_of(pem: bytes) -> str | None:
    """The principal of one PEM certificate (cached: a client's certificate
    is the same on every call of its connection)."""
    uris, dns_names, common_names = _names(pem)
    if len(uris) > 1:
        raise Unauthenticated(
            f"the client certificate has {len(uris)} URI SANs: present one with a single URI "
            "SAN (its SPIFFE ID), so that it names one principal"
        )
    if uris:
        problem = uri_problem(uris[0])
        if problem is not None:
            raise _refuse(
                "URI SAN",
                uris[0],
                problem,
                f"present one whose URI SAN is a URI of printable ASCII, at most {MAX_URI} "
                "characters (e.g. a SPIFFE ID)",
            )
        return uris[0]
    if dns_names:
        problem = dns_problem(dns_names[0])
        if problem is not None:
            raise _refuse(
                "DNS SAN",
                dns_names[0],
                problem,
                f"present one whose first DNS SAN is a host name of at most {MAX_DNS} characters",
            )
        return DNS_PREFIX + dns_names[0].lower()
    if len(common_names) > 1:
        raise Unauthenticated(
            f"the client certificate's subject has {len(common_names)} CNs: present one "
            "with a single CN, or a URI or DNS SAN"
        )
    if common_names:
        problem = cn_problem(common_names[0])
        if problem is not None:
            raise _refuse(
                "subject CN",
                common_names[0],
                problem,
                f"present one whose CN is printable, at most {MAX_CN} characters",
            )
        return CN_PREFIX + common_names[0]
    return None


def certificate_principal(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The principal of a verified client certificate, from gRPC's auth
    context: its URI SAN, else ``dns:`` and its first DNS SAN, else ``cn:``
    and its subject CN; None when it has none of them; Unauthenticated,
    saying what to fix, when the first kind it has is unusable."""
    pems = list(auth_context.get(_PEM_KEY, ()))
    if len(pems) != 1 or not isinstance(pems[0], bytes):
        return None
    return _principal_of(pems[0])


def _bare_name_fix(name: str) -> str:
    spellings = []
    if dns_problem(name) is None:
        spellings.append(f"{DNS_PREFIX}{name}")
    if cn_problem(name) is None:
        spellings.append(f"{CN_PREFIX}{name}")
    if not spellings:
        return "write a URI SAN as it is, 'dns:' and a DNS SAN, or 'cn:' and a subject CN"
    return "write " + " or ".join(repr(spelling) for spelling in spellings)


def grant_principal(name: str, source: IdentitySource | None) -> str:
    """The principal a grant's ``name`` matches in the server's mode: as it
    is, but for the DNS name of ``dns:``, in lower case; ValueError saying
    how to spell it when no principal of that mode can have that name."""
    if source is not IdentitySource.CERTIFICATE:
        return name  # a JWT sub is any printable string; without a source, nothing to check
    if name.startswith(DNS_PREFIX):
        problem = dns_problem(name[len(DNS_PREFIX) :])
        if problem is not None:
            raise ValueError(f"{_shown(name)}: after 'dns:', {problem}")
        return name.lower()
    if name.startswith(CN_PREFIX):
        problem = cn_problem(name[len(CN_PREFIX) :])
        if problem is not None:
            raise ValueError(f"{_shown(name)}: after 'cn:', {problem}")
        return name
    if _SCHEME.match(name) is None:
        raise ValueError(
            f"{_shown(name)} names no kind of certificate name: {_bare_name_fix(name)}"
        )
    problem = uri_problem(name)
    if problem is not None:
        raise ValueError(f"{_shown(name)} cannot be a URI SAN: {problem}")
    return name


__all__ = [
    "CN_PREFIX",
    "DNS_PREFIX",
    "IdentitySource",
    "certificate_principal",
    "grant_principal",
    "identity_source",
    "uri_problem",
]
