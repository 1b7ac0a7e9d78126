"""UwsgiRequestParser: a sans-I/O parser of the uwsgi protocol as nginx's ``uwsgi_pass`` speaks it.

Design note.

* Wire format (the uwsgi protocol of the uWSGI project, "uwsgi packet header"): 4 bytes
  ``modifier1`` (u8), ``datasize`` (u16 little-endian), ``modifier2`` (u8); then ``datasize``
  bytes of vars, each a (key size u16 LE, key, value size u16 LE, value) pair; then the request
  body, exactly CONTENT_LENGTH bytes. nginx builds exactly this in
  ``ngx_http_uwsgi_create_request`` and refuses a vars block over 65535 bytes ("uwsgi request
  is too big").
* ``modifier1`` 0 means "WSGI request with CGI vars". 30 (uWSGI's
  UWSGI_MODIFIER_MANAGE_PATH_INFO, nginx ``uwsgi_modifier1 30``, used with ``uwsgi_param
  SCRIPT_NAME /prefix`` by sites mounted under a prefix) is the same request whose PATH_INFO
  still starts with SCRIPT_NAME: the parser takes SCRIPT_NAME off the front of PATH_INFO
  (``_strip_script_name``). Other values select other uWSGI plugins (5 PSGI, 6 Lua...) and
  are refused. ``modifier2`` is unused with these (uWSGI ignores it too) and is ignored.
* One request per connection: nginx's uwsgi module never marks an upstream connection
  reusable (only the proxy and FastCGI modules do), so the response ends when the server
  closes the connection. After the request, bytes from the peer are an error and EOF is
  ``ConnectionClosed`` (nginx closing early: its client went away).
* Events, as for ``http.RequestParser``: ``CGIRequest``, zero or more ``Data``, one
  ``EndOfMessage``; ``ConnectionClosed`` on EOF before a byte or after the request. Errors are
  ``ProtocolError`` subclasses; after one the parser is dead and raises again.
* O(n) in bytes received: bytes are appended to one ``bytearray``; while the packet is
  incomplete each ``next_event()`` only compares the buffer length with the size announced
  by the 4-byte header, and the vars block is decoded once, in one pass, when it is complete.
  Body bytes are sliced off the front of the buffer.
* Thread ownership: one parser per connection, used by one thread at a time. Imports only the
  stdlib, ``errors`` and ``http``: no sockets, threads, os, logging or Django.
"""

from __future__ import annotations

import enum
import struct
from typing import Union

from django_wsgiserve.errors import (
    HeaderFieldsTooLargeError,
    InvalidUwsgiPacketError,
    ProtocolError,
    TruncatedRequestError,
)
from django_wsgiserve.http.cgi import CGIRequest, add_variable, build_request
from django_wsgiserve.http.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ParserSignal,
)
from django_wsgiserve.http.receive import ReceiveBuffer

__all__ = ["UwsgiEvent", "UwsgiRequestParser"]

# typing.Union rather than "|", as in http.events.
UwsgiEvent = Union[CGIRequest, Data, EndOfMessage, ConnectionClosed]  # noqa: UP007

_HEADER = struct.Struct("<BHB")  # modifier1, datasize (little-endian), modifier2
_SIZE = struct.Struct("<H")
_WSGI_MODIFIER1 = 0
_MANAGE_PATH_INFO_MODIFIER1 = 30  # a WSGI request; SCRIPT_NAME is still in PATH_INFO
_END = EndOfMessage()


class _State(enum.Enum):
    PACKET = "packet"  # waiting for (or in) the packet header and vars block
    BODY = "body"  # self._remaining body bytes to go
    DONE = "done"  # the body is complete; EndOfMessage is due
    AFTER = "after"  # the request is complete; only EOF may follow
    CLOSED = "closed"  # EOF seen; ConnectionClosed forever
    FAILED = "failed"  # a ProtocolError was raised; raise again forever


