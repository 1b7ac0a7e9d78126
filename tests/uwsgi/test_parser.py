"""UwsgiRequestParser against vectors built from the uwsgi packet layout and nginx's stock
uwsgi_params. Every vector is fed whole, byte by byte and in seeded random chunks; the events
(or the error) must be the same for every split."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve import errors
from django_wsgiserve.errors import ProtocolError
from django_wsgiserve.uwsgi import (
    NEED_DATA,
    CGIRequest,
    ConnectionClosed,
    Data,
    EndOfMessage,
    UwsgiRequestParser,
)
from tests.cgi_params import (
    CHUNKED_BODY,
    SPLITS,
    UWSGI_CHUNKED_BY_CLIENT,
    UWSGI_GET,
    UWSGI_POST,
    UWSGI_POST_BODY,
    as_variables,
    split,
)
from tests.uwsgi.encoder import encode_vars, packet, raw_packet

GET = [(b"REQUEST_METHOD", b"GET")]


def run(pieces: list[bytes], limits: dict[str, int]) -> tuple[list[object], ProtocolError | None]:
    """Feed the pieces, pull every event, then EOF; consecutive Data events are merged."""
    parser = UwsgiRequestParser(**limits)
    events: list[object] = []

    def drain() -> None:
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, Data) and events and isinstance(events[-1], Data):
                events[-1] = Data(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, ConnectionClosed):
                return

    try:
        for piece in pieces:
            parser.feed(piece)
            drain()
        parser.feed_eof()
        drain()
    except ProtocolError as exc:
        with pytest.raises(type(exc)):  # once failed, the parser stays failed
            parser.next_event()
        return events, exc
    assert events[-1] == ConnectionClosed()
    assert parser.next_event() == ConnectionClosed()
    return events, None


def cgi_request(
    pairs: list[tuple[bytes, bytes]], *, target: str, content_length: int = 0
) -> CGIRequest:
    variables = as_variables(pairs)
    return CGIRequest(
        variables=variables,
        method=variables["REQUEST_METHOD"],
        target=target,
        content_length=content_length,
        keep_alive=False,
    )


def events_for(req: CGIRequest, body: bytes = b"") -> list[object]:
    return [req, *([Data(body)] if body else []), EndOfMessage(), ConnectionClosed()]


LONG_VALUE = b"v" * 300  # a size above 255 uses both bytes of the little-endian u16
VALID: list[Any] = [
    pytest.param(
        # Written out by hand from the layout, not through the encoder: pins the byte order.
        b"\x00\x15\x00\x00\x0e\x00REQUEST_METHOD\x03\x00GET",
        {},
        events_for(cgi_request(GET, target="")),
        id="minimal-by-hand",
    ),
    pytest.param(
        packet(UWSGI_GET),
        {},
        events_for(cgi_request(UWSGI_GET, target="/blog/caf%C3%A9?page=2")),
        id="nginx-get",
    ),
    pytest.param(
        packet(UWSGI_POST, UWSGI_POST_BODY),
        {},
        events_for(
            cgi_request(
                UWSGI_POST,
                target="/admin/blog/post/add/",
                content_length=len(UWSGI_POST_BODY),
            ),
            UWSGI_POST_BODY,
        ),
        id="nginx-post-form",
    ),
    pytest.param(
        packet(UWSGI_CHUNKED_BY_CLIENT, CHUNKED_BODY),
        {},
        events_for(
            cgi_request(
                UWSGI_CHUNKED_BY_CLIENT,
                target="/api/items/7",
                content_length=len(CHUNKED_BODY),
            ),
            CHUNKED_BODY,
        ),
        id="nginx-dechunked-body",
    ),
    pytest.param(
        packet([*GET, (b"X_LONG", LONG_VALUE), (b"EMPTY", b""), (b"HTTP_X_BIN", b"\x00\xe9\xff")]),
        {},
        events_for(
            cgi_request(
                [*GET, (b"X_LONG", LONG_VALUE), (b"EMPTY", b""), (b"HTTP_X_BIN", b"\x00\xe9\xff")],
                target="",
            )
        ),
        id="long-empty-and-binary-values",
    ),
    pytest.param(
        packet([*GET, (b"PATH_INFO", b"/a b"), (b"QUERY_STRING", b"x=1")]),
        {},
        events_for(
            cgi_request(
                [*GET, (b"PATH_INFO", b"/a b"), (b"QUERY_STRING", b"x=1")], target="/a b?x=1"
            )
        ),
        id="target-without-request-uri",
    ),
    pytest.param(
        packet(GET, modifier2=7),
        {},
        events_for(cgi_request(GET, target="")),
        id="modifier2-ignored",
    ),
    pytest.param(
        packet([*GET, (b"CONTENT_LENGTH", b"0")]),
        {},
        events_for(cgi_request([*GET, (b"CONTENT_LENGTH", b"0")], target="")),
        id="content-length-zero",
    ),
    pytest.param(
        packet(GET),
        {"max_vars_bytes": len(encode_vars(GET))},
        events_for(cgi_request(GET, target="")),
        id="vars-exactly-at-limit",
    ),
    pytest.param(
        packet([*GET, (b"CONTENT_LENGTH", b"4")], b"\r\n\r\n"),
        {"max_body_bytes": 4},
        events_for(
            cgi_request([*GET, (b"CONTENT_LENGTH", b"4")], target="", content_length=4), b"\r\n\r\n"
        ),
        id="body-exactly-at-limit",
    ),
    pytest.param(b"", {}, [ConnectionClosed()], id="eof-before-a-byte"),
    *(
        # modifier1 30 (nginx uwsgi_modifier1 30): SCRIPT_NAME is taken off PATH_INFO.
        pytest.param(
            packet([*GET, (b"SCRIPT_NAME", script_name), (b"PATH_INFO", path_info)], modifier1=30),
            {},
            events_for(
                cgi_request(
                    [*GET, (b"SCRIPT_NAME", script_after), (b"PATH_INFO", path_after)],
                    target=(script_after + path_after).decode(),
                )
            ),
            id=f"modifier1-30-{name}",
        )
        for name, script_name, path_info, script_after, path_after in [
            ("strips", b"/app", b"/app/items/1", b"/app", b"/items/1"),
            ("mount-point", b"/app", b"/app", b"/app", b""),
            ("trailing-slash", b"/app/", b"/app/x", b"/app", b"/x"),
            ("not-a-segment", b"/app", b"/application/x", b"/app", b"/application/x"),
            ("outside", b"/app", b"/other", b"/app", b"/other"),
            ("no-script-name", b"", b"/x", b"", b"/x"),
        ]
    ),
    pytest.param(
        packet([*GET, (b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/app/x")]),
        {},
        events_for(
            cgi_request(
                [*GET, (b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/app/x")], target="/app/app/x"
            )
        ),
        id="modifier1-0-leaves-path-info",
    ),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(("raw", "limits", "expected"), VALID)
def test_valid(raw, limits, expected, how, request):
    events, error = run(split(raw, how, request.node.callspec.id), limits)
    assert error is None, f"{type(error).__name__}: {error}"
    assert events == expected


def _invalid(raw: bytes, error: str, status: int, limits: Any = None, **kw: Any) -> Any:
    return pytest.param(raw, limits or {}, error, status, **kw)


INVALID: list[Any] = [
    _invalid(packet(GET, modifier1=5), "InvalidUwsgiPacketError", 400, id="modifier1-psgi"),
    _invalid(packet(GET, modifier1=31), "InvalidUwsgiPacketError", 400, id="modifier1-31"),
    _invalid(b"\x00\x15", "TruncatedRequestError", 400, id="eof-in-header"),
    _invalid(packet(GET)[:-1], "TruncatedRequestError", 400, id="eof-in-vars"),
    _invalid(
        raw_packet(encode_vars(GET) + b"\x05"), "InvalidUwsgiPacketError", 400, id="odd-byte-left"
    ),
    _invalid(
        raw_packet(b"\x0e\x00REQUEST_METHOD\x09\x00GET"),
        "InvalidUwsgiPacketError",
        400,
        id="value-past-block",
    ),
    _invalid(
        raw_packet(b"\x40\x00REQUEST_METHOD\x03\x00GET"),
        "InvalidUwsgiPacketError",
        400,
        id="key-past-block",
    ),
    _invalid(
        # The datasize claims less than the pairs take: the last pair is cut by the block end
        # (the rest would then be body bytes, which CONTENT_LENGTH does not announce).
        raw_packet(encode_vars(GET), datasize=len(encode_vars(GET)) - 1),
        "InvalidUwsgiPacketError",
        400,
        id="datasize-too-small",
    ),
    _invalid(packet([]), "InvalidCGIVariableError", 400, id="empty-vars-block"),
    _invalid(packet([(b"PATH_INFO", b"/")]), "InvalidCGIVariableError", 400, id="no-method"),
    _invalid(
        packet([(b"REQUEST_METHOD", b"GET /")]),
        "InvalidCGIVariableError",
        400,
        id="method-not-token",
    ),
    _invalid(packet([(b"REQUEST_METHOD", b"")]), "InvalidCGIVariableError", 400, id="method-empty"),
    _invalid(packet([*GET, (b"", b"x")]), "InvalidCGIVariableError", 400, id="empty-name"),
    _invalid(packet([*GET, (b"A B", b"x")]), "InvalidCGIVariableError", 400, id="name-with-space"),
    _invalid(packet([*GET, (b"A=B", b"x")]), "InvalidCGIVariableError", 400, id="name-with-equals"),
    _invalid(
        packet([*GET, (b"\xc9T\xc9", b"x")]), "InvalidCGIVariableError", 400, id="name-non-ascii"
    ),
    _invalid(packet([*GET, (b"A\x00", b"x")]), "InvalidCGIVariableError", 400, id="name-with-nul"),
    _invalid(packet([*GET, *GET]), "InvalidCGIVariableError", 400, id="duplicate-method"),
    _invalid(
        packet([*GET, (b"HTTP_X_REAL_IP", b"1.2.3.4"), (b"HTTP_X_REAL_IP", b"5.6.7.8")]),
        "InvalidCGIVariableError",
        400,
        id="duplicate-header",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"-1")]),
        "InvalidContentLengthError",
        400,
        id="cl-negative",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b" 5")]), "InvalidContentLengthError", 400, id="cl-space"
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"1e3")]), "InvalidContentLengthError", 400, id="cl-float"
    ),
    _invalid(
        # U+00B2 SUPERSCRIPT TWO: str.isdigit() says yes, int() says no.
        packet([*GET, (b"CONTENT_LENGTH", b"\xb2")]),
        "InvalidContentLengthError",
        400,
        id="cl-superscript-digit",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"1" * 19)]),
        "InvalidContentLengthError",
        400,
        id="cl-19-digits",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"5")], b"abcde"),
        "ContentTooLargeError",
        413,
        {"max_body_bytes": 4},
        id="body-over-limit",
    ),
    _invalid(
        packet(GET), "HeaderFieldsTooLargeError", 431, {"max_vars_bytes": 20}, id="vars-over-limit"
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"5")], b"abc"),
        "TruncatedRequestError",
        400,
        id="eof-in-body",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b"3")], b"abcd"),
        "InvalidUwsgiPacketError",
        400,
        id="byte-after-body",
    ),
    _invalid(packet(GET) + packet(GET), "InvalidUwsgiPacketError", 400, id="second-request"),
    _invalid(
        packet([*GET, (b"HTTP_TRANSFER_ENCODING", b"chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
        "UnsupportedTransferCodingError",
        501,
        id="chunked-without-content-length",
    ),
    _invalid(
        packet([*GET, (b"CONTENT_LENGTH", b""), (b"HTTP_TRANSFER_ENCODING", b"gzip, Chunked")]),
        "UnsupportedTransferCodingError",
        501,
        id="chunked-with-empty-content-length",
    ),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(("raw", "limits", "error", "status"), INVALID)
def test_invalid(raw, limits, error, status, how, request):
    events, exc = run(split(raw, how, request.node.callspec.id), limits)
    assert exc is not None, f"no error; events: {events}"
    assert type(exc) is getattr(errors, error), f"{type(exc).__name__}: {exc}"
    assert exc.status_code == status


def test_modifier1_refused_from_the_first_four_bytes():
    parser = UwsgiRequestParser()
    parser.feed(b"\x05\xff\x00\x00")  # the vars block has not arrived
    with pytest.raises(errors.InvalidUwsgiPacketError):
        parser.next_event()


def test_vars_limit_refused_from_the_first_four_bytes():
    parser = UwsgiRequestParser(max_vars_bytes=100)
    parser.feed(b"\x00\x65\x00\x00")  # datasize 101; the vars block has not arrived
    with pytest.raises(errors.HeaderFieldsTooLargeError):
        parser.next_event()


def test_body_limit_refused_before_the_body():
    parser = UwsgiRequestParser(max_body_bytes=10)
    parser.feed(packet([*GET, (b"CONTENT_LENGTH", b"11")]))
    with pytest.raises(errors.ContentTooLargeError):
        parser.next_event()


def test_body_is_delivered_as_it_arrives():
    parser = UwsgiRequestParser()
    parser.feed(packet([*GET, (b"CONTENT_LENGTH", b"6")], b"abc"))
    assert isinstance(parser.next_event(), CGIRequest)
    assert parser.next_event() == Data(b"abc")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"def")
    assert parser.next_event() == Data(b"def")
    assert parser.next_event() == EndOfMessage()
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_bytes == 0


def test_waiting_for_the_vars_block_keeps_the_bytes():
    raw = packet(UWSGI_GET)
    parser = UwsgiRequestParser()
    parser.feed(raw[:-1])
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_bytes == len(raw) - 1


def test_variables_are_latin1_str_in_order():
    parser = UwsgiRequestParser()
    parser.feed(packet(UWSGI_GET))
    event = parser.next_event()
    assert isinstance(event, CGIRequest)
    assert list(event.variables) == [name.decode() for name, _ in UWSGI_GET]
    assert event.variables["PATH_INFO"] == "/blog/caf\u00c3\u00a9"  # PEP 3333 "bytes as latin-1"
    assert event.method == "GET"
    assert event.content_length == 0  # empty CONTENT_LENGTH: no body


def test_feed_after_eof_is_a_caller_bug():
    parser = UwsgiRequestParser()
    parser.feed_eof()
    with pytest.raises(RuntimeError):
        parser.feed(b"x")
