"""ResponseWriter and chunk coding: exact bytes, server-owned headers, and refusal of
anything that could split a response (RFC 9112 §11.1)."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve.errors import ApplicationError, ConfigError
from django_wsgiserve.http import LAST_CHUNK, Framing, ResponseWriter, encode_chunk

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
DATE_LINE = b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"


def head(
    writer: ResponseWriter | None = None,
    *,
    status: Any = "200 OK",
    headers: Any = (),
    version: bytes = b"1.1",
    framing: Framing = Framing.CONTENT_LENGTH,
    keep_alive: bool = True,
) -> bytes:
    """ResponseWriter.head with defaults; ``Any`` lets tests pass what an app must not."""
    writer = writer or ResponseWriter()
    return writer.head(
        status=status,
        headers=list(headers),
        http_version=version,
        framing=framing,
        keep_alive=keep_alive,
        date=DATE,
    )


def test_head_exact_bytes():
    result = head(headers=[("Content-Type", "text/html"), ("Content-Length", "5")])
    assert result == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n" + DATE_LINE + b"\r\n"
    )


@pytest.mark.parametrize(
    ("version", "framing", "keep_alive", "added"),
    [
        pytest.param(b"1.1", Framing.CONTENT_LENGTH, True, b"", id="1.1-length-keep-alive"),
        pytest.param(
            b"1.1", Framing.CONTENT_LENGTH, False, b"Connection: close\r\n", id="1.1-close"
        ),
        pytest.param(
            b"1.1", Framing.CHUNKED, True, b"Transfer-Encoding: chunked\r\n", id="1.1-chunked"
        ),
        pytest.param(
            b"1.1",
            Framing.CHUNKED,
            False,
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n",
            id="1.1-chunked-close",
        ),
        pytest.param(
            b"1.0", Framing.CONTENT_LENGTH, True, b"Connection: keep-alive\r\n", id="1.0-keep-alive"
        ),
        pytest.param(
            b"1.0", Framing.CONTENT_LENGTH, False, b"Connection: close\r\n", id="1.0-close"
        ),
        pytest.param(
            b"1.0",
            Framing.CLOSE_DELIMITED,
            False,
            b"Connection: close\r\n",
            id="1.0-close-delimited",
        ),
        pytest.param(b"1.1", Framing.NO_BODY, True, b"", id="no-body"),
    ],
)
def test_server_owned_headers(version, framing, keep_alive, added):
    result = head(version=version, framing=framing, keep_alive=keep_alive)
    # The status line says HTTP/1.1 whatever the request version (RFC 9110 §2.5).
    assert result == b"HTTP/1.1 200 OK\r\n" + DATE_LINE + added + b"\r\n"


@pytest.mark.parametrize(
    ("server", "headers", "expected"),
    [
        pytest.param("", [], b"HTTP/1.1 200 OK\r\n" + DATE_LINE + b"\r\n", id="no-server"),
        pytest.param(
            "wsgiserve",
            [],
            b"HTTP/1.1 200 OK\r\n" + DATE_LINE + b"Server: wsgiserve\r\n\r\n",
            id="configured-server",
        ),
        pytest.param(
            "wsgiserve",
            [("server", "app/1.0")],
            b"HTTP/1.1 200 OK\r\nserver: app/1.0\r\n" + DATE_LINE + b"\r\n",
            id="app-server-wins",
        ),
        pytest.param(
            "",
            [("DATE", "Mon, 01 Jan 2024 00:00:00 GMT")],
            b"HTTP/1.1 200 OK\r\nDATE: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
            id="app-date-wins",
        ),
        pytest.param(
            "",
            [("X-Date", "x"), ("Servers", "y")],
            b"HTTP/1.1 200 OK\r\nX-Date: x\r\nServers: y\r\n" + DATE_LINE + b"\r\n",
            id="similar-names-do-not-count",
        ),
    ],
)
def test_date_and_server(server, headers, expected):
    assert head(ResponseWriter(server_header=server), headers=headers) == expected


@pytest.mark.parametrize(
    ("headers", "line"),
    [
        pytest.param([("X-Name", "caf\u00e9")], b"X-Name: caf\xe9\r\n", id="latin-1-value"),
        pytest.param([("X-Tab", "a\tb")], b"X-Tab: a\tb\r\n", id="htab-in-value"),
        pytest.param([("X-Empty", "")], b"X-Empty: \r\n", id="empty-value"),
        pytest.param(
            [("x-custom!#$%&'*+-.^_`|~", "v")], b"x-custom!#$%&'*+-.^_`|~: v\r\n", id="token"
        ),
        pytest.param(
            [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            id="repeated",
        ),
    ],
)
def test_valid_headers_pass_through(headers, line):
    assert head(headers=headers) == b"HTTP/1.1 200 OK\r\n" + line + DATE_LINE + b"\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("X-A", "v\r\nSet-Cookie: evil=1")], id="crlf-in-value"),
        pytest.param([("X-A", "v\nX-B: 1")], id="lf-in-value"),
        pytest.param([("X-A", "v\rX-B: 1")], id="cr-in-value"),
        pytest.param([("X-A", "v\x00")], id="nul-in-value"),
        pytest.param([("X-A", "v\x7f")], id="del-in-value"),
        pytest.param([("X-A", "v\x0b")], id="vt-in-value"),
        pytest.param([("X-A", "\u20ac")], id="beyond-latin-1"),
        pytest.param([("X-A\r\nSet-Cookie", "evil=1")], id="crlf-in-name"),
        pytest.param([("X A", "v")], id="space-in-name"),
        pytest.param([("X-A:", "v")], id="colon-in-name"),
        pytest.param([("", "v")], id="empty-name"),
        pytest.param([("X-\u00e9", "v")], id="non-ascii-name"),
        pytest.param([(b"X-A", "v")], id="bytes-name"),
        pytest.param([("X-A", b"v")], id="bytes-value"),
        pytest.param([("X-A", None)], id="none-value"),
        pytest.param([("X-A", "v", "w")], id="triple"),
    ],
)
def test_response_splitting_and_bad_headers_are_refused(headers):
    with pytest.raises(ApplicationError):
        head(headers=headers)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param("200", id="no-reason-separator"),
        pytest.param("2000 OK", id="four-digits"),
        pytest.param("20 OK", id="two-digits"),
        pytest.param("600 Nope", id="above-599"),
        pytest.param("099 Nope", id="below-100"),
        pytest.param("abc OK", id="not-digits"),
        pytest.param(" 200 OK", id="leading-space"),
        pytest.param("200 OK\r\nX-Injected: 1", id="crlf-in-reason"),
        pytest.param("200 O\x00K", id="nul-in-reason"),
        pytest.param("200 \u20ac", id="beyond-latin-1"),
        pytest.param(b"200 OK", id="bytes"),
    ],
)
def test_invalid_status_is_refused(status):
    with pytest.raises(ApplicationError):
        head(status=status)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param("200 OK", id="ok"),
        pytest.param("404 Not Found", id="spaces-in-reason"),
        pytest.param("599 ", id="empty-reason"),
        pytest.param("418 I'm a teapot", id="punctuation"),
        pytest.param("200 D\u00e9j\u00e0 vu", id="obs-text-reason"),
    ],
)
def test_valid_status_passes_through(status):
    assert head(status=status).startswith(b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n")


@pytest.mark.parametrize(
    "status",
    [
        pytest.param("204 No Content", id="204"),
        pytest.param("304 Not Modified", id="304"),
        pytest.param("100 Continue", id="100"),
        pytest.param("103 Early Hints", id="103"),
    ],
)
@pytest.mark.parametrize(
    "framing_headers",
    [
        pytest.param([("Content-Length", "0")], id="length-zero"),
        pytest.param([("content-length", "1234")], id="length-lower-case"),
        pytest.param([("Transfer-Encoding", "chunked")], id="transfer-encoding"),
        pytest.param(
            [("CONTENT-LENGTH", "5"), ("TRANSFER-ENCODING", "chunked")], id="both-upper-case"
        ),
    ],
)
def test_a_status_without_content_loses_its_framing_headers(status, framing_headers):
    # RFC 9110 §8.6: no Content-Length in 1xx and 204, in 304 only the 200's length (which the
    # server cannot check); RFC 9112 §6.1: no Transfer-Encoding in 1xx and 204.
    headers = [("ETag", '"v1"'), *framing_headers, ("Cache-Control", "max-age=60")]
    expected = (
        b"HTTP/1.1 "
        + status.encode()
        + b'\r\nETag: "v1"\r\nCache-Control: max-age=60\r\n'
        + DATE_LINE
        + b"\r\n"
    )
    assert head(status=status, headers=headers, framing=Framing.NO_BODY) == expected
    writer = ResponseWriter()
    prepared = writer.prepare_head(status=status, headers=headers)
    assert prepared is not None
    from_prepared = writer.head_from_prepared(
        prepared, http_version=b"1.1", framing=Framing.NO_BODY, keep_alive=True, date=DATE
    )
    assert from_prepared == expected


@pytest.mark.parametrize(
    "status", [pytest.param("200 OK", id="200"), pytest.param("205 Reset Content", id="205")]
)
def test_a_status_with_content_keeps_its_content_length_even_without_a_body(status):
    # HEAD: the framing is NO_BODY, but the length is the one a GET would get (RFC 9110 §8.6).
    result = head(status=status, headers=[("Content-Length", "42")], framing=Framing.NO_BODY)
    assert b"\r\nContent-Length: 42\r\n" in result


def test_framing_headers_of_a_status_without_content_are_still_validated():
    with pytest.raises(ApplicationError):
        head(status="204 No Content", headers=[("Content-Length", "0\r\nX-Evil: 1")])


def test_invalid_server_header_is_a_config_error():
    with pytest.raises(ConfigError):
        ResponseWriter(server_header="x\r\nSet-Cookie: a=1")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", b"", id="empty-is-not-a-last-chunk"),
        pytest.param(b"a", b"1\r\na\r\n", id="one-byte"),
        pytest.param(b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n", id="hex-lowercase"),
        pytest.param(b"\r\n", b"2\r\n\r\n\r\n", id="crlf-data"),
        pytest.param(b"y" * 4096, b"1000\r\n" + b"y" * 4096 + b"\r\n", id="4k"),
    ],
)
def test_encode_chunk(data, expected):
    assert encode_chunk(data) == expected


def test_last_chunk():
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("kwargs", "server", "expected"),
    [
        pytest.param(
            {"status_code": 400, "reason": "Bad Request"},
            "",
            b"HTTP/1.1 400 Bad Request\r\n"
            + DATE_LINE
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n",
            id="default-body",
        ),
        pytest.param(
            {"status_code": 505, "reason": "HTTP Version Not Supported", "http_version": b"1.0"},
            "wsgiserve",
            b"HTTP/1.1 505 HTTP Version Not Supported\r\n" + DATE_LINE + b"Server: wsgiserve\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\n"
            b"Connection: close\r\n\r\n505 HTTP Version Not Supported\n",
            id="server-and-1.0",
        ),
        pytest.param(
            {
                "status_code": 503,
                "reason": "Service Unavailable",
                "body": b"busy",
                "extra_headers": (("Retry-After", "5"),),
            },
            "",
            b"HTTP/1.1 503 Service Unavailable\r\n"
            + DATE_LINE
            + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n"
            b"Connection: close\r\nRetry-After: 5\r\n\r\nbusy",
            id="body-and-extra-headers",
        ),
        pytest.param(
            {"status_code": 500, "reason": "Internal Server Error", "body": b""},
            "",
            b"HTTP/1.1 500 Internal Server Error\r\n"
            + DATE_LINE
            + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n",
            id="empty-body",
        ),
    ],
)
def test_error_response(kwargs, server, expected):
    assert ResponseWriter(server_header=server).error_response(date=DATE, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"status_code": 400, "reason": "Bad\r\nX: y"}, id="crlf-in-reason"),
        pytest.param({"status_code": 1000, "reason": "Big"}, id="bad-code"),
        pytest.param(
            {"status_code": 400, "reason": "Bad", "extra_headers": (("X", "a\r\nb"),)},
            id="crlf-in-extra-header",
        ),
    ],
)
def test_error_response_validates_its_input(kwargs):
    with pytest.raises(ApplicationError):
        ResponseWriter().error_response(date=DATE, **kwargs)


# -- a writer remembers what it validated: the same heads and the same errors as a fresh one -----

SEQUENCE = [
    ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")], Framing.CONTENT_LENGTH),
    ("204 No Content", [("Content-Type", "text/plain"), ("Content-Length", "0")], Framing.NO_BODY),
    ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")], Framing.CONTENT_LENGTH),
    ("304 Not Modified", [("Transfer-Encoding", "chunked"), ("ETag", '"a"')], Framing.NO_BODY),
    ("200 OK", [("Transfer-Encoding", "chunked"), ("ETag", '"a"')], Framing.CHUNKED),
    ("200 OK", [("date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("SERVER", "app")], Framing.CHUNKED),
    ("200 OK", [["X-List", "pair"], ("X-List", "pair")], Framing.CHUNKED),
    ("200 OK", [("Set-Cookie", "s=" + "x" * 2000)], Framing.CHUNKED),
]


@pytest.mark.parametrize(
    "server", [pytest.param("", id="no-server"), pytest.param("s", id="server")]
)
def test_a_writer_gives_the_heads_a_fresh_writer_gives(server):
    writer = ResponseWriter(server_header=server)
    for _ in range(2):
        for status, headers, framing in SEQUENCE:
            for version, keep_alive in [(b"1.1", True), (b"1.0", True), (b"1.1", False)]:
                fresh = head(
                    ResponseWriter(server_header=server),
                    status=status,
                    headers=headers,
                    version=version,
                    framing=framing,
                    keep_alive=keep_alive,
                )
                seen = head(
                    writer,
                    status=status,
                    headers=headers,
                    version=version,
                    framing=framing,
                    keep_alive=keep_alive,
                )
                assert seen == fresh


def test_a_writer_follows_the_date_it_is_given():
    writer = ResponseWriter()
    for date in [b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sun, 06 Nov 1994 08:49:38 GMT"] * 2:
        result = writer.head(
            status="200 OK",
            headers=[],
            http_version=b"1.1",
            framing=Framing.CHUNKED,
            keep_alive=True,
            date=date,
        )
        assert result == b"HTTP/1.1 200 OK\r\nDate: " + date + b"\r\n" + (
            b"Transfer-Encoding: chunked\r\n\r\n"
        )


def test_a_writer_past_its_memo_bound_gives_the_same_heads():
    writer = ResponseWriter()
    for length in range(1500):
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(length))]
        status = f"200 {length}"
        assert head(writer, status=status, headers=headers) == head(status=status, headers=headers)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(("X-A", "v\r\nSet-Cookie: evil=1"), id="crlf-in-value"),
        pytest.param(("X A", "v"), id="space-in-name"),
        pytest.param((b"X-A", "v"), id="bytes-name"),
        pytest.param(("X-A", None), id="none-value"),
        pytest.param(("X-A", ["v"]), id="unhashable-value"),
        pytest.param(["X-A", b"v"], id="list-pair"),
        pytest.param(("X-A", "v", "w"), id="triple"),
        pytest.param(("Content-Type",), id="single"),
        pytest.param(None, id="none"),
    ],
)
def test_a_bad_header_after_remembered_ones_gets_the_error_a_fresh_writer_gives(bad):
    good = [("Content-Type", "text/plain"), ("X-A", "v")]
    writer = ResponseWriter()
    head(writer, headers=good)
    with pytest.raises(ApplicationError) as fresh:
        head(headers=[*good, bad])
    with pytest.raises(ApplicationError) as seen:
        head(writer, headers=[*good, bad])
    assert str(seen.value) == str(fresh.value)
    with pytest.raises(ApplicationError) as status_error:
        head(writer, status="200 OK\r\nX: 1", headers=good)
    assert "invalid WSGI status" in str(status_error.value)
