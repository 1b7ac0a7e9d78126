"""CGI variable sets as nginx sends them over uwsgi_pass and fastcgi_pass, for the uwsgi and
FastCGI tests: the stock ``uwsgi_params`` / ``fastcgi_params`` files evaluated for a few
requests, followed by the request headers as nginx turns them into ``HTTP_*`` variables (name
upper-cased, ``-`` to ``_``; repeated headers joined with ", ", cookies with "; ").

Also the splitting helper every protocol test uses: each byte stream is fed whole, byte by
byte and in chunks from seeds derived from the test id.
"""

from __future__ import annotations

import random
import zlib

Pairs = list[tuple[bytes, bytes]]

SPLITS = ("whole", "bytes", "random-0", "random-1", "random-2")


def split(raw: bytes, how: str, name: str) -> list[bytes]:
    """Cut ``raw`` into the pieces fed to a parser, one way of SPLITS."""
    if how == "whole":
        return [raw]
    if how == "bytes":
        return [raw[i : i + 1] for i in range(len(raw))]
    rng = random.Random(zlib.crc32(name.encode()) + int(how.rpartition("-")[2]))
    pieces = []
    start = 0
    while start < len(raw):
        size = rng.randint(1, 40)
        pieces.append(raw[start : start + size])
        start += size
    return pieces


def _pairs(text: str) -> Pairs:
    """``NAME value`` lines -> pairs; the value may be empty; ``\\xNN`` escapes allowed."""
    pairs = []
    for line in text.strip("\n").splitlines():
        name, _, value = line.partition(" ")
        raw = value.encode("latin-1").decode("unicode_escape").encode("latin-1")
        pairs.append((name.encode("ascii"), raw))
    return pairs


# uwsgi_params for "GET /blog/caf%C3%A9?page=2 HTTP/1.1" on an HTTPS server block; PATH_INFO
# is $document_uri, which nginx has percent-decoded (UTF-8 bytes of "café").
UWSGI_GET = _pairs(
    """
QUERY_STRING page=2
REQUEST_METHOD GET
CONTENT_TYPE
CONTENT_LENGTH
REQUEST_URI /blog/caf%C3%A9?page=2
PATH_INFO /blog/caf\\xc3\\xa9
DOCUMENT_ROOT /usr/share/nginx/html
SERVER_PROTOCOL HTTP/1.1
REQUEST_SCHEME https
HTTPS on
REMOTE_ADDR 203.0.113.7
REMOTE_PORT 51234
SERVER_PORT 443
SERVER_NAME example.com
HTTP_HOST example.com
HTTP_USER_AGENT Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0
HTTP_ACCEPT text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8
HTTP_ACCEPT_LANGUAGE fr-FR,fr;q=0.8,en;q=0.5
HTTP_ACCEPT_ENCODING gzip, deflate, br, zstd
HTTP_COOKIE csrftoken=abc123; sessionid=xyz789
HTTP_X_FORWARDED_FOR 198.51.100.1, 203.0.113.7
"""
)

# uwsgi_params for a form POST over plain HTTP (no HTTPS variable: "if_not_empty").
UWSGI_POST_BODY = b"title=Hello&text=caf%C3%A9+%26+cr%C3%A8me&csrfmiddlewaretoken=abc123"
UWSGI_POST = _pairs(
    f"""
QUERY_STRING
REQUEST_METHOD POST
CONTENT_TYPE application/x-www-form-urlencoded
CONTENT_LENGTH {len(UWSGI_POST_BODY)}
REQUEST_URI /admin/blog/post/add/
PATH_INFO /admin/blog/post/add/
DOCUMENT_ROOT /usr/share/nginx/html
SERVER_PROTOCOL HTTP/1.1
REQUEST_SCHEME http
REMOTE_ADDR 192.0.2.10
REMOTE_PORT 40000
SERVER_PORT 80
SERVER_NAME _
HTTP_HOST intranet.example
HTTP_CONTENT_TYPE application/x-www-form-urlencoded
HTTP_CONTENT_LENGTH {len(UWSGI_POST_BODY)}
HTTP_ORIGIN http://intranet.example
HTTP_REFERER http://intranet.example/admin/blog/post/add/
HTTP_COOKIE csrftoken=abc123
"""
)

# A client sent its body chunked: nginx read it whole, then set CONTENT_LENGTH; the client's
# Transfer-Encoding header still travels as HTTP_TRANSFER_ENCODING.
CHUNKED_BODY = b'{"items": [1, 2, 3]}\r\n\x00\xff binary tail'
UWSGI_CHUNKED_BY_CLIENT = _pairs(
    f"""
QUERY_STRING
REQUEST_METHOD PUT
CONTENT_TYPE application/json
CONTENT_LENGTH {len(CHUNKED_BODY)}
REQUEST_URI /api/items/7
PATH_INFO /api/items/7
SERVER_PROTOCOL HTTP/1.1
REMOTE_ADDR 192.0.2.10
SERVER_PORT 80
SERVER_NAME api.example
HTTP_HOST api.example
HTTP_TRANSFER_ENCODING chunked
HTTP_CONTENT_TYPE application/json
"""
)

# fastcgi_params for "GET /shop/?q=a+b HTTP/1.1" (SCRIPT_NAME is $fastcgi_script_name, the
# URI for a non-PHP location; no PATH_INFO in the stock file).
FASTCGI_GET = _pairs(
    """
QUERY_STRING q=a+b
REQUEST_METHOD GET
CONTENT_TYPE
CONTENT_LENGTH
SCRIPT_NAME /shop/
REQUEST_URI /shop/?q=a+b
DOCUMENT_URI /shop/
DOCUMENT_ROOT /srv/www
SERVER_PROTOCOL HTTP/1.1
REQUEST_SCHEME https
HTTPS on
GATEWAY_INTERFACE CGI/1.1
SERVER_SOFTWARE nginx/1.26.2
REMOTE_ADDR 2001:db8::7
REMOTE_PORT 61000
SERVER_ADDR 2001:db8::1
SERVER_PORT 443
SERVER_NAME shop.example
HTTP_HOST shop.example
REDIRECT_STATUS 200
HTTP_USER_AGENT curl/8.5.0
HTTP_ACCEPT */*
"""
)

FASTCGI_POST_BODY = bytes(range(256)) * 300  # 76,800 bytes: more than one STDIN record
FASTCGI_POST = _pairs(
    f"""
QUERY_STRING
REQUEST_METHOD POST
CONTENT_TYPE application/octet-stream
CONTENT_LENGTH {len(FASTCGI_POST_BODY)}
SCRIPT_NAME /upload
REQUEST_URI /upload
DOCUMENT_URI /upload
DOCUMENT_ROOT /srv/www
SERVER_PROTOCOL HTTP/1.1
REQUEST_SCHEME http
GATEWAY_INTERFACE CGI/1.1
SERVER_SOFTWARE nginx/1.26.2
REMOTE_ADDR 192.0.2.10
REMOTE_PORT 40000
SERVER_ADDR 192.0.2.1
SERVER_PORT 80
SERVER_NAME files.example
HTTP_HOST files.example
REDIRECT_STATUS 200
HTTP_CONTENT_TYPE application/octet-stream
HTTP_CONTENT_LENGTH {len(FASTCGI_POST_BODY)}
"""
)


def as_variables(pairs: Pairs) -> dict[str, str]:
    """What a parser must make of ``pairs``: latin-1 str, order kept."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in pairs}