class UwsgiRequestParser(ReceiveBuffer):
    """Parse the one request of a uwsgi connection. See the module docstring.

    Limits (plain ints):

    * ``max_vars_bytes``: the vars block (the packet's datasize) -> 431. The default is the
      protocol's own ceiling, 65535 (16-bit datasize). uWSGI's ``buffer-size`` default is
      4096, and its documentation tells everyone with real cookies to raise it; nginx's
      default ``large_client_header_buffers`` (4 x 8 KiB) lets a browser send about 32 KiB of
      headers, which become even more bytes of vars. The peer is a trusted proxy that has
      bounded the client's headers already, so nothing lower is imposed by default.
    * ``max_body_bytes``: CONTENT_LENGTH -> 413 before any body byte is read; the same
      default as ``http.RequestParser`` (nginx's ``client_max_body_size`` of 1 MiB normally
      refuses large bodies first).
    """

    def __init__(self, *, max_vars_bytes: int = 65535, max_body_bytes: int = 104857600) -> None:
        self._max_vars_bytes = max_vars_bytes
        self._max_body_bytes = max_body_bytes
        super().__init__()
        self._state = _State.PACKET
        self._failure: tuple[type[ProtocolError], str] | None = None
        self._remaining = 0  # body bytes still expected

    # -- events --------------------------------------------------------------------------------

    def next_event(self) -> UwsgiEvent | ParserSignal:
        """Return the next event, or ``NEED_DATA``; raise a ``ProtocolError`` on bad input."""
        state = self._state
        try:
            if state is _State.PACKET:
                return self._next_packet()
            if state is _State.BODY:
                return self._next_body()
            if state is _State.DONE:
                self._state = _State.AFTER
                return _END
            if state is _State.AFTER:
                return self._after_request()
            if state is _State.CLOSED:
                return ConnectionClosed()
            assert self._failure is not None
            error_class, message = self._failure
            raise error_class(f"the parser failed earlier: {message}")
        except ProtocolError as exc:
            if self._failure is None:
                self._failure = (type(exc), str(exc))
            self._state = _State.FAILED
            raise

    def _next_packet(self) -> UwsgiEvent | ParserSignal:
        buf = self._buf
        if len(buf) < _HEADER.size:
            return self._need_packet_data()
        modifier1, size, _modifier2 = _HEADER.unpack_from(buf)
        if modifier1 not in (_WSGI_MODIFIER1, _MANAGE_PATH_INFO_MODIFIER1):
            raise InvalidUwsgiPacketError(
                f"modifier1 {modifier1} is not 0 or 30 (a WSGI request); other uWSGI plugins "
                "are not supported"
            )
        if size > self._max_vars_bytes:
            raise HeaderFieldsTooLargeError(
                f"the uwsgi vars block of {size} bytes exceeds {self._max_vars_bytes}"
            )
        end = _HEADER.size + size
        if len(buf) < end:
            return self._need_packet_data()
        variables = _decode_vars(bytes(buf[_HEADER.size : end]))
        del buf[:end]
        if modifier1 == _MANAGE_PATH_INFO_MODIFIER1:
            _strip_script_name(variables)
        request = build_request(
            variables,
            keep_alive=False,
            max_body_bytes=self._max_body_bytes,
            is_stream_delimited=False,
        )
        self._remaining = request.content_length or 0
        self._state = _State.BODY if self._remaining else _State.DONE
        return request

    def _need_packet_data(self) -> ParserSignal | ConnectionClosed:
        if not self._eof:
            return NEED_DATA
        if not self._buf:
            self._state = _State.CLOSED
            return ConnectionClosed()
        raise TruncatedRequestError("the connection closed in the middle of a uwsgi packet")

    def _next_body(self) -> Data | ParserSignal:
        buf = self._buf
        if not buf:
            if self._eof:
                raise TruncatedRequestError("the connection closed in the middle of a body")
            return NEED_DATA
        size = self._remaining
        if size >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            with memoryview(buf) as view:
                data = bytes(view[:size])
            del buf[:size]
        self._remaining -= len(data)
        if not self._remaining:
            self._state = _State.DONE
        return Data(data)

    def _after_request(self) -> ConnectionClosed | ParserSignal:
        if self._buf:
            raise InvalidUwsgiPacketError(
                "bytes after the request: uwsgi carries one request per connection"
            )
        if self._eof:
            self._state = _State.CLOSED
            return ConnectionClosed()
        return NEED_DATA


def _decode_vars(block: bytes) -> dict[str, str]:
    """Decode a complete vars block: (u16 LE size, key, u16 LE size, value) pairs that must
    fill it exactly. One pass; each pair costs two ``unpack_from`` and two slices."""
    variables: dict[str, str] = {}
    end = len(block)
    position = 0
    unpack = _SIZE.unpack_from
    while position < end:
        if position + 2 > end:
            raise InvalidUwsgiPacketError("the vars block ends inside a key size")
        (key_size,) = unpack(block, position)
        key_end = position + 2 + key_size
        if key_end + 2 > end:
            raise InvalidUwsgiPacketError("a uwsgi var runs past the end of the vars block")
        (value_size,) = unpack(block, key_end)
        value_end = key_end + 2 + value_size
        if value_end > end:
            raise InvalidUwsgiPacketError("a uwsgi var runs past the end of the vars block")
        add_variable(variables, block[position + 2 : key_end], block[key_end + 2 : value_end])
        position = value_end
    return variables


def _strip_script_name(variables: dict[str, str]) -> None:
    """modifier1 30: take SCRIPT_NAME off the front of PATH_INFO, as uWSGI does for it
    (``/app`` and ``/app/items/1`` become ``/app`` and ``/items/1``). Only a whole leading
    segment match is taken off (uWSGI cuts len(SCRIPT_NAME) characters blindly); a trailing
    ``/`` of SCRIPT_NAME goes too, since PEP 3333 wants PATH_INFO to start with ``/``. A
    PATH_INFO outside SCRIPT_NAME, or a request without either, is left as sent."""
    script_name = variables.get("SCRIPT_NAME", "").rstrip("/")
    path_info = variables.get("PATH_INFO")
    if not script_name or path_info is None:
        return
    if path_info == script_name or path_info.startswith(script_name + "/"):
        variables["SCRIPT_NAME"] = script_name
        variables["PATH_INFO"] = path_info[len(script_name) :]
