"""RequestParser behaviour that the data vectors cannot express: when limits fire, what the
buffer holds, how bodies are sliced, and the state after errors and EOF."""

from __future__ import annotations

import dataclasses

import pytest

from django_wsgiserve.errors import (
    ContentTooLargeError,
    HeaderFieldsTooLargeError,
    InvalidChunkError,
    InvalidHeaderError,
    InvalidRequestLineError,
    InvalidTargetError,
    MissingHostError,
    ProtocolError,
    TruncatedRequestError,
    URITooLongError,
)
from django_wsgiserve.http import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    RequestParser,
)

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def events_until_need_data(parser: RequestParser) -> list[object]:
    events: list[object] = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def feed_bytewise_until_error(parser: RequestParser, data: bytes) -> int:
    """Feed ``data`` one byte at a time; return how many bytes were fed when it raised."""
    for count in range(1, len(data) + 1):
        parser.feed(data[count - 1 : count])
        try:
            events_until_need_data(parser)
        except ProtocolError:
            return count
    raise AssertionError("no error")


# -- the fast path -----------------------------------------------------------------------------


def test_get_in_one_feed_gives_request_then_end_of_message():
    parser = RequestParser()
    parser.feed(GET)
    request = parser.next_event()
    assert isinstance(request, Request)
    assert (request.method, request.path, request.host) == (b"GET", b"/", b"example.com")
    assert parser.next_event() == EndOfMessage()
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_bytes == 0


def test_need_data_until_the_blank_line_arrives():
    parser = RequestParser()
    parser.feed(GET[:-1])
    assert parser.next_event() is NEED_DATA
    parser.feed(GET[-1:])
    assert isinstance(parser.next_event(), Request)


def test_events_are_frozen():
    parser = RequestParser()
    parser.feed(GET)
    request = parser.next_event()
    assert isinstance(request, Request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.method = b"POST"  # type: ignore[misc]


def test_head_and_body_in_one_feed():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert events_until_need_data(parser)[1:] == [Data(b"abc"), EndOfMessage()]


# -- limits fire as soon as they are passed, before any terminator ------------------------------


def test_request_line_limit_fires_on_the_first_byte_past_it():
    parser = RequestParser(max_request_line=64)
    assert feed_bytewise_until_error(parser, b"GET /" + b"a" * 1_000_000) == 65


def test_request_line_limit_error_is_414():
    parser = RequestParser(max_request_line=64)
    parser.feed(b"GET /" + b"a" * 100)
    with pytest.raises(URITooLongError) as info:
        parser.next_event()
    assert info.value.status_code == 414


def test_request_line_of_exactly_the_limit_with_split_crlf():
    parser = RequestParser(max_request_line=64)
    line = b"GET /" + b"a" * 50 + b" HTTP/1.1"
    assert len(line) == 64
    parser.feed(line + b"\r")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"\nHost: a\r\n\r\n")
    assert isinstance(parser.next_event(), Request)


def test_header_section_limit_fires_on_the_first_byte_past_it():
    parser = RequestParser(max_header_bytes=64)
    request_line = b"GET / HTTP/1.1\r\n"
    parser.feed(request_line)
    assert parser.next_event() is NEED_DATA
    fed = feed_bytewise_until_error(parser, b"X-Fill: " + b"f" * 1_000_000)
    assert fed == 65


def test_header_section_limit_error_is_431():
    parser = RequestParser(max_header_bytes=64)
    parser.feed(b"GET / HTTP/1.1\r\nX: " + b"x" * 100)
    with pytest.raises(HeaderFieldsTooLargeError) as info:
        parser.next_event()
    assert info.value.status_code == 431


def test_many_small_lines_hit_the_byte_limit_before_the_terminator():
    parser = RequestParser(max_header_bytes=1000, max_headers=10_000)
    parser.feed(b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 166)  # 996 bytes of field lines
    assert parser.next_event() is NEED_DATA
    parser.feed(b"A: b\r\n")
    with pytest.raises(HeaderFieldsTooLargeError):
        parser.next_event()


