"""The HTTP/1.1 grammar (RFC 9110, RFC 9112, RFC 3986) as regular expressions.

Design note: every ABNF rule the parser and the writer rely on is spelled out here once, as a
bytes regex string named after the rule, with the RFC section it comes from. The compiled
patterns at the bottom are what the hot path uses; they are built at import time so that no
request ever compiles a regex. Patterns are written so that a failed match costs O(len(line)):
no nested quantifiers over overlapping character classes.

Only the stdlib ``re`` module is imported; this module has no state.
"""

from __future__ import annotations

import re

__all__ = [
    "ABSOLUTE_FORM",
    "ABSOLUTE_FORM_RE",
    "AUTHORITY_FORM",
    "AUTHORITY_FORM_RE",
    "BARE_CR_OR_LF_RE",
    "CHUNK_EXT",
    "CHUNK_LINE",
    "CHUNK_LINE_RE",
    "CHUNK_SIZE",
    "CONTENT_LENGTH_RE",
    "CR_OR_LF_RE",
    "FIELD_CONTENT",
    "FIELD_LINE",
    "FIELD_LINE_RE",
    "FIELD_VALUE",
    "FIELD_VCHAR",
    "HOST",
    "HOST_RE",
    "HTTP_VERSION",
    "HTTP_VERSION_RE",
    "IP_LITERAL",
    "OWS",
    "PORT",
    "QUOTED_STRING",
    "REASON_PHRASE_STR",
    "REG_NAME",
    "REQUEST_LINE_11",
    "REQUEST_LINE_11_RE",
    "REQUEST_TARGET",
    "REQUEST_TARGET_RE",
    "STATUS_STR_RE",
    "TCHAR",
    "TOKEN",
    "TOKEN_RE",
    "TOKEN_STR_RE",
    "URI_HOST",
    "VALUE_STR_RE",
]

# --- RFC 9110 §5.6: common rules ------------------------------------------------------------

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                          "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# RFC 9110 §5.6.2: token = 1*tchar
TOKEN = TCHAR + rb"+"
# RFC 9110 §5.6.3: OWS = *( SP / HTAB ); BWS = OWS
OWS = rb"[ \t]*"
# RFC 9110 §5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
_QDTEXT = rb"[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
# RFC 9110 §5.6.4: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
_QUOTED_PAIR = rb"\\[\t \x21-\x7e\x80-\xff]"
# RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
QUOTED_STRING = rb'"(?:' + _QDTEXT + rb"|" + _QUOTED_PAIR + rb')*"'

# --- RFC 9110 §5.5: field values --------------------------------------------------------------

# RFC 9110 §5.5: field-vchar = VCHAR / obs-text   (obs-text = %x80-FF)
FIELD_VCHAR = rb"[\x21-\x7e\x80-\xff]"
# RFC 9110 §5.5: field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
FIELD_CONTENT = FIELD_VCHAR + rb"(?:[\t \x21-\x7e\x80-\xff]*" + FIELD_VCHAR + rb")?"
# RFC 9110 §5.5: field-value = *field-content  (a run of field-content is itself one
# field-content, so "optional field-content" is the same language)
FIELD_VALUE = rb"(?:" + FIELD_CONTENT + rb")?"

# --- RFC 9112 §5: field lines -----------------------------------------------------------------

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS; RFC 9110 §5.1: field-name = token.
# No whitespace is allowed between the name and the colon (RFC 9112 §5.1). Group 1 is the name,
# group 2 the value without the surrounding OWS (None when the value is empty). The value is
# written as field-vchar *( *( SP / HTAB ) field-vchar ), the same language as FIELD_VALUE, but
# unambiguous next to the OWS: the literal "OWS FIELD_VALUE OWS" backtracks quadratically on a
# line of whitespace followed by a CTL (2.5 s for 30 kB), this form is linear.
FIELD_LINE = (
    rb"("
    + TOKEN
    + rb"):"
    + OWS
    + rb"(?:("
    + FIELD_VCHAR
    + rb"(?:[ \t]*"
    + FIELD_VCHAR
    + rb")*)"
    + OWS
    + rb")?"
)

# --- RFC 3986 §3.2 (referenced by RFC 9110 §4.1): authority pieces ----------------------------

_UNRESERVED = rb"A-Za-z0-9\-._~"  # RFC 3986 §2.3 (character-class body)
_SUB_DELIMS = rb"!$&'()*+,;="  # RFC 3986 §2.2 (character-class body)
_PCT_ENCODED = rb"%[0-9A-Fa-f]{2}"  # RFC 3986 §2.1
# RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ); RFC 9110 §4.2.1
# forbids an empty host in http(s) URIs, so one or more here. IPv4address is a subset of it.
REG_NAME = rb"(?:[" + _UNRESERVED + _SUB_DELIMS + rb"]|" + _PCT_ENCODED + rb")+"
# RFC 3986 §3.2.2: IP-literal = "[" ( IPv6address / IPvFuture ) "]". IPv6address is checked
# loosely (hex digits, ":" and "." for an embedded IPv4 tail); IPvFuture exactly.
IP_LITERAL = rb"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[" + _UNRESERVED + _SUB_DELIMS + rb":]+)\]"
# RFC 3986 §3.2.3: port = *DIGIT
PORT = rb"[0-9]*"
# RFC 9110 §4.1: uri-host = <host, see RFC 3986 §3.2.2>
URI_HOST = rb"(?:" + IP_LITERAL + rb"|" + REG_NAME + rb")"
# RFC 9110 §7.2: Host = uri-host [ ":" port ]
HOST = URI_HOST + rb"(?::" + PORT + rb")?"

