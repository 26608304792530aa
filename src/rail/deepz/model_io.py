"""The Deepz model: packing a trained network into plain data, unpacking it, and its file format.

:func:`pack_model` and :func:`unpack_model` are the only places that know how a network, its
feature scaler, calibration and prior are stored; :func:`save_model` / :func:`load_model` write
and read the file.

A model is a dict of plain data (see :func:`validate_model`)::

    format          "pz-rail-deepz-model"
    format_version  int (FORMAT_VERSION)
    arrays          {name: numpy array}: network weights ("net/<parameter>"), feature scaler,
                    prior mixture (fallback PDF for rows that cannot be normalised)
    meta            JSON-able dict: architecture, bands, calibration, training summary,
                    informer config and package versions

On disk it is a zip archive written by ``numpy.savez`` (one ``.npy`` entry per array, plus the
entry ``__meta__`` holding the UTF-8 JSON of everything else, including a SHA-256 checksum of all
arrays, ``sha256``, and one of the metadata, ``meta_sha256``). Arrays of Python objects are refused
when saving (they would be pickled); loading uses ``numpy.load(allow_pickle=False)``, so no code is
ever executed. The file is written to a temporary name in the same folder, flushed to disk and
renamed, so a crash never leaves a partial model under the final name (an older model there stays
intact). A truncated, tampered, foreign or newer-format file raises :class:`ModelFormatError`
saying which.

RAIL's notebooks also save a trained model with ``pickle.dump(model, f)`` and pass the file as
``model=``: a :class:`DeepzModel` pickles to those same archive bytes, and :func:`load_model` reads
such a pickle with an unpickler that admits nothing but them (any other pickle is refused before
anything in it runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import threading
import zipfile
from typing import Any

import numpy as np

__all__ = [
    "DeepzModel",
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFormatError",
    "save_model",
    "load_model",
    "archive_bytes",
    "model_from_archive",
    "validate_model",
    "package_versions",
    "pack_model",
    "network_state",
    "with_compact_network",
    "with_simulation_network",
    "UnpackedModel",
    "unpack_model",
]

FORMAT = "pz-rail-deepz-model"
# 2: calibration 'ambiguity' (absent in 1, read as 0); 3: meta 'photometry' (absent before: magnitudes);
# 4: optional coverage classifiers (arrays 'coverage/...', meta 'coverage'; absent: coverage unknown);
# 5: calibration 'groups' of a pooled ensemble (absent before: 1); 6: calibration 'scale_by_coverage'
# (absent before: False); 7: optional compact network (arrays 'compact/...', meta 'compact'; absent: the
# estimator runs the ensemble); 8: optional simulation-pretrained network (arrays 'simulations/...', meta
# 'simulation_network'; absent: the 'confidence' column is NaN)
FORMAT_VERSION = 8
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
COMPACT_PREFIX = "compact/"
SIMULATIONS_PREFIX = "simulations/"
_META_KEY = "__meta__"


class DeepzModel(dict):
    """A model dict (plain data) whose repr stays one line instead of printing every weight.

    Pickled, it is the bytes of its model file (see :func:`model_from_archive`), so that
    ``pickle.dump(model, f)`` writes a file :func:`load_model` reads without unpickling anything else.
    """

    def __reduce__(self) -> tuple:
        return (model_from_archive, (archive_bytes(self),))

    def __repr__(self) -> str:
        meta = self.get("meta", {})
        n = sum(np.asarray(v).size for k, v in self.get("arrays", {}).items() if k.startswith("net/"))
        compact = " + compact network" if "compact" in meta else ""
        return (
            f"<pz-rail-deepz model v{self.get('format_version')}: {meta.get('n_members')} networks{compact}, "
            f"{n} weights, bands {meta.get('bands')}>"
        )

    __str__ = __repr__


class ModelFormatError(ValueError):
    """A file or object is not a valid pz-rail-deepz model of a supported format version."""


def package_versions() -> dict[str, str]:
    """Versions of the packages that define the model's behaviour."""
    from importlib.metadata import PackageNotFoundError, version
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("pz-rail-deepz", "pz-rail-base", "qp-prob", "torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _meta_checksum(meta: Any) -> str:
    """SHA-256 of the metadata's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()


def validate_model(model: Any, source: str = "model") -> dict:
    """Check that ``model`` is a Deepz model dict of the supported format; return it."""
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        kind = type(model).__name__
        raise ModelFormatError(
            f"{source} is not a pz-rail-deepz model (got a {kind}); train one with DeepzInformer"
        )
    version = model.get("format_version")
    if version not in READABLE_VERSIONS:
        written_by = model.get("meta", {}).get("versions", {}).get("pz-rail-deepz", "an unknown version")
        raise ModelFormatError(
            f"{source} has model format version {version} (written by pz-rail-deepz {written_by}); "
            f"this pz-rail-deepz reads format versions {', '.join(map(str, READABLE_VERSIONS))}: "
            "retrain the model with this version"
        )
    for key in ("arrays", "meta"):
        if not isinstance(model.get(key), dict):
            raise ModelFormatError(f"{source} is missing its '{key}' section")
    return model


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read on every call: a program may change it after import)."""
    try:  # Linux >= 4.7 reports it without changing it
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the umask can only be read by setting it. The temporary value is restrictive (0o077, not 0),
    # so a file another thread creates in between is never more open than intended, and it is restored at
    # once; the lock keeps two of these calls from restoring each other's temporary value.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def mkstemp_for_output(folder: str, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``folder``, with the mode of any other output file (``0o666 & ~umask``).

    mkstemp creates owner-only (0600) files; the atomic writers rename them to the final name, so
    without this model files and checkpoints would not be readable by the group like the other outputs.
    """
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        mode = 0o666 & ~current_umask()
        if hasattr(os, "fchmod"):  # POSIX: on the open file itself
            os.fchmod(fd, mode)
        else:
            os.chmod(tmp, mode)
    except BaseException:
        os.close(fd)
        os.remove(tmp)
        raise
    return fd, tmp


def _write_archive(model: dict, f: Any) -> None:
    """Write a model dict as the archive of the model file to the binary file object ``f``."""
    validate_model(model)
    arrays = {k: np.asarray(v) for k, v in model["arrays"].items()}
    objects = [k for k, a in arrays.items() if a.dtype.hasobject]
    if objects:
        raise ModelFormatError(f"model arrays {objects} hold Python objects: only numeric arrays can be saved")
    try:
        header = dict(format=FORMAT, format_version=FORMAT_VERSION, meta=model["meta"], sha256=_checksum(arrays),
                      meta_sha256=_meta_checksum(model["meta"]))
    except TypeError as exc:
        raise ModelFormatError(f"model metadata is not plain JSON data: {exc}") from exc
    meta_bytes = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(f, allow_pickle=False, **{_META_KEY: meta_bytes}, **arrays)


def archive_bytes(model: dict) -> bytes:
    """The bytes of the model file of ``model`` (what :func:`save_model` writes)."""
    buffer = io.BytesIO()
    _write_archive(model, buffer)
    return buffer.getvalue()


def model_from_archive(data: bytes) -> "DeepzModel":
    """The model in the bytes of a model file (the inverse of :func:`archive_bytes`)."""
    return _read_archive(io.BytesIO(bytes(data)), "the pickled model")


# a pickled model names this function as rail.deepz.model_from_archive: a public name that stays put
# when the modules behind it move, so that pickles keep loading
model_from_archive.__module__ = "rail.deepz"
_PICKLE_GLOBAL = ("rail.deepz", "model_from_archive")


def save_model(model: dict, path: str) -> None:
    """Write a model dict to ``path`` atomically (temporary file in the same folder, then rename)."""
    validate_model(model)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = mkstemp_for_output(folder, ".deepz_model_")  # mode 0o666 & ~umask, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(model, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class _ModelUnpickler(pickle.Unpickler):
    """Admits only :func:`model_from_archive` (a pickled :class:`DeepzModel`); refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _PICKLE_GLOBAL:
            return model_from_archive
        raise pickle.UnpicklingError(f"{module}.{name}")


def _unpickle_model(path: str) -> "DeepzModel":
    """A :class:`DeepzModel` pickled with ``pickle.dump(model, f)``; any other pickle is refused unrun."""
    try:
        with open(path, "rb") as f:
            model = _ModelUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ModelFormatError(
            f"'{path}' is not a pz-rail-deepz model file: a pickle of something other than a Deepz model "
            f"({exc}), refused without running it (pickled models of other RAIL estimators cannot be read "
            "by DeepzEstimator)") from exc
    if not isinstance(model, DeepzModel):
        raise ModelFormatError(f"'{path}' is not a pz-rail-deepz model file: a pickle of a {type(model).__name__}")
    return model


def load_model(path: str) -> dict:
    """Read a model file written by :func:`save_model`, or a pickled :class:`DeepzModel`.

    Nothing is ever executed: archives are read with ``allow_pickle=False``, and a pickle is read by
    an unpickler that admits only a Deepz model's archive bytes.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file '{path}' does not exist")
    with open(path, "rb") as f:
        start = f.read(4)
    if start[:1] == b"\x80":  # a pickle (protocol 2 or later): it may hold a model's archive bytes
        return _unpickle_model(path)
    if not zipfile.is_zipfile(path):
        if start == b"PK\x03\x04":
            raise ModelFormatError(f"'{path}' is damaged or truncated (an incomplete zip archive)")
        raise ModelFormatError(
            f"'{path}' is not a pz-rail-deepz model file (not a numpy .npz archive; "
            "pickled models of other RAIL estimators cannot be read by DeepzEstimator)"
        )
    return _read_archive(path, f"'{path}'")


def _read_archive(file: Any, source: str) -> "DeepzModel":
    """The model in a model file's archive (a path or a binary file object); ``source`` names it in errors."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            if _META_KEY not in npz.files:
                raise ModelFormatError(f"{source} is a numpy archive but not a pz-rail-deepz model file")
            header = json.loads(bytes(npz[_META_KEY]).decode("utf-8"))
            arrays = {k: npz[k] for k in npz.files if k != _META_KEY}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        if "allow_pickle" in str(exc):
            raise ModelFormatError(f"{source} holds pickled Python objects: refused (a model file holds only "
                                   "numeric arrays; it was not written by pz-rail-deepz or was tampered with)") from exc
        raise ModelFormatError(f"{source} is damaged or truncated: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFormatError(f"{source} is a numpy archive but not a pz-rail-deepz model file")
    model = DeepzModel(format=header.get("format"), format_version=header.get("format_version"),
                       arrays=arrays, meta=header.get("meta", {}))
    validate_model(model, source=source)
    if header.get("sha256") != _checksum(arrays):
        raise ModelFormatError(f"{source} failed its checksum: the file was modified or corrupted")
    if "meta_sha256" in header and header["meta_sha256"] != _meta_checksum(model["meta"]):
        raise ModelFormatError(f"{source} failed its metadata checksum: the metadata was modified")
    return model


def pack_model(net: Any, feature_mean: np.ndarray, feature_std: np.ndarray, meta: dict,
               prior: dict[str, np.ndarray] | None = None, extra: dict[str, np.ndarray] | None = None) -> DeepzModel:
    """A model dict from a trained :class:`rail.deepz.networks.DeepzEnsemble` and its metadata.

    ``feature_mean``/``feature_std`` (F,) are the feature scaler, ``prior`` the fallback mixture
    (``weights``, ``means``, ``stds``, each (K,)), ``meta`` the JSON-able metadata (it must hold
    ``architecture`` and ``n_members``), ``extra`` further named arrays (e.g. the coverage
    classifiers, ``coverage/...``).
    """
    arrays = {f"net/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    arrays["feature_mean"], arrays["feature_std"] = feature_mean, feature_std
    if prior is not None:
        arrays.update({f"prior/{k}": v for k, v in prior.items()})
    arrays.update(extra or {})
    return DeepzModel(format=FORMAT, format_version=FORMAT_VERSION, arrays=arrays, meta=meta)


def network_state(model: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The network's stacked weights and batch-norm statistics, by parameter name (no ``net/`` prefix).

    ``prefix`` ``COMPACT_PREFIX`` / ``SIMULATIONS_PREFIX``: those of the compact / simulation-pretrained
    network.
    """
    start = f"{prefix}net/"
    return {k[len(start):]: v for k, v in model["arrays"].items() if k.startswith(start)}


def with_compact_network(model: dict, net: Any, prior: dict[str, np.ndarray], summary: dict) -> "DeepzModel":
    """``model`` with a compact network added: a one-member :class:`rail.deepz.networks.DeepzEnsemble`
    (its encoder and redshift network; the decoder is not needed to estimate), the prior mixture of
    its size and the distillation ``summary`` (meta ``compact``)."""
    arrays = dict(model["arrays"])
    arrays.update({f"{COMPACT_PREFIX}net/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()
                   if not k.startswith("decoder.")})
    arrays.update({f"{COMPACT_PREFIX}prior/{k}": np.asarray(v) for k, v in prior.items()})
    meta = dict(model["meta"], compact=dict(summary, n_gaussians=int(net.arch.n_gaussians)))
    return DeepzModel(format=FORMAT, format_version=FORMAT_VERSION, arrays=arrays, meta=meta)


def with_simulation_network(model: dict, pretrained: dict) -> "DeepzModel":
    """``model`` with the one network of the simulation-pretrained model ``pretrained`` it was fine-tuned
    from (same architecture and scaler; the decoder left out), for the estimator's ``confidence`` column."""
    if int(pretrained["meta"]["n_members"]) != 1:
        raise ValueError(f"the simulation-pretrained model has {pretrained['meta']['n_members']} networks, "
                         "expected one")
    arrays = dict(model["arrays"])
    arrays.update({f"{SIMULATIONS_PREFIX}net/{k}": np.asarray(v) for k, v in network_state(pretrained).items()
                   if not k.startswith("decoder.")})
    meta = dict(model["meta"], simulation_network=dict(phase=pretrained["meta"].get("phase"),
                                                       architecture=dict(pretrained["meta"]["architecture"])))
    return DeepzModel(format=FORMAT, format_version=FORMAT_VERSION, arrays=arrays, meta=meta)


def _one_network(model: dict, prefix: str, architecture: Any, device: Any, what: str) -> Any:
    """The one-member network stored under ``prefix`` (decoder optional), in eval mode on ``device``."""
    from .networks import DeepzEnsemble  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    net = DeepzEnsemble(architecture, 1)
    state = {k: torch.as_tensor(v) for k, v in network_state(model, prefix).items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("decoder.") for k in missing):
        raise ModelFormatError(f"{what} weights do not match the stored architecture: missing {missing}, "
                               f"unexpected {unexpected}")
    return net.to(device).eval()


class UnpackedModel:
    """A model dict turned back into objects: the network, its scaler, calibration and prior.

    Attributes: ``net`` (:class:`rail.deepz.networks.DeepzEnsemble`, eval mode, on ``device``),
    ``architecture``, ``n_members``, ``feature_mean``/``feature_std`` (F,) float32 arrays,
    ``calibration`` (:class:`rail.deepz.calibration.Calibration`), ``prior`` (dict of (K,) float64
    arrays, or None for autoencoder-only models), ``coverage`` (the spec-z vs target classifiers, a
    :class:`rail.deepz.density_ratio.DensityRatio`, and the weight clip; None without a target),
    ``compact`` (the compact network, a one-member ensemble in eval mode on ``device``, and its prior
    mixture; None for models without one), ``simulations`` (the simulation-pretrained network, a
    one-member ensemble, or None) and ``meta``.
    """

    def __init__(self, model: dict, device: Any = "cpu") -> None:
        from .calibration import Calibration  # pylint: disable=import-outside-toplevel
        from .networks import Architecture, DeepzEnsemble  # pylint: disable=import-outside-toplevel
        import torch  # pylint: disable=import-outside-toplevel

        validate_model(model)
        meta, arrays = model["meta"], model["arrays"]
        self.meta = meta
        self.architecture = Architecture(**meta["architecture"])
        self.n_members = int(meta["n_members"])
        self.net = DeepzEnsemble(self.architecture, self.n_members)
        try:
            self.net.load_state_dict({k: torch.as_tensor(v) for k, v in network_state(model).items()})
        except RuntimeError as exc:
            raise ModelFormatError(f"model weights do not match the stored architecture: {exc}") from exc
        self.net.to(device).eval()
        self.feature_mean = np.asarray(arrays["feature_mean"])
        self.feature_std = np.asarray(arrays["feature_std"])
        self.calibration = Calibration(**meta.get("calibration", {}))
        self.prior = None
        if "prior/weights" in arrays:
            self.prior = {k: np.asarray(arrays[f"prior/{k}"], dtype=np.float64) for k in ("weights", "means", "stds")}
        self.coverage = None  # (DensityRatio, clip) of a model informed with a target sample
        if "coverage" in meta:
            from .density_ratio import DensityRatio  # pylint: disable=import-outside-toplevel
            from .target_shift import COVERAGE_PREFIX  # pylint: disable=import-outside-toplevel

            ratio = DensityRatio.from_arrays(arrays, COVERAGE_PREFIX, int(meta["coverage"]["n_features"]))
            self.coverage = (ratio, float(meta["coverage"]["clip"]))
        self.compact = None  # (network, prior) of a model with a compact network
        if "compact" in meta:
            compact = _one_network(model, COMPACT_PREFIX, self.architecture, device, "compact network")
            prior = {k: np.asarray(arrays[f"{COMPACT_PREFIX}prior/{k}"], dtype=np.float64)
                     for k in ("weights", "means", "stds")}
            self.compact = (compact, prior)
        self.simulations = None  # the simulation-pretrained network
        if "simulation_network" in meta:
            arch = Architecture(**meta["simulation_network"]["architecture"])
            self.simulations = _one_network(model, SIMULATIONS_PREFIX, arch, device, "simulation-pretrained network")


def unpack_model(model: dict, device: Any = "cpu") -> UnpackedModel:
    """The objects of a model dict (see :class:`UnpackedModel`), the network on ``device``."""
    return UnpackedModel(model, device)
