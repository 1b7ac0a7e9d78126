"""What an option is, and one codec per kind of option value.

Design note: every option (a ``ServerConfig`` field, see ``config.py``) has a ``Kind``, and each
kind has exactly one ``Codec``, declared here once. Every place that reads, checks, shows or
passes on an option value goes through it:

* ``coerce(value)``: a Python value (``settings.WSGISERVE``, ``call_command``, the constructor,
  JSON from a configuration reload) checked against the kind;
* ``parse(text)``: the text of a ``WSGISERVE_*`` variable or a command-line argument;
* ``show(value)``: the value as written in settings (``docs/settings.md``, ``--print-config``);
  ``brief(value)``: the shorter form of the reload log (``TIMEOUT 30 -> 60``);
* ``add_argument()`` and ``arguments(value)``: the command-line flag, and the words that give a
  value again (``--systemd-unit`` passes command-line options on to ``ExecStart=``);
* ``to_json(value)``: the value as JSON data for a configuration reload (the ``--reload-check``
  output and the handover across exec); ``coerce`` reads it back.

Errors are ``ValueError`` with a message for the operator; ``config.py`` wraps them in a
``ConfigError`` naming the option and the source of the value.

Imports only the stdlib; never Django.
"""

from __future__ import annotations

import argparse
import enum
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["CODECS", "ENV_PREFIX", "METADATA_KEY", "Codec", "Kind", "Option", "option"]

ENV_PREFIX = "WSGISERVE_"
METADATA_KEY = "django_wsgiserve.option"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_T = TypeVar("_T")


class Kind(enum.Enum):
    """The type of an option; the value is the name shown in the docs."""

    INT = "integer"
    SECONDS = "seconds"
    BOOL = "boolean"
    STR = "string"
    LIST = "list of strings"
    OCTAL = "octal integer"


# ---------------------------------------------------------------------------------------------
# The codecs
# ---------------------------------------------------------------------------------------------


class Codec:
    """Reads, checks, shows and passes on the values of one ``Kind`` (see the module notes)."""

    expected = "a value"  # completes "expected ..., got ..." in error messages
    metavar = "VALUE"  # the command-line placeholder when the option declares none

    def coerce(self, value: object) -> object:
        """A Python value checked against the kind; raises ValueError."""
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        """An environment variable's (or a command-line argument's) text; raises ValueError."""
        raise ValueError(f"expected {self.expected}, got {text!r}")

    def from_cli(self, value: object) -> object:
        """A command-line value: text from argparse, or a typed value from ``call_command``."""
        return self.parse(value) if isinstance(value, str) else self.coerce(value)

    def show(self, value: object) -> str:
        """How the value is written in settings: ``8``, ``'json'``, ``['127.0.0.1:8000']``."""
        return repr(value)

    def brief(self, value: object) -> str:
        """The value in the reload log's list of changes."""
        return self.show(value)

    def to_json(self, value: object) -> object:
        """The value as JSON data; ``coerce`` reads it back."""
        return value

    def flags(self, declared: Option) -> tuple[str, ...]:
        """The command-line flags of an option of this kind."""
        return (declared.flag,)

    def add_argument(self, group: Any, declared: Option, help_text: str) -> None:
        """Add the option's flag to an argparse group; the value stays text (None: not given)."""
        group.add_argument(
            declared.flag,
            dest=declared.name,
            default=None,
            metavar=self._metavar(declared),
            help=help_text,
        )

    def arguments(self, declared: Option, value: Any) -> list[str]:
        """Command-line words that set the option to ``value`` again."""
        return [declared.flag, str(value)]

    def _metavar(self, declared: Option) -> str:
        if declared.choices:
            return "{" + ",".join(declared.choices) + "}"
        return declared.metavar or self.metavar

    def _mismatch(self, value: object) -> ValueError:
        return ValueError(f"expected {self.expected}, got {type(value).__name__} {value!r}")


def _is_number(value: object) -> bool:
    # bool is an int subclass, but True is not a number of threads.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _IntCodec(Codec):
    expected = "an integer"
    metavar = "N"

    def coerce(self, value: object) -> object:
        if _is_number(value) and isinstance(value, int):
            return value
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        stripped = text.strip()
        if re.fullmatch(r"[+-]?[0-9]+", stripped):
            return int(stripped)
        return super().parse(text)


