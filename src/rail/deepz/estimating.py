"""Running a trained Deepz model on a catalogue (the work behind DeepzEstimator)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from . import features as feat
from . import mixture
from .calibration import Calibration, apply_calibration
from .flags import compute_flags
from .model_io import validate_model
from .networks import Architecture, DeepzEnsemble

__all__ = ["DeepzPredictor", "ANCIL_KEYS"]

ANCIL_KEYS = ("zmode", "zmean", "zmedian", "zstd", "odds", "deepz_flag")


class DeepzPredictor:
    """A trained ensemble rebuilt on a device, with its feature scaler, calibration and prior.

    Parameters
    ----------
    model : the model dict written by DeepzInformer (see :mod:`rail.deepz.model_io`)
    device : a torch device
    batch_size : galaxies per network forward pass (independent of the catalogue chunk size)
    """

    def __init__(self, model: dict, device: torch.device, batch_size: int = 16384) -> None:
        validate_model(model)
        meta, arrays = model["meta"], model["arrays"]
        self.meta = meta
        self.device = device
        self.batch_size = int(batch_size)
        self.bands: list[str] = list(meta["bands"])
        self.ref_index = self.bands.index(meta["ref_band"])
        self.limits = np.array([meta["mag_limits"][b] for b in self.bands])
        arch = Architecture(**meta["architecture"])
        self.net = DeepzEnsemble(arch, int(meta["n_members"]))
        state = {k[4:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("net/")}
        try:
            self.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"model weights do not match the stored architecture: {exc}") from exc
        self.net.to(device).eval()
        self.mean = torch.as_tensor(arrays["feature_mean"], device=device)
        self.std = torch.as_tensor(arrays["feature_std"], device=device)
        self.calibration = Calibration(**meta.get("calibration", {}))
        self.prior = {k: np.asarray(arrays[f"prior/{k}"], dtype=np.float64) for k in ("weights", "means", "stds")}
        self.n_components = int(meta["n_members"]) * arch.n_gaussians

    def check_columns(self, bands: Sequence[str], err_bands: Sequence[str]) -> None:
        """Raise if the configured band list does not match the model's."""
        if list(bands) != self.bands:
            raise ValueError(
                f"option 'bands' {list(bands)} does not match the bands the model was trained on {self.bands}"
            )
        if len(err_bands) != len(bands):
            raise ValueError(f"option 'err_bands' has {len(err_bands)} columns for {len(bands)} bands")

    def photometry(self, table: Mapping, err_bands: Sequence[str]) -> feat.Photometry:
        """Fluxes of a table's rows with the model's band rules."""
        return feat.read_photometry(
            table,
            self.bands,
            err_bands,
            dict(zip(self.bands, self.limits)),
            self.meta["nondetect_val"],
            self.meta["nonobserved_val"],
        )

    @torch.inference_mode()
    def mixtures(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Calibrated pooled mixtures (N, K) in float64 for unscaled features x (N, F)."""
        out_w, out_m, out_s = [], [], []
        for s in range(0, x.shape[0], self.batch_size):
            xb = torch.as_tensor(x[s : s + self.batch_size]).to(self.device, non_blocking=True)
            xb = (xb - self.mean) / self.std
            log_w, means, stds, _ = self.net.mixture(xb)
            log_w, means, stds = apply_calibration(log_w.double(), means.double(), stds.double(), self.calibration)
            w, m, sd = mixture.combine_members(log_w, means, stds)
            w = w / w.sum(-1, keepdim=True)
            out_w.append(w)
            out_m.append(m)
            out_s.append(sd)
        return torch.cat(out_w), torch.cat(out_m), torch.cat(out_s)

    @torch.inference_mode()
    def point_estimates(
        self, w: torch.Tensor, m: torch.Tensor, s: torch.Tensor, odds_window: float
    ) -> dict[str, np.ndarray]:
        """zmode, zmean, zmedian, zstd and ODDS (probability within zmode +- odds_window (1 + zmode))."""
        out: dict[str, list] = {k: [] for k in ("zmode", "zmean", "zmedian", "zstd", "odds")}
        for a in range(0, w.shape[0], self.batch_size):
            wb, mb, sb = (t[a : a + self.batch_size].to(self.device) for t in (w, m, s))
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
    def predict(self, table: Mapping, err_bands: Sequence[str], odds_window: float = 0.06) -> dict[str, np.ndarray]:
        """PDFs and point estimates for every row of a table.

        Returns a dict of numpy arrays: ``weights``, ``means``, ``stds`` (N, K) float64 and the
        ancil columns zmode, zmean, zmedian, zstd, odds (N,) and deepz_flag (N,) int32.
        """
        phot = self.photometry(table, err_bands)
        x, _, _, bad_ref = feat.flux_features(phot, self.ref_index)
        w, m, s = self.mixtures(x)
        flags = compute_flags(phot.status, bad_ref)
        if bad_ref.any():
            rows = torch.as_tensor(np.flatnonzero(bad_ref), device=w.device)
            for t, key in ((w, "weights"), (m, "means"), (s, "stds")):
                t[rows] = torch.as_tensor(self.prior[key], dtype=t.dtype, device=t.device)
        points = self.point_estimates(w, m, s, odds_window)
        result = dict(weights=w.cpu().numpy(), means=m.cpu().numpy(), stds=s.cpu().numpy())
        result.update(points)
        result["deepz_flag"] = flags
        return result