# --- RFC 9112 §2.3, §3: request line ----------------------------------------------------------

# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT; HTTP-name = %s"HTTP"
HTTP_VERSION = rb"HTTP/[0-9]\.[0-9]"
# RFC 9112 §3.2: request-target; every form is made of visible ASCII (%x21-7E) but "#": no form
# has a fragment (origin-form is absolute-path [ "?" query ], absolute-form is absolute-URI, and
# RFC 3986 §3.3, §3.4 and §4.3 leave "#" out of both). That is all the parser demands before it
# tells the forms apart.
REQUEST_TARGET = rb"[\x21\x22\x24-\x7e]+"
# RFC 9112 §3: request-line = method SP request-target SP HTTP-version; RFC 9110 §9.1:
# method = token. This fast-path pattern accepts only major version 1; group 3 is the minor
# version digit (RFC 9110 §2.5: a higher minor version is processed as 1.1).
REQUEST_LINE_11 = rb"(" + TOKEN + rb") (" + REQUEST_TARGET + rb") HTTP/1\.([0-9])"
# RFC 9112 §3.2.2: absolute-form = absolute-URI, restricted to the http and https schemes
# (scheme is case-insensitive, RFC 9110 §4.2.3). RFC 9110 §4.2.4: userinfo is not allowed, so
# "@" simply fails to match. Group 1 is the authority, group 2 the path-abempty, group 3 the
# query (without "?").
ABSOLUTE_FORM = rb"(?i:https?)://(" + HOST + rb")(/[^?]*)?(?:\?(.*))?"
# RFC 9112 §3.2.3: authority-form = uri-host ":" port (a CONNECT target must name a port).
AUTHORITY_FORM = URI_HOST + rb":[0-9]+"

# --- RFC 9112 §7.1: chunked transfer coding ---------------------------------------------------

# RFC 9112 §7.1: chunk-size = 1*HEXDIG, bounded here to 16 digits (2**64 - 1) so that the
# integer conversion stays cheap and the size line cannot be padded with zeros forever.
CHUNK_SIZE = rb"[0-9A-Fa-f]{1,16}"
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] );
# chunk-ext-name = token; chunk-ext-val = token / quoted-string
CHUNK_EXT = (
    rb"(?:"
    + OWS
    + rb";"
    + OWS
    + TOKEN
    + rb"(?:"
    + OWS
    + rb"="
    + OWS
    + rb"(?:"
    + TOKEN
    + rb"|"
    + QUOTED_STRING
    + rb"))?)*"
)
# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF;
# last-chunk = 1*("0") [ chunk-ext ] CRLF. Group 1 is the size.
CHUNK_LINE = rb"(" + CHUNK_SIZE + rb")" + CHUNK_EXT

# --- RFC 9112 §4: status line, for the writer (native str, as WSGI hands it over) -------------

# RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); WSGI (PEP 3333) gives
# "<3 digits> SP <reason>"; RFC 9110 §15: status codes are 100-599.
REASON_PHRASE_STR = r"[\t\x20-\x7e\x80-\xff]*"

# --- compiled patterns (the hot path uses only these) ----------------------------------------

TOKEN_RE = re.compile(TOKEN)
REQUEST_LINE_11_RE = re.compile(REQUEST_LINE_11)
REQUEST_TARGET_RE = re.compile(REQUEST_TARGET)
HTTP_VERSION_RE = re.compile(HTTP_VERSION)
FIELD_LINE_RE = re.compile(FIELD_LINE)
HOST_RE = re.compile(HOST)
ABSOLUTE_FORM_RE = re.compile(ABSOLUTE_FORM)
AUTHORITY_FORM_RE = re.compile(AUTHORITY_FORM)
CHUNK_LINE_RE = re.compile(CHUNK_LINE)
# RFC 9110 §8.6: Content-Length = 1*DIGIT
CONTENT_LENGTH_RE = re.compile(rb"[0-9]+")
# RFC 9112 §2.2: the line terminator is CRLF. These find CR or LF at all, and a CR not followed
# by LF (only once the next byte is there) or an LF not preceded by CR.
CR_OR_LF_RE = re.compile(rb"[\r\n]")
BARE_CR_OR_LF_RE = re.compile(rb"\r(?=[^\n])|(?<!\r)\n")
# The writer validates native strings (str patterns over the same grammar).
TOKEN_STR_RE = re.compile(TOKEN.decode("ascii"))
# RFC 9110 §5.5: a field value may hold VCHAR, obs-text, SP and HTAB, and nothing else; above
# all no CR, LF or NUL (response splitting, RFC 9112 §11.1).
VALUE_STR_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
STATUS_STR_RE = re.compile(r"[1-5][0-9]{2} " + REASON_PHRASE_STR)
