"""Running a trained Deepz model on a catalogue (the work behind DeepzEstimator)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch.profiler import record_function

from . import features as feat
from . import mixture
from .calibration import Calibration, apply_calibration
from .flags import compute_flags
from .inputs import Photometry, read_model_photometry
from .model_io import unpack_model
from .options import NETWORKS
from .networks import DeepzEnsemble, StackedBatchNorm, StackedLinear, mixture_parameters
from .schema import check_choice
from .target_shift import coverage_from_log_ratio

__all__ = ["DeepzPredictor", "ANCIL_KEYS", "FusedEnsemble", "unit_sum_weights", "point_estimates", "output_pdfs"]

ANCIL_KEYS = ("zmode", "zmean", "zmedian", "zstd", "odds", "coverage", "confidence", "deepz_flag")
#: |zphot - z| / (1 + z) above which a galaxy is a catastrophic outlier (the ``confidence`` column)
OUTLIER_DZ = 0.15
# network precision at inference (names: rail.deepz.options.PRECISIONS): None = float32, for GPUs the others
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
# dtype of the stored mixture parameters (names: rail.deepz.options.PDF_DTYPES)
PDF_DTYPES = {"float32": np.float32, "float64": np.float64}
_POINT_BATCH = 16384  # rows per point-estimate pass (at least the network batch size)
_ALIGN = 16  # FusedEnsemble pads the latent and output widths to multiples of this


def unit_sum_weights(w: torch.Tensor) -> torch.Tensor:
    """Weights (N, K) that sum to exactly 1 in any order of summation, in their dtype (float32 or float64).

    Each weight is rounded down to a multiple of 2^-24 (float32; 2^-52 for float64), the row's
    remainder (also such a multiple) goes to its largest weight: every partial sum is then exact.
    A row merely divided by its sum can add up to 1 + 1e-8 in float64, qp renormalises float32
    weights in float32 when it builds or reads an ensemble, and a CDF above 1 gives PIT values
    that RAIL's evaluator drops.
    """
    quantum = 2.0**-24 if w.dtype == torch.float32 else 2.0**-52
    w64 = w.double()
    w64 = torch.floor(w64 / w64.sum(-1, keepdim=True) / quantum) * quantum
    top = w64.argmax(-1, keepdim=True)
    w64.scatter_add_(-1, top, 1.0 - w64.sum(-1, keepdim=True))
    return w64.to(w.dtype)


class FusedEnsemble:
    """Inference-only copy of a :class:`DeepzEnsemble` with batch norm folded into the linear layers.

    In eval mode BatchNorm is an affine map, so Linear + BatchNorm becomes one linear layer
    (W' = W g, b' = (b - mean) g + beta, g = gamma / sqrt(var + eps)); dropout is the identity.
    Gives the same mixtures as ``DeepzEnsemble.mixture`` (to float rounding) with fewer passes over memory.
    """

    def __init__(self, net: DeepzEnsemble) -> None:
        self.arch = net.arch
        self.encoder = self._fold(net.encoder) if net.encoder is not None else None
        self.mdn = self._fold(net.mdn)
        self.n_out = self.mdn[-1][0].shape[2]
        self._pad()
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}

    def _pad(self) -> None:
        """Zero-pad the latent and output widths to multiples of ``_ALIGN`` (same results).

        MKL's batched GEMM runs a 128 -> 10 layer ~4x and a 128 -> 30 layer ~2x slower than 128 -> 16
        and 128 -> 32 on CPU: the extra latent features are exactly 0 and meet zero weights in the
        redshift network, the extra outputs are dropped.
        """
        def widen(layer, n):  # zero output columns up to n
            w, b, relu = layer
            m, i, o = w.shape
            return (torch.cat([w, w.new_zeros(m, i, n - o)], 2).contiguous(),
                    torch.cat([b, b.new_zeros(m, 1, n - o)], 2).contiguous(), relu)

        if self.encoder is not None:
            latent = self.encoder[-1][0].shape[2]
            padded = -(-latent // _ALIGN) * _ALIGN
            if padded != latent:
                self.encoder[-1] = widen(self.encoder[-1], padded)
                w, b, relu = self.mdn[0]  # input rows: [features, latent]: zero rows for the new latents
                m, _, o = w.shape
                self.mdn[0] = (torch.cat([w, w.new_zeros(m, padded - latent, o)], 1).contiguous(), b, relu)
        padded = -(-self.n_out // _ALIGN) * _ALIGN
        if padded != self.n_out:
            self.mdn[-1] = widen(self.mdn[-1], padded)

    @staticmethod
    def _fold(mlp) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        mods = list(mlp.net)
        layers = []
        i = 0
        while i < len(mods):
            weight, bias = mods[i].weight.detach().clone(), mods[i].bias.detach().clone()
            i += 1
            if i < len(mods) and isinstance(mods[i], StackedBatchNorm):
                bn = mods[i].bn
                m, _, h = weight.shape
                g = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(m, 1, h)
                weight = weight * g
                bias = (bias - bn.running_mean.reshape(m, 1, h)) * g + bn.bias.reshape(m, 1, h)
                layers.append((weight, bias, True))
                i += 1
                while i < len(mods) and not isinstance(mods[i], StackedLinear):
                    i += 1  # ReLU (applied in _run) and Dropout (identity at inference)
            else:
                layers.append((weight, bias, False))
        return layers

    def _run(self, name: str, layers, h: torch.Tensor) -> torch.Tensor:
        # on CPU the layer outputs go to buffers kept from the previous batch: a fresh multi-MB tensor
        # per layer and batch costs page faults (~10% of the forward pass); autocast has no out= form
        reuse = h.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
        for j, (weight, bias, relu) in enumerate(layers):
            if reuse:
                shape = (weight.shape[0], h.shape[1], weight.shape[2])
                out = self._buffers.get((name, j))
                if out is None or out.shape != shape or out.dtype != weight.dtype:
                    out = self._buffers[(name, j)] = torch.empty(shape, dtype=weight.dtype)
                h = torch.baddbmm(bias, h, weight, out=out)
            else:
                h = torch.baddbmm(bias, h, weight)
            if relu:
                h = torch.relu_(h)
        return h

    def to(self, device: torch.device) -> "FusedEnsemble":
        move = lambda layers: [(w.to(device), b.to(device), r) for w, b, r in layers]  # noqa: E731
        self.encoder = move(self.encoder) if self.encoder is not None else None
        self.mdn = move(self.mdn)
        self._buffers = {}
        return self

    def mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member log-weights, means, stds (M, B, G) for scaled features x (B, F)."""
        m = self.mdn[0][0].shape[0]
        xm = x.unsqueeze(0).expand(m, -1, -1)
        h = xm if self.encoder is None else torch.cat([xm, self._run("encoder", self.encoder, xm)], dim=-1)
        raw = self._run("mdn", self.mdn, h)[..., : self.n_out]
        return mixture_parameters(raw, self.arch)  # new tensors: the buffers can be reused