def test_too_many_header_lines():
    parser = RequestParser(max_headers=2)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n")
    with pytest.raises(HeaderFieldsTooLargeError, match="more than 2 field lines"):
        parser.next_event()


def test_content_length_over_the_limit_fails_on_the_head():
    parser = RequestParser(max_body_bytes=100)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    with pytest.raises(ContentTooLargeError) as info:
        parser.next_event()
    assert info.value.status_code == 413


def test_chunked_total_over_the_limit_fails_on_the_size_line():
    parser = RequestParser(max_body_bytes=10)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n")
    assert events_until_need_data(parser)[1:] == [Data(b"012345")]
    parser.feed(b"4\r\n")
    assert parser.next_event() is NEED_DATA  # 10 bytes in total is still allowed
    parser.feed(b"0123\r\n1\r\n")
    with pytest.raises(ContentTooLargeError):
        events_until_need_data(parser)


def test_chunk_size_line_is_bounded_before_its_crlf():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(parser.next_event(), Request)
    parser.feed(b"1;" + b"x" * 4094)
    assert parser.next_event() is NEED_DATA
    parser.feed(b"xx")
    with pytest.raises(InvalidChunkError):
        parser.next_event()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"GET / HTTP/1.1\n", InvalidRequestLineError, id="bare-lf-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\n", InvalidHeaderError, id="bare-lf-header"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\rX", InvalidHeaderError, id="bare-cr-header"),
        pytest.param(b"GET /\rX", InvalidRequestLineError, id="bare-cr-request-line"),
    ],
)
def test_bare_cr_or_lf_is_found_before_the_terminator(data, error):
    parser = RequestParser()
    parser.feed(data)
    with pytest.raises(error):
        parser.next_event()


# -- errors and EOF ----------------------------------------------------------------------------


def test_parser_is_dead_after_an_error():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(MissingHostError):
        parser.next_event()
    parser.feed(GET)
    for _ in range(3):
        with pytest.raises(MissingHostError, match="failed earlier"):
            parser.next_event()


def test_eof_between_requests_is_connection_closed_forever():
    parser = RequestParser()
    parser.feed(GET)
    parser.feed_eof()
    assert events_until_need_data(parser)[1:] == [EndOfMessage(), ConnectionClosed()]
    assert parser.next_event() == ConnectionClosed()
    assert parser.next_event() == ConnectionClosed()


def test_eof_in_a_body_raises_after_the_data_received():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    parser.feed_eof()
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() == Data(b"abc")
    with pytest.raises(TruncatedRequestError):
        parser.next_event()


def test_eof_in_a_head_raises():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost")
    assert parser.next_event() is NEED_DATA
    parser.feed_eof()
    with pytest.raises(TruncatedRequestError):
        parser.next_event()


def test_feed_after_eof_is_a_caller_bug():
    parser = RequestParser()
    parser.feed_eof()
    parser.feed(b"")  # harmless
    with pytest.raises(RuntimeError):
        parser.feed(b"x")


# -- buffering, pipelining and body slices -----------------------------------------------------


def test_buffered_bytes_tracks_what_is_not_yet_an_event():
    parser = RequestParser()
    second = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
    parser.feed(GET + second)
    assert parser.buffered_bytes == len(GET) + len(second)
    assert isinstance(parser.next_event(), Request)
    assert parser.buffered_bytes == len(second)
    assert parser.next_event() == EndOfMessage()
    assert parser.buffered_bytes == len(second)  # the pipelined request waits
    assert isinstance(parser.next_event(), Request)
    assert parser.buffered_bytes == 4
    assert parser.next_event() == Data(b"body")
    assert parser.buffered_bytes == 0


def test_pipelined_requests_are_parsed_only_when_pulled():
    parser = RequestParser()
    parser.feed(GET * 3)
    events = events_until_need_data(parser)
    assert [type(event) for event in events] == [Request, EndOfMessage] * 3


