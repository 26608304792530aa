"""Strict option checking for the pz-rail-deepz stages.

RAIL and ceci accept any key in a stage's configuration: a misspelled option (``n_fold=10``) is
stored and silently ignored. :class:`CheckedOptions`, mixed into every pz-rail-deepz stage, rejects
such keys before any work starts, naming the key and the closest valid option names.

Only the keys set for *this* stage are checked: keyword arguments of ``make_stage`` (and of
``rail.interactive``), command-line arguments, and the stage's own section of a ceci config file.
The ``global`` section of a config file is shared by all stages and is not checked. Keys that RAIL
and ceci themselves pass are always accepted: ``name``, ``config``, ``aliases``, the stage's input
and output tags (and their aliases), ceci's command-line and execution keys (``mpi``, ``pdb``,
``cprofile``, ``threads_per_process``, ``nprocess``, ...), the interactive API's keys
(``force_exact``, the entrypoint's argument names) and RAIL's shared parameter names
(``SHARED_PARAMS``: ``zmin``, ``bands``, ...; a catalog tag or pipeline may set them everywhere).

Helpers for value checks (:func:`check_choice`, :func:`check_number`) raise :class:`OptionError`
with the option name and the allowed values.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "OptionError",
    "RESERVED_KEYS",
    "CheckedOptions",
    "closest",
    "unknown_option_error",
    "check_choice",
    "check_number",
    "check_band_lists",
]

# keys ceci and RAIL put into (or pass through) a stage's configuration
RESERVED_KEYS = frozenset(
    {
        # ceci construction and command line
        "name", "config", "aliases", "connections", "comm", "stage_name", "mpi", "pdb", "cprofile",
        "memmon", "trace",
        # ceci pipeline / execution settings (stage entries of a pipeline file, run config)
        "classname", "module_name", "threads_per_process", "nprocess", "nodes", "mem_per_process",
        "image", "volume", "python_paths", "site", "launcher", "log_dir", "output_dir", "resume",
        "inputs", "modules", "registry", "to_run",
        # rail.interactive
        "force_exact",
    }
)


class OptionError(ValueError):
    """A stage option is unknown or has an invalid value."""


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (difflib), best first."""
    valid = sorted(set(valid))
    low = name.lower()
    found = [v for v in valid if v.lower() == low]  # case-only slips first
    found += [v for v in difflib.get_close_matches(name, valid, n=n, cutoff=0.6) if v not in found]
    if not found:  # prefix/suffix slips
        found = [v for v in valid if len(low) > 3 and (low in v.lower() or v.lower() in low)]
    return found[:n]