class DeepzPredictor:
    """A trained ensemble rebuilt on a device, with its feature scaler, calibration and prior.

    Parameters
    ----------
    model : the model dict written by DeepzInformer (see :mod:`rail.deepz.model_io`)
    device : a torch device
    batch_size : galaxies per network forward pass (independent of the catalogue chunk size)
    precision : network precision, one of :data:`PRECISIONS`
    network : 'compact' (the model's compact network: one network, already calibrated), 'ensemble'
        (every member, calibrated and pooled) or 'auto' (compact when the model has one)
    """

    def __init__(self, model: dict, device: torch.device, batch_size: int = 1024, precision: str = "float32",
                 network: str = "auto") -> None:
        check_choice("precision", precision, list(PRECISIONS))
        check_choice("network", network, list(NETWORKS))
        unpacked = unpack_model(model, device)
        meta = self.meta = unpacked.meta
        self.device = device
        self.batch_size = int(batch_size)
        self.precision = precision
        self.bands: list[str] = list(meta["bands"])
        self.ref_index = self.bands.index(meta["ref_band"])
        self.limits = np.array([meta["mag_limits"][b] for b in self.bands])
        if network == "compact" and unpacked.compact is None:
            raise ValueError(f"option network='compact': this model (format version {model.get('format_version')}) has "
                             "no compact network; inform it again with compact_network=True (the default) or use "
                             "network='ensemble'")
        self.network = "compact" if network != "ensemble" and unpacked.compact is not None else "ensemble"
        if self.network == "compact":
            assert unpacked.compact is not None
            self.net, self.prior = unpacked.compact
            self.calibration = Calibration()  # trained on the ensemble's calibrated PDFs
            n_members = 1
        else:
            self.net, self.prior = unpacked.net, unpacked.prior
            self.calibration = unpacked.calibration
            n_members = unpacked.n_members
        self.fused = FusedEnsemble(self.net).to(device)
        self.mean = torch.as_tensor(unpacked.feature_mean, device=device)
        self.std = torch.as_tensor(unpacked.feature_std, device=device)
        self.coverage_model = unpacked.coverage
        self.simulations = None if unpacked.simulations is None else FusedEnsemble(unpacked.simulations).to(device)
        self.n_components = self.calibration.output_members(n_members) * unpacked.architecture.n_gaussians

    def check_columns(self, bands: Sequence[str], err_bands: Sequence[str]) -> None:
        """Raise if the configured band list does not match the model's."""
        if list(bands) != self.bands:
            raise ValueError(
                f"option 'bands' {list(bands)} does not match the bands the model was trained on {self.bands}"
            )
        if len(err_bands) != len(bands):
            raise ValueError(f"option 'err_bands' has {len(err_bands)} columns for {len(bands)} bands")

    def photometry(self, table: Mapping, err_bands: Sequence[str]) -> Photometry:
        """Fluxes of a table's rows with the model's bands and bad-value rules (:mod:`rail.deepz.inputs`)."""
        return read_model_photometry(table, self.bands, err_bands, dict(zip(self.bands, self.limits)),
                                     self.meta["nondetect_val"], self.meta["nonobserved_val"],
                                     exposures=self.meta.get("inputs") == "exposures",
                                     photometry=self.meta.get("photometry", "magnitudes"))

    @torch.inference_mode()
    def mixtures(self, x: np.ndarray, dtype: torch.dtype = torch.float64,
                 coverage: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Calibrated pooled mixtures (N, K) in ``dtype`` for unscaled features x (N, F); weights sum to 1.

        ``coverage`` (N,): the rows' coverage, for a calibration with ``uncovered_*`` terms.

        On a GPU the whole chunk goes over in one pinned-memory copy; with ``precision``
        'bfloat16'/'float16' the network layers run under autocast (mixture outputs in float32).
        """
        return self._pooled(self.fused, self.calibration, x, dtype, coverage)

    def _pooled(self, fused: "FusedEnsemble", calibration: Calibration, x: np.ndarray, dtype: torch.dtype,
                coverage: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`mixtures` of network ``fused`` with ``calibration``."""
        out_w, out_m, out_s = [], [], []
        xt = torch.as_tensor(np.ascontiguousarray(x))
        if self.device.type == "cuda":
            xt = xt.pin_memory().to(self.device, non_blocking=True)
        low = PRECISIONS[self.precision]
        for s in range(0, x.shape[0], self.batch_size):
            xb = (xt[s : s + self.batch_size].to(self.device) - self.mean) / self.std
            if low is None:
                log_w, means, stds = fused.mixture(xb)
            else:
                with torch.autocast(device_type=self.device.type, dtype=low):
                    log_w, means, stds = (t.float() for t in fused.mixture(xb))
            cov = None if coverage is None else torch.as_tensor(coverage[s : s + self.batch_size], device=self.device)
            log_w, means, stds = apply_calibration(log_w, means, stds, calibration, cov)
            w, m, sd = mixture.combine_members(log_w.to(dtype), means.to(dtype), stds.to(dtype))
            w = w / w.sum(-1, keepdim=True)
            out_w.append(w)
            out_m.append(m)
            out_s.append(sd)
        return torch.cat(out_w), torch.cat(out_m), torch.cat(out_s)

    @torch.inference_mode()
    def predict(
        self, table: Mapping, err_bands: Sequence[str], odds_window: float = 0.06, n_output_components: int = 0,
        pdf_dtype: str = "float32", z_range: tuple[float, float] = (0.0, 3.0),
    ) -> dict[str, np.ndarray]:
        """PDFs and point estimates for every row of a table (see :func:`output_pdfs`), with the ancil
        columns coverage (N,) float64 and deepz_flag (N,) int32."""
        check_choice("pdf_dtype", pdf_dtype, list(PDF_DTYPES))
        with record_function("deepz.read_photometry"):
            phot = self.photometry(table, err_bands)
        with record_function("deepz.features"):
            x, _, _, bad_ref = feat.flux_features(phot, self.ref_index)
        reduce = 0 < n_output_components < self.n_components
        coverage = self.coverage(x, bad_ref)
        # float32 PDFs without a merge are pooled in float32 directly (the merge runs in float64)
        with record_function("deepz.network"):
            w, m, s = self.mixtures(x, torch.float32 if pdf_dtype == "float32" and not reduce else torch.float64,
                                    coverage if self.calibration.uses_coverage else None)
        flags = compute_flags(phot.status, bad_ref, phot.invalid, phot.bad_err)
        if bad_ref.any():
            rows = torch.as_tensor(np.flatnonzero(bad_ref), device=w.device)
            for t, key in ((w, "weights"), (m, "means"), (s, "stds")):
                t[rows] = torch.as_tensor(self.prior[key], dtype=t.dtype, device=t.device)
        result = output_pdfs(w, m, s, n_output_components, pdf_dtype, z_range, odds_window,
                             max(self.batch_size, _POINT_BATCH))
        result["coverage"] = coverage
        with record_function("deepz.confidence"):
            result["confidence"] = self.confidence(x, result["zmode"], result["odds"], bad_ref)
        result["deepz_flag"] = flags
        return result

    @torch.inference_mode()
    def simulation_mixtures(self, x: np.ndarray, dtype: torch.dtype = torch.float64
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The simulation-pretrained network's mixtures (N, K) for unscaled features x (N, F), uncalibrated
        (as pretrained), with the model's scaler (the one it was pretrained with)."""
        if self.simulations is None:
            raise ValueError("this model has no simulation-pretrained network (informed without simulations, "
                             "or with sims_beyond_range=False)")
        return self._pooled(self.simulations, Calibration(), x, dtype)

    @torch.inference_mode()
    def confidence(self, x: np.ndarray, zmode: np.ndarray, odds: np.ndarray, bad_ref: np.ndarray) -> np.ndarray:
        """ODDS (N,) times the simulation-pretrained network's probability that ``zmode`` (N,) is not an outlier.

        That probability is P_sims((zmode - 0.15) / 1.15 < z <= (zmode + 0.15) / 0.85), the redshifts at
        which |zmode - z| / (1 + z) <= 0.15, from the network pretrained on simulations (which saw redshifts
        the spec-z sample lacks). NaN for a model without that network (informed without simulations),
        0 for rows without a usable reference band.
        """
        if self.simulations is None:
            return np.full(x.shape[0], np.nan)
        w, m, s = self.simulation_mixtures(x, torch.float64)
        zm = torch.as_tensor(zmode, dtype=torch.float64, device=w.device)
        inlier = mixture.interval_probability((zm - OUTLIER_DZ) / (1 + OUTLIER_DZ), (zm + OUTLIER_DZ) / (1 - OUTLIER_DZ),
                                              w, m, s).clamp(0.0, 1.0)
        return np.where(bad_ref, 0.0, odds * inlier.cpu().numpy())

    def coverage(self, x: np.ndarray, bad_ref: np.ndarray) -> np.ndarray:
        """Coverage (N,) float64 of rows with unscaled features x (N, F): ``min(1, clip p_spec / p_target)``.

        How well the spec-z sample represents each galaxy (1: inside its reach; toward 0: beyond it);
        NaN for a model informed without a target, 0 for rows without a usable reference band.
        """
        if self.coverage_model is None:
            return np.full(x.shape[0], np.nan)
        ratio, clip = self.coverage_model
        with record_function("deepz.coverage"):
            xs = (x - self.mean.cpu().numpy()) / self.std.cpu().numpy()
            cov = coverage_from_log_ratio(ratio.log_ratio(xs), clip)
        return np.where(bad_ref, 0.0, cov)


@torch.inference_mode()
def point_estimates(w: torch.Tensor, m: torch.Tensor, s: torch.Tensor, odds_window: float,
                    step: int = _POINT_BATCH) -> dict[str, np.ndarray]:
    """zmode, zmean, zmedian, zstd and ODDS (probability within zmode +- odds_window (1 + zmode)), each (N,),
    of mixtures (N, K) with weights summing to 1, ``step`` rows at a time, on their device."""
    out: dict[str, list] = {k: [] for k in ("zmode", "zmean", "zmedian", "zstd", "odds")}
    # the mixture searches iterate ~300 small torch ops per call: large batches amortise the per-op
    # cost (they work through cache-sized row chunks internally); (N, K) float64 = 6.5 MB at K = 50
    for a in range(0, w.shape[0], step):
        wb, mb, sb = (t[a : a + step] for t in (w, m, s))
        zmode = mixture.mode(wb, mb, sb)
        zmean = mixture.mean(wb, mb)
        var = (wb * (sb * sb + mb * mb)).sum(-1) - zmean * zmean
        half = odds_window * (1.0 + zmode)
        out["zmode"].append(zmode)
        out["zmean"].append(zmean)
        out["zmedian"].append(mixture.median(wb, mb, sb))
        out["zstd"].append(torch.sqrt(var.clamp_min(0)))
        out["odds"].append(mixture.interval_probability(zmode - half, zmode + half, wb, mb, sb).clamp(0.0, 1.0))
    return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}


@torch.inference_mode()
def output_pdfs(w: torch.Tensor, m: torch.Tensor, s: torch.Tensor, n_output_components: int = 0,
                pdf_dtype: str = "float32", z_range: tuple[float, float] = (0.0, 3.0), odds_window: float = 0.06,
                step: int = _POINT_BATCH) -> dict[str, np.ndarray]:
    """The estimator's output from calibrated mixtures (N, K): PDFs and point estimates as numpy arrays.

    ``n_output_components`` in (0, K) merges each mixture to that many Gaussians (moment-preserving,
    :func:`rail.deepz.mixture.reduce_components`). Every component's mass is then moved inside
    ``z_range`` = (zmin, zmax) (:func:`rail.deepz.mixture.fold_into_range`), so the point estimates
    lie in it too, and each row's weights sum to exactly 1 (:func:`unit_sum_weights`), so that no CDF,
    and no PIT value, exceeds 1. Returns ``weights``, ``means``, ``stds`` (N, K') in ``pdf_dtype``
    and zmode, zmean, zmedian, zstd, odds (N,) float64, computed from exactly the stored values.
    """
    if 0 < n_output_components < w.shape[-1]:
        with record_function("deepz.merge_components"):
            w, m, s = mixture.reduce_components(w, m, s, n_output_components)
    with record_function("deepz.fold_into_range"):
        m, s = mixture.fold_into_range(m, s, *z_range)
    dtype = torch.float32 if pdf_dtype == "float32" else torch.float64
    w, m, s = unit_sum_weights(w.to(dtype)), m.to(dtype), s.to(dtype)  # the stored values, still on the device
    with record_function("deepz.point_estimates"):
        result = point_estimates(w.double(), m.double(), s.double(), odds_window, step)
    result.update({k: t.cpu().numpy() for k, t in (("weights", w), ("means", m), ("stds", s))})
    return result