def test_data_slices_are_as_large_as_what_is_buffered():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    assert isinstance(parser.next_event(), Request)
    assert parser.next_event() == Data(b"a" * 10)
    assert parser.next_event() is NEED_DATA
    parser.feed(b"b" * 90 + GET)
    assert parser.next_event() == Data(b"b" * 90)
    assert parser.next_event() == EndOfMessage()
    assert parser.buffered_bytes == len(GET)


def test_large_body_arrives_as_data_in_pieces():
    body = bytes(range(256)) * 4096  # 1 MiB
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert isinstance(parser.next_event(), Request)
    received = []
    for start in range(0, len(body), 65536):
        parser.feed(body[start : start + 65536])
        event = parser.next_event()
        assert isinstance(event, Data)
        assert len(event.data) == 65536
        received.append(event.data)
    assert b"".join(received) == body
    assert parser.next_event() == EndOfMessage()


def test_large_chunks_arrive_as_data_in_pieces():
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n")
    assert isinstance(parser.next_event(), Request)
    total = 0
    for _ in range(16):
        parser.feed(b"x" * 65536)
        event = parser.next_event()
        assert event == Data(b"x" * 65536)
        total += len(event.data)
    assert total == 0x100000
    assert parser.next_event() is NEED_DATA
    parser.feed(b"\r\n0\r\n\r\n")
    assert parser.next_event() == EndOfMessage()


def test_leading_empty_lines_are_consumed():
    parser = RequestParser()
    parser.feed(b"\r\n\r\n")
    assert parser.next_event() is NEED_DATA
    assert parser.buffered_bytes == 0
    parser.feed(GET)
    assert isinstance(parser.next_event(), Request)


