"""Option schemas: one declaration per option, from which everything else is generated.

An :class:`Option` holds an option's name, type, default, allowed range or choices and help text.
From a list of them come the RAIL stage's ``config_options`` (:func:`stage_parameters`), a plain
dataclass of checked values (:func:`options_dataclass`, :func:`build_options`), the value checks
(:func:`check_values`) and the documentation's option tables (:func:`markdown_table`). Options
marked ``shared`` are RAIL shared parameters (``SHARED_PARAMS``): the stage declares RAIL's
entry, so that catalog tags keep setting them, and the schema only checks their values.

Pure Python: importing this module needs neither torch nor RAIL.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "Option",
    "OptionError",
    "Rule",
    "closest",
    "unknown_option_error",
    "check_choice",
    "check_values",
    "options_dataclass",
    "build_options",
    "stage_parameters",
    "markdown_table",
]

_PY_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict}


class OptionError(ValueError):
    """A stage option is unknown or has an invalid value."""


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (case slips first, then difflib, then sub-strings)."""
    valid = sorted(set(valid))
    low = name.lower()
    found = [v for v in valid if v.lower() == low]
    found += [v for v in difflib.get_close_matches(name, valid, n=n, cutoff=0.6) if v not in found]
    if not found:
        found = [v for v in valid if len(low) > 3 and (low in v.lower() or v.lower() in low)]
    return found[:n]


