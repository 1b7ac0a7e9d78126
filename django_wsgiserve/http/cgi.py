"""CGI variables from a gateway peer (uwsgi vars, FastCGI params) and the request they make.

Design note. nginx's ``uwsgi_pass`` and ``fastcgi_pass`` do not forward HTTP: they send the
request as CGI/1.1 meta-variables (RFC 3875 §4.1), taken from the stock ``uwsgi_params`` /
``fastcgi_params`` files (REQUEST_METHOD, REQUEST_URI, PATH_INFO, QUERY_STRING, CONTENT_LENGTH,
CONTENT_TYPE, REMOTE_ADDR, HTTPS, SERVER_NAME, SERVER_PORT, SCRIPT_NAME...) plus one
``HTTP_<NAME>`` variable per request header. Both protocol packages (``uwsgi/``, ``fastcgi/``)
decode their name-value pairs with ``add_variable`` and finish with ``build_request``, so the
rules below hold for both:

* Names must be RFC 3875 §4.1 meta-variable names, which are tokens (RFC 3875 §2.2, the same
  character set as RFC 9110 §5.6.2), and must not repeat: a second value for a name is
  ambiguous (with ``underscores_in_headers on``, nginx sends ``X-Real-IP`` and ``X_Real_IP``
  both as ``HTTP_X_REAL_IP``), so it is refused rather than resolved either way.
* Values are opaque: decoded as latin-1, never rejected (nginx percent-decodes PATH_INFO, so it
  may hold any byte). Names and values are native ``str`` holding the bytes as latin-1, which
  is what PEP 3333 wants in an environ; the environ builder copies them as they are.
* The caller decides whom to believe. REMOTE_ADDR, REMOTE_PORT, HTTPS, REQUEST_SCHEME,
  SERVER_NAME and SERVER_PORT describe the client's connection only if the peer is one of
  TRUSTED_PROXIES; otherwise the environ builder must replace them with what the socket says.
  Nothing here knows the peer. The environ builder must also set the ``wsgi.*`` keys after
  copying the variables, so that a variable cannot override them.

Like the rest of ``http/``: no I/O, no module state (the tables are constants), only the stdlib,
``errors`` and ``http.grammar``. Each function is O(size of its input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django_wsgiserve.errors import (
    ContentTooLargeError,
    InvalidCGIVariableError,
    InvalidContentLengthError,
    UnsupportedTransferCodingError,
)
from django_wsgiserve.http import grammar

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CGIRequest", "add_variable", "build_request"]

# RFC 9110 §8.6 allows any number of digits; 18 keep the value below 2**63 everywhere.
_MAX_CONTENT_LENGTH_DIGITS = 18
_TOKEN_MATCH = grammar.TOKEN_RE.fullmatch
# The names nginx's stock params files and common browsers produce, bytes -> str: a dict hit
# skips the token regex and the decode for nearly every pair of a real request.
_KNOWN_NAMES = {
    name.encode("ascii"): name
    for name in (
        "QUERY_STRING",
        "REQUEST_METHOD",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SCRIPT_NAME",
        "REQUEST_URI",
        "PATH_INFO",
        "DOCUMENT_URI",
        "DOCUMENT_ROOT",
        "SERVER_PROTOCOL",
        "REQUEST_SCHEME",
        "HTTPS",
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "SERVER_ADDR",
        "SERVER_PORT",
        "SERVER_NAME",
        "REDIRECT_STATUS",
        "HTTP_HOST",
        "HTTP_USER_AGENT",
        "HTTP_ACCEPT",
        "HTTP_ACCEPT_LANGUAGE",
        "HTTP_ACCEPT_ENCODING",
        "HTTP_CONNECTION",
        "HTTP_COOKIE",
        "HTTP_REFERER",
        "HTTP_ORIGIN",
        "HTTP_CACHE_CONTROL",
        "HTTP_CONTENT_TYPE",
        "HTTP_CONTENT_LENGTH",
        "HTTP_AUTHORIZATION",
        "HTTP_IF_NONE_MATCH",
        "HTTP_IF_MODIFIED_SINCE",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_REQUESTED_WITH",
        "HTTP_X_CSRFTOKEN",
        "HTTP_UPGRADE_INSECURE_REQUESTS",
        "HTTP_SEC_FETCH_DEST",
        "HTTP_SEC_FETCH_MODE",
        "HTTP_SEC_FETCH_SITE",
        "HTTP_SEC_FETCH_USER",
        "HTTP_TRANSFER_ENCODING",
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CGIRequest:
    """A request received from a gateway peer (the uwsgi and FastCGI counterpart of
    ``http.Request``).

    ``variables`` maps each CGI variable name to its value, both latin-1 ``str`` as PEP 3333
    wants them, in the order received. ``method`` is REQUEST_METHOD; ``target`` is what the
    access log shows: REQUEST_URI, or SCRIPT_NAME + PATH_INFO + ``?`` QUERY_STRING when the
    peer sends no REQUEST_URI. ``content_length`` is CONTENT_LENGTH as an int; ``None`` means
    that the peer announced no length and the protocol's own stream end delimits the body
    (FastCGI STDIN only). ``keep_alive`` says whether the connection carries another request
    after this one (FastCGI's FCGI_KEEP_CONN flag; always False for uwsgi).
    """

    variables: Mapping[str, str]
    method: str
    target: str
    content_length: int | None
    keep_alive: bool


def add_variable(variables: dict[str, str], name: bytes, value: bytes) -> None:
    """Decode one name-value pair into ``variables``; raise ``InvalidCGIVariableError`` for a
    name that is not a token (RFC 3875 §4.1) or that is already there."""
    key = _KNOWN_NAMES.get(name)
    if key is None:
        if _TOKEN_MATCH(name) is None:
            raise InvalidCGIVariableError(
                f"the variable name {name[:64]!r} is not a token (RFC 3875 §4.1)"
            )
        key = name.decode("ascii")  # a token is ASCII
    if key in variables:
        raise InvalidCGIVariableError(f"the variable {key} is sent twice")
    variables[key] = value.decode("latin-1")


def build_request(
    variables: dict[str, str],
    *,
    keep_alive: bool,
    max_body_bytes: int,
    is_stream_delimited: bool,
) -> CGIRequest:
    """Check the variables the server itself interprets and return the request.

    ``is_stream_delimited`` says whether the protocol marks the end of the body by itself
    (FastCGI's empty STDIN record) or only through CONTENT_LENGTH (uwsgi).
    """
    method = variables.get("REQUEST_METHOD")
    if method is None:
        raise InvalidCGIVariableError("no REQUEST_METHOD variable (RFC 3875 §4.1.12)")
    # RFC 3875 §4.1.12 and RFC 9110 §9.1: method = token.
    if _TOKEN_MATCH(method.encode("latin-1")) is None:
        raise InvalidCGIVariableError(f"REQUEST_METHOD {method[:64]!r} is not a token")
    content_length = _content_length(variables.get("CONTENT_LENGTH"), max_body_bytes)
    if content_length is None and not is_stream_delimited:
        content_length = _length_without_content_length(variables)
    return CGIRequest(
        variables=variables,
        method=method,
        target=_target(variables),
        content_length=content_length,
        keep_alive=keep_alive,
    )


def _content_length(value: str | None, max_body_bytes: int) -> int | None:
    """RFC 3875 §4.1.2: CONTENT_LENGTH = "" | 1*digit; empty or absent means no length."""
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
        raise InvalidContentLengthError(
            f"CONTENT_LENGTH {value[:64]!r} is not 1*digit (RFC 3875 §4.1.2)"
        )
    length = int(value)
    if length > max_body_bytes:
        raise ContentTooLargeError(f"CONTENT_LENGTH {length} exceeds {max_body_bytes} bytes")
    return length


def _length_without_content_length(variables: Mapping[str, str]) -> int:
    """The body length when CONTENT_LENGTH is absent and only it could delimit the body.

    Without CONTENT_LENGTH there is no body (RFC 3875 §4.1.2), unless the client sent a
    chunked body that the peer forwards as it comes (uWSGI's own HTTP router does this). Its
    end could only be found by decoding the chunks, which this server does not do on a
    gateway protocol: refused. nginx never sends that: it reads a chunked request body whole
    before passing it on (even with ``uwsgi_request_buffering off``) and then sets
    CONTENT_LENGTH, while HTTP_TRANSFER_ENCODING still says how the client framed it.
    """
    if "chunked" in variables.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise UnsupportedTransferCodingError(
            "a chunked request body without CONTENT_LENGTH is not supported over uwsgi"
        )
    return 0


def _target(variables: Mapping[str, str]) -> str:
    """REQUEST_URI as the client sent it, or a reconstruction for the access log."""
    target = variables.get("REQUEST_URI")
    if target:
        return target
    target = variables.get("SCRIPT_NAME", "") + variables.get("PATH_INFO", "")
    query = variables.get("QUERY_STRING")
    return f"{target}?{query}" if query else target