class _SecondsCodec(Codec):
    expected = "a number of seconds"
    metavar = "SECONDS"

    def coerce(self, value: object) -> object:
        if not _is_number(value):
            raise self._mismatch(value)
        assert isinstance(value, (int, float))
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number of seconds, got {value!r}")
        return float(value)

    def parse(self, text: str) -> object:
        try:
            seconds = float(text.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return seconds
        return super().parse(text)

    def brief(self, value: object) -> str:
        return f"{value:g}" if _is_number(value) else repr(value)

    def arguments(self, declared: Option, value: Any) -> list[str]:
        return [declared.flag, f"{value:g}"]


class _BoolCodec(Codec):
    expected = "True or False (environment: 1/0, true/false, yes/no, on/off)"

    def coerce(self, value: object) -> object:
        if isinstance(value, bool):
            return value
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        word = text.strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        return super().parse(text)

    def flags(self, declared: Option) -> tuple[str, ...]:
        return (declared.flag, declared.negative_flag)

    def add_argument(self, group: Any, declared: Option, help_text: str) -> None:
        group.add_argument(
            declared.flag,
            dest=declared.name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )

    def arguments(self, declared: Option, value: Any) -> list[str]:
        return [declared.flag if value else declared.negative_flag]


class _StrCodec(Codec):
    expected = "a string"
    metavar = "TEXT"

    def coerce(self, value: object) -> object:
        if isinstance(value, str):
            return value
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        return text  # as given: spaces may matter (SERVER_HEADER)

    def from_cli(self, value: object) -> object:
        return self.coerce(value)


class _ListCodec(Codec):
    expected = "a list of strings (environment: comma-separated)"

    def coerce(self, value: object) -> object:
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
        if isinstance(value, str):
            raise ValueError(
                f"expected a list of strings, got the string {value!r}: write [{value!r}]"
            )
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        return tuple(item.strip() for item in text.split(",") if item.strip())

    def show(self, value: object) -> str:
        return repr(list(value)) if isinstance(value, (list, tuple)) else repr(value)

    def to_json(self, value: object) -> object:
        return list(value) if isinstance(value, (list, tuple)) else value

    def add_argument(self, group: Any, declared: Option, help_text: str) -> None:
        group.add_argument(
            declared.flag,
            dest=declared.name,
            action="append",  # a repeated flag, one entry each
            default=None,
            metavar=self._metavar(declared),
            help=help_text,
        )

    def arguments(self, declared: Option, value: Any) -> list[str]:
        return [word for item in value for word in (declared.flag, item)]


class _OctalCodec(Codec):
    """A file mode; None keeps the inherited one."""

    expected = "an octal integer such as 0o022 or '022'"
    metavar = "MODE"

    def coerce(self, value: object) -> object:
        if value is None or (_is_number(value) and isinstance(value, int)):
            return value
        if isinstance(value, str):
            return self.parse(value)
        raise self._mismatch(value)

    def parse(self, text: str) -> object:
        stripped = text.strip()
        if not stripped or stripped == "None":
            return None
        digits = stripped.lower().removeprefix("0o")
        if re.fullmatch(r"[0-7]+", digits):
            return int(digits, 8)
        return super().parse(text)

    def show(self, value: object) -> str:
        return f"{value:#o}" if isinstance(value, int) else repr(value)

    def arguments(self, declared: Option, value: Any) -> list[str]:
        return [] if value is None else [declared.flag, f"{value:04o}"]


CODECS: Mapping[Kind, Codec] = {
    Kind.INT: _IntCodec(),
    Kind.SECONDS: _SecondsCodec(),
    Kind.BOOL: _BoolCodec(),
    Kind.STR: _StrCodec(),
    Kind.LIST: _ListCodec(),
    Kind.OCTAL: _OctalCodec(),
}


# ---------------------------------------------------------------------------------------------
# Declaring options
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One option, as declared on a ``ServerConfig`` field; ``name`` is the field name."""

    name: str
    kind: Kind
    default: object
    doc: str
    group: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    above: float | None = None  # the value must be strictly greater
    check: Callable[[Any], None] | None = None  # raises ValueError with an operator message
    metavar: str | None = None

    @property
    def codec(self) -> Codec:
        """How values of this option are read, checked, shown and passed on."""
        return CODECS[self.kind]

    @property
    def setting(self) -> str:
        """The key in ``settings.WSGISERVE``, e.g. ``MAX_HEADER_BYTES``."""
        return self.name.upper()

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``WSGISERVE_MAX_HEADER_BYTES``."""
        return ENV_PREFIX + self.setting

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--max-header-bytes``."""
        return "--" + self.name.replace("_", "-")

    @property
    def negative_flag(self) -> str:
        """``--no-<name>``, the flag that sets a boolean option to False."""
        return "--no-" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every command-line flag of the option (``--static``, ``--no-static``)."""
        return self.codec.flags(self)

    def validate(self, value: object) -> None:
        """Check a value of the right kind against the declared limits; raises ValueError."""
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}; got {value!r}")
        if _is_number(value):
            assert isinstance(value, (int, float))
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be at least {self.minimum:g}, got {value!r}")
            if self.above is not None and value <= self.above:
                raise ValueError(f"must be greater than {self.above:g}, got {value!r}")
        if self.check is not None:
            self.check(value)


def option(
    default: _T,
    *,
    doc: str,
    group: str,
    kind: Kind | None = None,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    above: float | None = None,
    check: Callable[[Any], None] | None = None,
    metavar: str | None = None,
) -> _T:
    """Declare a ``ServerConfig`` field as an option; ``kind`` defaults to the default's type."""
    declaration = Option(
        name="",  # filled in from the field name when config.OPTIONS is built
        kind=kind or _kind_of(default),
        default=default,
        doc=doc,
        group=group,
        choices=choices,
        minimum=minimum,
        above=above,
        check=check,
        metavar=metavar,
    )
    result: _T = field(default=default, metadata={METADATA_KEY: declaration})
    return result


def _kind_of(default: object) -> Kind:
    kinds = {bool: Kind.BOOL, int: Kind.INT, float: Kind.SECONDS, str: Kind.STR, tuple: Kind.LIST}
    return kinds[type(default)]
