"""FastCGIConnection against vectors built from the FastCGI 1.0 specification and nginx's stock
fastcgi_params. Every vector is fed whole, byte by byte and in seeded random chunks; the events,
the bytes the connection sends by itself (and those of a server that answers each request as
soon as its body is complete), or the error, must be the same for every split."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve import errors
from django_wsgiserve.errors import ProtocolError
from django_wsgiserve.fastcgi import (
    NEED_DATA,
    CGIRequest,
    ConnectionClosed,
    Data,
    EndOfMessage,
    FastCGIConnection,
    RequestAborted,
)
from tests.cgi_params import (
    FASTCGI_GET,
    FASTCGI_POST,
    FASTCGI_POST_BODY,
    SPLITS,
    as_variables,
    split,
)
from tests.fastcgi.encoder import (
    ABORT,
    AUTHORIZER,
    BEGIN,
    DATA,
    END,
    FILTER,
    GET_VALUES,
    GET_VALUES_RESULT,
    KEEP_CONN,
    PARAMS,
    STDIN,
    STDOUT,
    UNKNOWN_TYPE,
    begin,
    end_request_body,
    nginx_request,
    pairs,
    parse_records,
    record,
    request,
    stream,
)

GET = [(b"REQUEST_METHOD", b"GET")]
# What the test server answers each complete (or aborted) request with.
ANSWER_HEAD = b"Status: 200 OK\r\n\r\n"


def answer(request_id: int) -> list[tuple[int, int, bytes]]:
    return [
        (STDOUT, request_id, ANSWER_HEAD),
        (STDOUT, request_id, b""),
        (END, request_id, end_request_body(0, 0)),
    ]


def run(
    pieces: list[bytes], limits: dict[str, int]
) -> tuple[list[object], bytes, ProtocolError | None]:
    """Feed the pieces, pull every event, then EOF; consecutive Data events are merged. The
    test server answers each request at its EndOfMessage or RequestAborted. Returns the
    events, everything sent and the error."""
    connection = FastCGIConnection(**limits)
    events: list[object] = []
    sent = bytearray()

    def drain() -> None:
        while not events or events[-1] != ConnectionClosed():
            event = connection.next_event()
            sent.extend(connection.data_to_send())
            if event is NEED_DATA:
                return
            if isinstance(event, Data) and events and isinstance(events[-1], Data):
                events[-1] = Data(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, EndOfMessage | RequestAborted):
                writer = connection.response_writer()
                sent.extend(writer.response_head(status="200 OK", headers=[]))
                sent.extend(connection.end_request())

    try:
        for piece in pieces:
            connection.feed(piece)
            drain()
        connection.feed_eof()
        drain()
    except ProtocolError as exc:
        # Replies queued before the failing record are still there to take.
        sent.extend(connection.data_to_send())
        with pytest.raises(type(exc)):  # once failed, the connection stays failed
            connection.next_event()
        return events, bytes(sent), exc
    assert events[-1] == ConnectionClosed()
    assert connection.next_event() == ConnectionClosed()
    return events, bytes(sent), None


def cgi(
    items: list[tuple[bytes, bytes]],
    *,
    target: str = "",
    content_length: int | None = None,
    keep_alive: bool = False,
) -> CGIRequest:
    variables = as_variables(items)
    return CGIRequest(
        variables=variables,
        method=variables["REQUEST_METHOD"],
        target=target,
        content_length=content_length,
        keep_alive=keep_alive,
    )


def get_values(*names: bytes) -> bytes:
    return record(GET_VALUES, 0, pairs([(name, b"") for name in names]))


POST_CL = [(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"5")]
LONG = [*GET, (b"HTTP_X_LONG_" + b"N" * 130, b"v" * 300)]  # four-byte lengths, both
END_1 = EndOfMessage()

VALID: list[Any] = [
    pytest.param(
        nginx_request(FASTCGI_GET),
        {},
        [cgi(FASTCGI_GET, target="/shop/?q=a+b"), END_1, ConnectionClosed()],
        answer(1),
        id="nginx-get",
    ),
    pytest.param(
        nginx_request(FASTCGI_POST, FASTCGI_POST_BODY, flags=KEEP_CONN),
        {},
        [
            cgi(
                FASTCGI_POST,
                target="/upload",
                content_length=len(FASTCGI_POST_BODY),
                keep_alive=True,
            ),
            Data(FASTCGI_POST_BODY),
            END_1,
            ConnectionClosed(),
        ],
        answer(1),
        id="nginx-post-keep-conn",
    ),
    pytest.param(
        nginx_request(GET, flags=KEEP_CONN) + nginx_request(FASTCGI_GET, flags=KEEP_CONN),
        {},
        [
            cgi(GET, keep_alive=True),
            END_1,
            cgi(FASTCGI_GET, target="/shop/?q=a+b", keep_alive=True),
            END_1,
            ConnectionClosed(),
        ],
        answer(1) + answer(1),
        id="two-requests-keep-conn",
    ),
    pytest.param(
        # Records cut inside a name, inside a value and inside a four-byte length.
        request(LONG, param_cuts=[1, 3, 6, 20, 150, 300]),
        {},
        [cgi(LONG), END_1, ConnectionClosed()],
        answer(1),
        id="pair-split-across-records",
    ),
    pytest.param(
        begin() + stream(PARAMS, 1, pairs(GET, long_lengths=True)) + stream(STDIN, 1, b""),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        answer(1),
        id="four-byte-form-for-short-lengths",
    ),
    pytest.param(
        begin()
        + record(PARAMS, 1, pairs(GET), padding=255)
        + record(PARAMS, 1, padding=0)
        + record(STDIN, 1, padding=3),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        answer(1),
        id="unusual-padding",
    ),
    pytest.param(
        request([*GET, (b"HTTP_TRANSFER_ENCODING", b"chunked")], b"hello world", stdin_cuts=[5]),
        {},
        [
            cgi([*GET, (b"HTTP_TRANSFER_ENCODING", b"chunked")]),
            Data(b"hello world"),
            END_1,
            ConnectionClosed(),
        ],
        answer(1),
        id="body-without-content-length",
    ),
    pytest.param(
        request(POST_CL, b"12345", request_id=513),
        {"max_body_bytes": 5},
        [cgi(POST_CL, content_length=5), Data(b"12345"), END_1, ConnectionClosed()],
        answer(513),
        id="request-id-513-body-at-limit",
    ),
    pytest.param(
        get_values(b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"),
        {"max_conns": 250, "max_reqs": 16},
        [ConnectionClosed()],
        [
            (
                GET_VALUES_RESULT,
                0,
                pairs(
                    [
                        (b"FCGI_MAX_CONNS", b"250"),
                        (b"FCGI_MAX_REQS", b"16"),
                        (b"FCGI_MPXS_CONNS", b"0"),
                    ]
                ),
            )
        ],
        id="get-values",
    ),
    pytest.param(
        get_values(b"FCGI_MPXS_CONNS", b"X_UNKNOWN") + get_values(),
        {},
        [ConnectionClosed()],
        [
            (GET_VALUES_RESULT, 0, pairs([(b"FCGI_MPXS_CONNS", b"0")])),
            (GET_VALUES_RESULT, 0, b""),
        ],
        id="get-values-unknown-name-omitted",
    ),
    pytest.param(
        # A management record in the middle of a PARAMS stream is answered at once.
        begin()
        + record(PARAMS, 1, pairs(GET))
        + get_values(b"FCGI_MPXS_CONNS")
        + record(PARAMS, 1)
        + record(STDIN, 1),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        [(GET_VALUES_RESULT, 0, pairs([(b"FCGI_MPXS_CONNS", b"0")])), *answer(1)],
        id="get-values-inside-a-request",
    ),
    pytest.param(
        record(42, 0, b"whatever") + record(BEGIN, 0, bytes(8)) + record(END, 0),
        {},
        [ConnectionClosed()],
        [
            (UNKNOWN_TYPE, 0, bytes([42, 0, 0, 0, 0, 0, 0, 0])),
            (UNKNOWN_TYPE, 0, bytes([BEGIN, 0, 0, 0, 0, 0, 0, 0])),
            (UNKNOWN_TYPE, 0, bytes([END, 0, 0, 0, 0, 0, 0, 0])),
        ],
        id="unknown-management-types",
    ),
    pytest.param(
        # Request 2 arrives while request 1 is active: refused, and its records are ignored.
        begin(1)
        + record(PARAMS, 1, pairs(GET))
        + begin(2, flags=KEEP_CONN)
        + stream(PARAMS, 2, pairs([(b"REQUEST_METHOD", b"DELETE")]))
        + stream(STDIN, 2, b"ignored")
        + record(PARAMS, 1)
        + record(STDIN, 1),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        [(END, 2, end_request_body(0, 1)), *answer(1)],
        id="second-request-cant-mpx",
    ),
    pytest.param(
        begin(1, role=AUTHORIZER, flags=KEEP_CONN)
        + stream(PARAMS, 1, pairs(GET))
        + stream(STDIN, 1, b"")
        + request(GET, request_id=1),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        [(END, 1, end_request_body(0, 3)), *answer(1)],
        id="authorizer-refused-keep-conn",
    ),
    pytest.param(
        begin(1, role=FILTER) + stream(PARAMS, 1, pairs(GET)),
        {},
        [ConnectionClosed()],
        [(END, 1, end_request_body(0, 3))],
        id="filter-refused-then-close",
    ),
    pytest.param(
        # Aborted before its params were complete: ended by the protocol layer itself.
        begin(1, flags=KEEP_CONN)
        + record(PARAMS, 1, pairs(GET))
        + record(ABORT, 1)
        + record(PARAMS, 1)
        + request(GET, request_id=1),
        {},
        [cgi(GET), END_1, ConnectionClosed()],
        [(STDOUT, 1, b""), (END, 1, end_request_body(0, 0)), *answer(1)],
        id="abort-in-params",
    ),
    pytest.param(
        begin(1) + stream(PARAMS, 1, pairs(POST_CL)) + record(STDIN, 1, b"12") + record(ABORT, 1),
        {},
        [cgi(POST_CL, content_length=5), Data(b"12"), RequestAborted(), ConnectionClosed()],
        answer(1),
        id="abort-in-stdin",
    ),
    pytest.param(
        record(STDIN, 5, b"stray") + record(ABORT, 5) + record(PARAMS, 9),
        {},
        [ConnectionClosed()],
        [],
        id="inactive-ids-ignored",
    ),
    pytest.param(
        request(GET),
        {"max_params_bytes": len(pairs(GET))},
        [cgi(GET), END_1, ConnectionClosed()],
        answer(1),
        id="params-at-limit",
    ),
    pytest.param(b"", {}, [ConnectionClosed()], [], id="eof-before-a-byte"),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(("raw", "limits", "expected", "sent"), VALID)
def test_valid(raw, limits, expected, sent, how, request):
    events, output, error = run(split(raw, how, request.node.callspec.id), limits)
    assert error is None, f"{type(error).__name__}: {error}"
    assert events == expected
    assert parse_records(output) == sent


def _invalid(raw: bytes, error: str, status: int, limits: Any = None, **kw: Any) -> Any:
    return pytest.param(raw, limits or {}, error, status, **kw)


INVALID: list[Any] = [
    _invalid(record(GET_VALUES, 0, version=2), "InvalidFastCGIRecordError", 400, id="version-2"),
    _invalid(
        begin() + record(END, 1, bytes(8)), "InvalidFastCGIRecordError", 400, id="end-from-peer"
    ),
    _invalid(
        begin() + record(STDOUT, 1, b"x"), "InvalidFastCGIRecordError", 400, id="stdout-from-peer"
    ),
    _invalid(record(12, 1, b""), "InvalidFastCGIRecordError", 400, id="unknown-type-with-id"),
    _invalid(record(BEGIN, 1, bytes(7)), "InvalidFastCGIRecordError", 400, id="begin-body-7-bytes"),
    _invalid(begin(1) + begin(1), "InvalidFastCGIRecordError", 400, id="begin-active-id-again"),
    _invalid(
        begin() + record(STDIN, 1, b"x"),
        "InvalidFastCGIRecordError",
        400,
        id="stdin-before-params-end",
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(GET)) + record(PARAMS, 1, b"\x01\x01ab"),
        "InvalidFastCGIRecordError",
        400,
        id="params-after-its-end",
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(GET)) + record(DATA, 1, b"x"),
        "InvalidFastCGIRecordError",
        400,
        id="data-stream-for-responder",
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(GET) + b"\x05\x03abc"),
        "InvalidFastCGIRecordError",
        400,
        id="pair-cut-short",
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(GET) + b"\x80\x00"),
        "InvalidFastCGIRecordError",
        400,
        id="four-byte-length-cut",
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(GET) + b"\x05"),
        "InvalidFastCGIRecordError",
        400,
        id="pair-cut-in-lengths",
    ),
    _invalid(
        record(GET_VALUES, 0, b"\x0e\x00FCGI_MAX"),
        "InvalidFastCGIRecordError",
        400,
        id="get-values-cut",
    ),
    _invalid(
        request(POST_CL, b"123456"),
        "InvalidFastCGIRecordError",
        400,
        id="stdin-beyond-content-length",
    ),
    _invalid(
        request(POST_CL, b"1234"), "TruncatedRequestError", 400, id="stdin-short-of-content-length"
    ),
    _invalid(request(GET)[:-3], "TruncatedRequestError", 400, id="eof-in-a-record"),
    _invalid(
        begin() + record(PARAMS, 1, pairs(GET)), "TruncatedRequestError", 400, id="eof-in-params"
    ),
    _invalid(
        begin() + stream(PARAMS, 1, pairs(POST_CL)) + record(STDIN, 1, b"12"),
        "TruncatedRequestError",
        400,
        id="eof-in-stdin",
    ),
    _invalid(
        request(GET),
        "HeaderFieldsTooLargeError",
        431,
        {"max_params_bytes": 16},
        id="params-over-limit",
    ),
    _invalid(
        request(POST_CL, b"12345"),
        "ContentTooLargeError",
        413,
        {"max_body_bytes": 4},
        id="content-length-over-limit",
    ),
    _invalid(
        request(GET, b"12345", stdin_cuts=[2]),
        "ContentTooLargeError",
        413,
        {"max_body_bytes": 4},
        id="body-without-content-length-over-limit",
    ),
    _invalid(request([(b"PATH_INFO", b"/")]), "InvalidCGIVariableError", 400, id="no-method"),
    _invalid(request([*GET, *GET]), "InvalidCGIVariableError", 400, id="duplicate-name"),
    _invalid(
        request([*GET, (b"BAD NAME", b"")]), "InvalidCGIVariableError", 400, id="name-not-token"
    ),
    _invalid(
        request([*GET, (b"CONTENT_LENGTH", b"0x10")]),
        "InvalidContentLengthError",
        400,
        id="bad-content-length",
    ),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(("raw", "limits", "error", "status"), INVALID)
def test_invalid(raw, limits, error, status, how, request):
    events, _, exc = run(split(raw, how, request.node.callspec.id), limits)
    assert exc is not None, f"no error; events: {events}"
    assert type(exc) is getattr(errors, error), f"{type(exc).__name__}: {exc}"
    assert exc.status_code == status


# -- behaviour beyond the vectors --------------------------------------------------------------


def events_until_need_data(connection: FastCGIConnection) -> list[object]:
    events = []
    while (event := connection.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def test_error_response_answers_the_active_request():
    connection = FastCGIConnection(max_body_bytes=4)
    connection.feed(begin(7, flags=KEEP_CONN) + stream(PARAMS, 7, pairs(POST_CL)))
    with pytest.raises(errors.ContentTooLargeError) as info:
        connection.next_event()
    sent = connection.error_response(info.value.status_code, info.value.reason)
    records = parse_records(sent)
    assert records[0][:2] == (STDOUT, 7)
    assert records[0][2].startswith(b"Status: 413 Content Too Large\r\n")
    # FCGI_KEEP_CONN: the closing notice follows, as we close (see the next tests).
    assert records[-3:] == [
        (STDOUT, 7, b""),
        (END, 7, end_request_body(1, 0)),
        (GET_VALUES_RESULT, 0, b""),
    ]
    assert connection.error_response(400, "Bad Request") == b""  # once only


def test_error_response_without_a_request_is_empty():
    connection = FastCGIConnection()
    connection.feed(record(GET_VALUES, 0, version=0))
    with pytest.raises(errors.InvalidFastCGIRecordError):
        connection.next_event()
    assert connection.error_response(400, "Bad Request") == b""


def test_stdin_after_the_end_of_its_stream():
    connection = FastCGIConnection()
    connection.feed(request(GET))
    assert events_until_need_data(connection)[1:] == [END_1]
    connection.feed(record(STDIN, 1, b"more"))
    with pytest.raises(errors.InvalidFastCGIRecordError):
        connection.next_event()


def test_abort_while_the_application_runs():
    connection = FastCGIConnection()
    connection.feed(request(GET))
    assert len(events_until_need_data(connection)) == 2
    connection.feed(record(ABORT, 1) + record(ABORT, 1))
    assert events_until_need_data(connection) == [RequestAborted()]  # the second is ignored
    assert parse_records(connection.end_request()) == [
        (STDOUT, 1, b""),
        (END, 1, end_request_body(0, 0)),
    ]


def test_body_after_an_abort_is_ignored():
    connection = FastCGIConnection()
    connection.feed(begin() + stream(PARAMS, 1, pairs(POST_CL)) + record(STDIN, 1, b"12"))
    connection.feed(record(ABORT, 1) + stream(STDIN, 1, b"345"))
    assert events_until_need_data(connection)[1:] == [Data(b"12"), RequestAborted()]


def test_late_stdin_after_an_early_answer_is_ignored():
    # The application answered before reading the whole body (spec §6.2 allows writing
    # before STDIN ends); the request id is then inactive and the rest is ignored.
    connection = FastCGIConnection()
    connection.feed(
        begin(flags=KEEP_CONN) + stream(PARAMS, 1, pairs(POST_CL)) + record(STDIN, 1, b"12")
    )
    assert events_until_need_data(connection)[1:] == [Data(b"12")]
    connection.end_request(app_status=3)
    connection.feed(stream(STDIN, 1, b"345") + request(GET))
    events = events_until_need_data(connection)
    assert events == [cgi(GET), END_1]


def test_end_request_app_status_and_close():
    connection = FastCGIConnection()
    connection.feed(request(GET))
    events_until_need_data(connection)
    assert not connection.keep_alive
    assert parse_records(connection.end_request(app_status=2**32 - 1))[-1] == (
        END,
        1,
        end_request_body(2**32 - 1, 0),
    )
    assert connection.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    ("flags", "is_closing", "after_end"),
    [
        pytest.param(KEEP_CONN, True, [(GET_VALUES_RESULT, 0, b"")], id="keep-conn-closed"),
        pytest.param(KEEP_CONN, False, [], id="keep-conn-kept"),
        pytest.param(0, True, [], id="no-keep-conn"),
    ],
)
def test_closing_notice_after_end_request(flags, is_closing, after_end):
    # Closing a connection the web server asked to keep: bytes after FCGI_END_REQUEST, in the
    # same send, make it drop the connection rather than reuse it before our FIN arrives.
    connection = FastCGIConnection()
    connection.feed(request(GET, flags=flags))
    events_until_need_data(connection)
    records = parse_records(connection.end_request(is_closing=is_closing))
    assert records[:2] == [(STDOUT, 1, b""), (END, 1, end_request_body(0, 0))]
    assert records[2:] == after_end


def test_request_partly_received_is_buffered_until_its_params_end():
    # Records taken from the buffer for a request not yet delivered still count: the
    # connection is not idle (a drain must not close it, HEADER_TIMEOUT bounds it).
    connection = FastCGIConnection()
    connection.feed(begin(flags=KEEP_CONN) + record(PARAMS, 1, pairs(GET)))
    assert connection.next_event() is NEED_DATA
    assert connection.buffered_bytes > 0
    connection.feed(record(PARAMS, 1) + stream(STDIN, 1, b""))
    assert events_until_need_data(connection) == [cgi(GET, keep_alive=True), END_1]
    assert connection.buffered_bytes == 0
    connection.end_request()
    assert connection.buffered_bytes == 0  # between requests: idle


def test_eof_while_the_application_runs():
    connection = FastCGIConnection()
    connection.feed(request(GET, flags=KEEP_CONN))
    events_until_need_data(connection)
    connection.feed_eof()
    assert connection.next_event() == ConnectionClosed()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="no-request"),
        pytest.param(begin() + record(PARAMS, 1, pairs(GET)), id="params-not-complete"),
    ],
)
def test_no_writer_before_the_request(raw):
    connection = FastCGIConnection()
    connection.feed(raw)
    connection.next_event()
    with pytest.raises(RuntimeError):
        connection.response_writer()
    with pytest.raises(RuntimeError):
        connection.end_request()


def test_get_values_reply_names_each_value_once():
    connection = FastCGIConnection()
    connection.feed(get_values(*[b"FCGI_MPXS_CONNS"] * 3800))  # a reply per name: > 64 KiB
    assert connection.next_event() is NEED_DATA
    assert parse_records(connection.data_to_send()) == [
        (GET_VALUES_RESULT, 0, pairs([(b"FCGI_MPXS_CONNS", b"0")]))
    ]


def test_data_to_send_is_taken_once():
    connection = FastCGIConnection()
    connection.feed(record(UNKNOWN_TYPE + 20, 0))
    assert connection.next_event() is NEED_DATA
    assert parse_records(connection.data_to_send()) == [(UNKNOWN_TYPE, 0, bytes([31]) + bytes(7))]
    assert connection.data_to_send() == b""


def test_incomplete_record_is_kept():
    raw = request(GET)
    connection = FastCGIConnection()
    connection.feed(raw[:12])
    assert connection.next_event() is NEED_DATA
    assert connection.buffered_bytes == 12


def test_feed_after_eof_is_a_caller_bug():
    connection = FastCGIConnection()
    connection.feed_eof()
    with pytest.raises(RuntimeError):
        connection.feed(b"x")