def unknown_option_error(owner: str, keys: Sequence[str], valid: Iterable[str]) -> OptionError:
    """The error for unknown option names, with suggestions."""
    valid = sorted(set(valid))
    parts = []
    for key in keys:
        near = closest(key, valid)
        hint = f"did you mean {' or '.join(repr(v) for v in near)}?" if near else "no similar option"
        parts.append(f"{key!r} ({hint})")
    return OptionError(
        f"{owner}: unknown option{'s' if len(keys) > 1 else ''} {', '.join(parts)}. "
        f"Valid options: {', '.join(valid)}"
    )


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        near = closest(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise OptionError(f"option {name!r} = {value!r} is invalid{hint}: allowed values are {list(choices)}")


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """Raise unless ``value`` is a number (an integer when ``integer``) in the given interval."""
    import math

    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        kind = "an integer" if integer else "a number"
        raise OptionError(f"option {name!r} = {value!r} is invalid: expected {kind} in {span}")


def check_band_lists(bands: Sequence[str], err_bands: Sequence[str], ref_band: str | None = None,
                     mag_limits: Mapping[str, float] | None = None) -> None:
    """Raise when the band options do not fit together (lengths, duplicates, ref_band, mag_limits)."""
    bands, err_bands = list(bands), list(err_bands)
    if not bands:
        raise OptionError("option 'bands' is empty: give the magnitude column names")
    if len(bands) != len(err_bands):
        raise OptionError(f"options 'bands' ({len(bands)} columns) and 'err_bands' ({len(err_bands)} columns) "
                          "must have the same length")
    for name, cols in (("bands", bands), ("err_bands", err_bands)):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise OptionError(f"option {name!r} lists column(s) {dup} more than once")
    both = sorted(set(bands) & set(err_bands))
    if both:
        raise OptionError(f"column(s) {both} appear in both 'bands' and 'err_bands'")
    if ref_band is not None and ref_band not in bands:
        near = closest(ref_band, bands, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise OptionError(f"option 'ref_band' = {ref_band!r} is not one of 'bands'{hint}: allowed values are {bands}")
    if mag_limits is not None:
        missing = [b for b in bands if b not in mag_limits]
        if missing:
            raise OptionError(f"option 'mag_limits' has no entry for band(s) {missing}")


def _explicit_keys(args: Any) -> set[str]:
    """Keys given explicitly in ceci ``args`` (a dict from make_stage or an argparse namespace)."""
    if not isinstance(args, Mapping):
        args = vars(args)
    return {str(k) for k, v in args.items() if v is not None}


def _config_section_keys(config: Any, instance_name: str) -> set[str]:
    """Keys of this stage's own section of a ceci config (a path, a dict or None); not 'global'."""
    if config is None or (isinstance(config, str) and config in ("", "None", "none")):
        return set()
    if isinstance(config, Mapping):
        overall = config
    else:
        import yaml
        from ceci.pipeline.templates import read_and_apply_template

        overall = yaml.safe_load(read_and_apply_template(config)) or {}
    section = overall.get(instance_name, {}) if isinstance(overall, Mapping) else {}
    return set(map(str, section)) if isinstance(section, Mapping) else set()


class CheckedOptions:
    """Mixin for RAIL stages: reject unknown option names before work starts.

    Put it first in the bases (``class S(CheckedOptions, CatInformer)``). Names are checked when
    the stage is built and again by :meth:`check_options` (called from ``validate()``), which also
    runs the stage's value checks, :meth:`_check_option_values` (override it).
    """

    _user_keys: set[str]
    _known_keys: set[str]

    def read_config(self, args: Any) -> None:  # ceci hook: record which keys the user set
        super().read_config(args)  # type: ignore[misc]
        self._user_keys = _explicit_keys(args) | _config_section_keys(
            self._inputs.get("config") if isinstance(getattr(self, "_inputs", None), dict) else None,  # type: ignore[attr-defined]
            self.instance_name,  # type: ignore[attr-defined]
        )

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)  # type: ignore[call-arg]
        self._known_keys = set(self.config.keys())  # type: ignore[attr-defined]
        self._check_option_names(getattr(self, "_user_keys", set()))

    @classmethod
    def accepted_keys(cls) -> set[str]:
        """Every key this stage accepts: its options plus the keys RAIL and ceci pass."""
        from rail.core.common_params import SHARED_PARAMS

        keys = set(cls.config_options) | RESERVED_KEYS | set(SHARED_PARAMS)  # type: ignore[attr-defined]
        keys |= set(cls.input_tags()) | set(cls.output_tags())  # type: ignore[attr-defined]
        entry = getattr(cls, getattr(cls, "entrypoint_function", "") or "", None)
        if callable(entry):
            try:
                keys |= {p for p in inspect.signature(entry).parameters if p not in ("self", "args", "kwargs")}
            except (TypeError, ValueError):  # pragma: no cover
                pass
        return keys

    def _check_option_names(self, keys: Iterable[str]) -> None:
        accepted = self.accepted_keys() | set(self.get_aliases().values())  # type: ignore[attr-defined]
        unknown = sorted(k for k in keys if k not in accepted)
        if unknown:
            valid = set(self.config_options)  # type: ignore[attr-defined]
            raise unknown_option_error(f"{type(self).__name__} '{self.instance_name}'", unknown, valid)  # type: ignore[attr-defined]

    def check_options(self) -> None:
        """Check option names (including keys added since construction) and values."""
        added = set(self.config.keys()) - self._known_keys  # type: ignore[attr-defined]
        self._check_option_names(getattr(self, "_user_keys", set()) | added)
        self._check_option_values()

    def _check_option_values(self) -> None:
        """Stage-specific value checks; raise :class:`OptionError` (default: nothing)."""

    def validate(self) -> None:
        self.check_options()
        super().validate()  # type: ignore[misc]