def unknown_option_error(owner: str, keys: Sequence[str], valid: Iterable[str], list_valid: bool = True) -> OptionError:
    """The error for unknown option names, with the closest valid names (and all of them, ``list_valid``)."""
    valid = sorted(set(valid))
    parts = []
    for key in keys:
        near = closest(key, valid)
        hint = f"did you mean {' or '.join(repr(v) for v in near)}?" if near else "no similar option"
        parts.append(f"{key!r} ({hint})")
    return OptionError(
        f"{owner}: unknown option{'s' if len(keys) > 1 else ''} {', '.join(parts)}"
        + (f". Valid options: {', '.join(valid)}" if list_valid else "")
    )


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`OptionError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        near = closest(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise OptionError(f"option {name!r} = {value!r} is invalid{hint}: allowed values are {list(choices)}")


def _is_number(value: Any, integer: bool, finite: bool = True) -> bool:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    return ok and (math.isfinite(value) or not finite)


@dataclass(frozen=True)
class Option:
    """One stage option.

    Parameters
    ----------
    name, kind, default, help : the option's name, type (``int``, ``float``, ``bool``, ``str``,
        ``list`` or ``dict``), default value and one-line description.
    lo, hi : inclusive bounds of a number, or of every item of a list of numbers (None: open).
    lo_open, hi_open : make the bound exclusive.
    choices : allowed values of a string (or of every item of a list of strings).
    item : type of list items (``int``, ``float`` or ``str``).
    length : exact length of a list (None: any).
    finite : numbers must be finite (False: nan and +-inf are allowed, e.g. sentinel values).
    ordered : a list's items must not decrease (e.g. a range ``[lo, hi]``).
    shared : a RAIL shared parameter (declared through ``SHARED_PARAMS``).
    """

    name: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    item: str | None = None
    length: int | None = None
    finite: bool = True
    ordered: bool = False
    shared: bool = False

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``[0, 1)`` or ``one of 'a', 'b'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.lo is None and self.hi is None:
            return ""
        left, right = ("(" if self.lo_open else "["), (")" if self.hi_open else "]")
        return f"{left}{'-inf' if self.lo is None else self.lo}, {'inf' if self.hi is None else self.hi}{right}"

    def _number_ok(self, value: Any, integer: bool) -> bool:
        if not _is_number(value, integer, self.finite):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def _fail(self, value: Any, expected: str) -> None:
        raise OptionError(f"option {self.name!r} = {value!r} is invalid: expected {expected}")

    def check(self, value: Any) -> None:
        """Raise :class:`OptionError` naming the option unless ``value`` is allowed."""
        span = self.allowed()
        if self.kind in ("int", "float"):
            if not self._number_ok(value, self.kind == "int"):
                self._fail(value, f"{'an integer' if self.kind == 'int' else 'a number'}"
                                  + (f" in {span}" if span else ""))
        elif self.kind == "bool":
            if not isinstance(value, bool):
                self._fail(value, "true or false")
        elif self.kind == "str":
            if not isinstance(value, str):
                self._fail(value, "a string")
            if self.choices is not None:
                check_choice(self.name, value, self.choices)
        elif self.kind == "dict":
            if not isinstance(value, Mapping):
                self._fail(value, "a mapping")
        elif self.kind == "list":
            self._check_list(value, span)

    def _check_list(self, value: Any, span: str) -> None:
        if not isinstance(value, (list, tuple)):
            self._fail(value, "a list")
        if self.length is not None and len(value) != self.length:
            self._fail(value, f"a list of {self.length} values")
        for v in value:
            if self.item in ("int", "float") and not self._number_ok(v, self.item == "int"):
                what = "integers" if self.item == "int" else "numbers"
                self._fail(value, f"a list of {what}" + (f" in {span}" if span else ""))
            if self.item == "str":
                if not isinstance(v, str):
                    self._fail(value, "a list of strings")
                if self.choices is not None and v not in self.choices:
                    self._fail(value, f"a list of values from {list(self.choices)}")
        if self.ordered and any(b < a for a, b in zip(value, value[1:])):
            self._fail(value, f"a list [lo, hi] with lo <= hi" + (f" within {span}" if span else ""))

    def convert(self, value: Any) -> Any:
        """The checked value in its plain Python type (ints as floats for float options, copies of lists)."""
        if self.kind == "float":
            return float(value)
        if self.kind == "list":
            cast = {"int": int, "float": float}.get(self.item or "", lambda v: v)
            return [cast(v) for v in value]
        if self.kind == "dict":
            return dict(value)
        return value


#: a cross-option check: receives the converted values by name, raises OptionError
Rule = Callable[[Mapping[str, Any]], None]


def check_values(options: Sequence[Option], values: Mapping[str, Any], rules: Sequence[Rule] = ()) -> dict[str, Any]:
    """Check every option's value and the cross-option ``rules``; return the converted values."""
    out = {}
    for opt in options:
        if opt.name not in values:
            raise OptionError(f"option {opt.name!r} is missing")
        opt.check(values[opt.name])
        out[opt.name] = opt.convert(values[opt.name])
    for rule in rules:
        rule(out)
    return out


def options_dataclass(cls_name: str, options: Sequence[Option], doc: str, module: str) -> type:
    """A dataclass with one field per option (its default included), for the plain functions."""
    fields = []
    for opt in options:
        default = opt.default
        if isinstance(default, (list, dict)):
            fields.append((opt.name, _PY_TYPES[opt.kind],
                           dataclasses.field(default_factory=lambda d=default: type(d)(d))))
        else:
            fields.append((opt.name, _PY_TYPES[opt.kind], dataclasses.field(default=default)))
    cls = dataclasses.make_dataclass(cls_name, fields)
    cls.__doc__ = doc
    cls.__module__ = module
    return cls


def build_options(cls: type, options: Sequence[Option], values: Mapping[str, Any], rules: Sequence[Rule] = ()) -> Any:
    """An instance of ``cls`` (from :func:`options_dataclass`) from checked, converted values."""
    return cls(**check_values(options, values, rules))


def stage_parameters(options: Sequence[Option]) -> dict[str, Any]:
    """ceci ``config_options`` entries: RAIL's ``SHARED_PARAMS`` for shared options, else a StageParameter."""
    from ceci.config import StageParameter  # pylint: disable=import-outside-toplevel
    from rail.core.common_params import SHARED_PARAMS  # pylint: disable=import-outside-toplevel

    out: dict[str, Any] = {}
    for opt in options:
        if opt.shared:
            out[opt.name] = SHARED_PARAMS
        else:
            default = list(opt.default) if isinstance(opt.default, list) else opt.default
            out[opt.name] = StageParameter(_PY_TYPES[opt.kind], default, msg=opt.help)
    return out


def _md(value: Any) -> str:
    return "`" + repr(value).replace("|", "\\|") + "`" if value != "" else "`''`"


def markdown_table(options: Sequence[Option], shared_defaults: Mapping[str, Any] | None = None) -> str:
    """A Markdown table (option, default, allowed values, meaning) for the documentation.

    ``shared_defaults``: defaults of the shared options (RAIL's, which a catalog tag may change).
    """
    lines = ["| option | default | allowed | meaning |", "|---|---|---|---|"]
    for opt in options:
        default = (shared_defaults or {}).get(opt.name, opt.default)
        meaning = opt.help.replace("|", "\\|")
        if opt.shared:
            meaning += " (RAIL shared parameter: catalog tags set it)"
        lines.append(f"| `{opt.name}` | {_md(default)} | {opt.allowed()} | {meaning} |")
    return "\n".join(lines) + "\n"