# -- header semantics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        pytest.param(b"1.1", None, True, id="1.1-default"),
        pytest.param(b"1.1", b"close", False, id="1.1-close"),
        pytest.param(b"1.1", b"keep-alive", True, id="1.1-keep-alive"),
        pytest.param(b"1.1", b"Upgrade, Close", False, id="1.1-close-in-list"),
        pytest.param(b"1.1", b"closed", True, id="1.1-not-a-close-token"),
        pytest.param(b"1.0", None, False, id="1.0-default"),
        pytest.param(b"1.0", b"keep-alive", True, id="1.0-keep-alive"),
        pytest.param(b"1.0", b"KEEP-ALIVE", True, id="1.0-keep-alive-upper"),
        pytest.param(b"1.0", b"keep-alive, close", False, id="1.0-close-wins"),
        pytest.param(b"1.2", None, True, id="1.2-persists-as-1.1"),
        pytest.param(b"1.9", b"close", False, id="1.9-close"),
    ],
)
def test_keep_alive(version, connection, keep_alive):
    head = b"GET / HTTP/" + version + b"\r\nHost: a\r\n"
    if connection is not None:
        head += b"Connection: " + connection + b"\r\n"
    parser = RequestParser()
    parser.feed(head + b"\r\n")
    request = parser.next_event()
    assert isinstance(request, Request)
    assert request.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("target", "path", "query", "host"),
    [
        pytest.param(b"/", b"/", b"", b"a", id="root"),
        pytest.param(b"/p?", b"/p", b"", b"a", id="empty-query"),
        pytest.param(b"/p??x", b"/p", b"?x", b"a", id="second-question-mark"),
        pytest.param(b"http://h:1", b"/", b"", b"h:1", id="absolute-no-path"),
        pytest.param(b"http://h?q", b"/", b"q", b"h", id="absolute-query-no-path"),
        pytest.param(b"http://[::1]:8/x", b"/x", b"", b"[::1]:8", id="absolute-ipv6"),
    ],
)
def test_target_forms(target, path, query, host):
    parser = RequestParser()
    parser.feed(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    request = parser.next_event()
    assert isinstance(request, Request)
    assert (request.target, request.path, request.query, request.host) == (
        target,
        path,
        query,
        host,
    )


@pytest.mark.parametrize("minor", [b"2", b"5", b"9"])
def test_higher_minor_version_is_processed_as_1_1(minor):
    # RFC 9110 §2.5: a recipient processes a higher minor version as the highest it supports.
    parser = RequestParser()
    parser.feed(b"GET /v HTTP/1." + minor + b"\r\nHost: a\r\n\r\n")
    request = parser.next_event()
    assert isinstance(request, Request)
    assert request.http_version == b"1.1"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"Content-Type", id="content-type"),
        pytest.param(b"Authorization", id="authorization"),
        pytest.param(b"Proxy-Authorization", id="proxy-authorization"),
        pytest.param(b"Range", id="range"),
        pytest.param(b"If-Range", id="if-range"),
        pytest.param(b"If-Modified-Since", id="if-modified-since"),
        pytest.param(b"If-Unmodified-Since", id="if-unmodified-since"),
    ],
)
def test_a_singleton_field_in_two_lines_is_400(name):
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": x\r\n" + name + b": y\r\n\r\n")
    with pytest.raises(InvalidHeaderError) as caught:
        parser.next_event()
    assert caught.value.status_code == 400
    assert name.lower().decode() in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"Accept", id="list-field"),
        pytest.param(b"If-None-Match", id="list-precondition"),
        pytest.param(b"X-Custom", id="unknown-field"),
    ],
)
def test_a_list_field_in_two_lines_is_kept(name):
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": x\r\n" + name + b": y\r\n\r\n")
    request = parser.next_event()
    assert isinstance(request, Request)
    lowered = name.lower()
    assert [value for key, value in request.headers if key == lowered] == [b"x", b"y"]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/frag#x", id="origin-form"),
        pytest.param(b"/?q#", id="after-query"),
        pytest.param(b"http://h/p#f", id="absolute-form"),
    ],
)
def test_a_fragment_in_the_target_is_400(target):
    parser = RequestParser()
    parser.feed(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(InvalidTargetError, match="fragment"):
        parser.next_event()


# -- the same head again on a connection: the Request of the previous one -----------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", id="get"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", id="close"),
        pytest.param(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", id="1.0-no-host"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", id="1.0"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, close\r\n\r\n", id="list"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", id="length-0"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", id="length"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
            id="chunked-trailers",
        ),
        pytest.param(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
            id="expect",
        ),
        pytest.param(b"GET http://b:8/p?q HTTP/1.1\r\nHost: a\r\n\r\n", id="absolute-form"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 5000 + b"\r\n\r\n", id="long"),
    ],
)
def test_a_repeated_message_gives_what_a_fresh_parser_gives(message):
    fresh = RequestParser()
    fresh.feed(message)
    expected = events_until_need_data(fresh)
    parser = RequestParser()
    for _ in range(3):
        parser.feed(message)
        assert events_until_need_data(parser) == expected
    parser.feed(message * 3)  # pipelined
    assert events_until_need_data(parser) == expected * 3


@pytest.mark.parametrize(
    ("second", "error"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHeaderError, id="bad-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", MissingHostError, id="two"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n", InvalidHeaderError, id="ws"),
        pytest.param(b"GET # HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTargetError, id="target"),
    ],
)
def test_a_head_that_differs_from_the_previous_one_is_checked_anew(second, error):
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(events_until_need_data(parser)) == 2
    parser.feed(second)
    with pytest.raises(error):
        parser.next_event()


def test_the_parser_makes_the_request_the_constructor_makes():
    parser = RequestParser()
    parser.feed(
        b"PUT /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    made = parser.next_event()
    expected = Request(
        method=b"PUT",
        target=b"/p?q=1",
        path=b"/p",
        query=b"q=1",
        http_version=b"1.1",
        headers=((b"host", b"h"), (b"content-length", b"2"), (b"expect", b"100-continue")),
        content_length=2,
        is_chunked=False,
        keep_alive=True,
        expect_continue=True,
        host=b"h",
    )
    assert made == expected
    assert (repr(made), hash(made)) == (repr(expected), hash(expected))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.host = b"x"  # type: ignore[misc]
