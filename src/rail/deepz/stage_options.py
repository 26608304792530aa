"""Checked option names for the pz-rail-deepz stages (a mixin for RAIL stages).

RAIL and ceci accept any key in a stage's configuration: a misspelled option (``n_fold=10``) is
stored and silently ignored, and RAIL users reuse one config dict for several estimators.
:class:`CheckedOptions`, mixed into every pz-rail-deepz stage, warns about such keys before any work
starts (:class:`UnknownOptionWarning`), naming each key and the closest valid option names; with the
stage option ``strict_options`` set they are an error (:class:`rail.deepz.schema.OptionError`).
Values are always checked.

Only the keys set for *this* stage are checked: keyword arguments of ``make_stage`` (and of
``rail.interactive``), command-line arguments, and the stage's own section of a ceci config file.
The ``global`` section of a config file is shared by all stages and is not checked. Keys that RAIL
and ceci themselves pass are always accepted: ``name``, ``config``, ``aliases``, the stage's input
and output tags (and their aliases), ceci's command-line and execution keys, the interactive API's
keys and RAIL's shared parameter names (``SHARED_PARAMS``; a catalog tag or pipeline may set them).
"""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Any, Iterable, Mapping

from .schema import Option, stage_parameters, unknown_option_error

__all__ = ["RESERVED_KEYS", "STRICT_OPTIONS", "UnknownOptionWarning", "CheckedOptions"]

#: the option every pz-rail-deepz stage has (added to each stage's ``config_options`` by the mixin)
STRICT_OPTIONS = Option("strict_options", "bool", False, "unknown option names are an error instead of a warning")


class UnknownOptionWarning(UserWarning):
    """A stage was given option names it does not have (they are ignored, as in every RAIL stage)."""

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


def _caller_level() -> int:
    """``warnings.warn`` stack level of the first frame outside RAIL and ceci (the user's call)."""
    frame, level = sys._getframe(1), 1  # pylint: disable=protected-access
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("rail", "ceci"):
        frame, level = frame.f_back, level + 1
    return level


class CheckedOptions:
    """Mixin for RAIL stages: warn about unknown option names before work starts (an error with
    ``strict_options``).

    Put it first in the bases (``class S(CheckedOptions, CatInformer)``). Names are checked when
    the stage is built and again by :meth:`check_options` (called from ``validate()``), which also
    runs the stage's value checks, :meth:`_check_option_values` (override it).
    """

    _user_keys: set[str]
    _known_keys: set[str]
    _warned: set[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        options = getattr(cls, "config_options", None)
        if isinstance(options, dict) and STRICT_OPTIONS.name not in options:
            cls.config_options = {**options, **stage_parameters([STRICT_OPTIONS])}

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
        """Warn once per key about unknown names (an error with ``strict_options``)."""
        accepted = self.accepted_keys() | set(self.get_aliases().values())  # type: ignore[attr-defined]
        config = self.config  # type: ignore[attr-defined]
        strict = STRICT_OPTIONS.name in config and bool(config[STRICT_OPTIONS.name])
        warned = getattr(self, "_warned", set())
        unknown = sorted(k for k in keys if k not in accepted and (strict or k not in warned))
        if not unknown:
            return
        owner = f"{type(self).__name__} '{self.instance_name}'"  # type: ignore[attr-defined]
        valid = set(self.config_options)  # type: ignore[attr-defined]
        if strict:
            raise unknown_option_error(owner, unknown, valid)
        self._warned = warned | set(unknown)
        message = unknown_option_error(owner, unknown, valid, list_valid=False)
        warnings.warn(UnknownOptionWarning(f"{message}: ignored (strict_options=True makes unknown names an error)"),
                      stacklevel=_caller_level())

    def check_options(self) -> None:
        """Check option names (including keys added since construction; a warning or, with
        ``strict_options``, an error) and values (always an error)."""
        added = set(self.config.keys()) - self._known_keys  # type: ignore[attr-defined]
        self._check_option_names(getattr(self, "_user_keys", set()) | added)
        self._check_option_values()

    def _check_option_values(self) -> None:
        """Stage-specific value checks; raise :class:`OptionError` (default: nothing)."""

    def validate(self) -> None:
        self.check_options()
        super().validate()  # type: ignore[misc]
