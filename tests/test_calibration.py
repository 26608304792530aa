"""Held-out calibration fit (rail.deepz.calibration)."""

import numpy as np
import pytest
import torch

from conftest import TINY

from rail.deepz.calibration import Calibration, fit_calibration, pool_members, pit_cvm
from rail.deepz import mixture


def _too_wide_with_a_spurious_peak(n=3000, seed=1):
    """One member (S = 1): main component at the truth but 1.5x too wide, a 20% peak 0.5 away."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.2, 1.5, n)
    z = mu + 0.05 * rng.normal(size=n)
    log_w = torch.log(torch.tensor([[0.8, 0.2]], dtype=torch.float64)).expand(n, 2).unsqueeze(0)
    means = torch.as_tensor(np.stack([mu, mu + 0.5], axis=1)).unsqueeze(0)
    stds = torch.full((1, n, 2), 0.075, dtype=torch.float64)
    return log_w, means, stds, torch.as_tensor(z)


def _cvm(log_w, means, stds, z, cal):
    w, m, s = pool_members(log_w, means, stds, cal)
    return pit_cvm(mixture.cdf(z, w, m, s).numpy())


def test_default_fit_keeps_the_weights_and_narrows_the_components():
    log_w, means, stds, z = _too_wide_with_a_spurious_peak()
    cal, info = fit_calibration(log_w, means, stds, z, recenter=0.5)
    assert cal.weight_power == 1.0 and cal.recenter == 0.5
    assert cal.std_scale < 0.9  # the main component was too wide
    assert info["cvm_after"] < 0.5 * info["cvm_before"]
    assert abs(_cvm(log_w, means, stds, z, cal) - info["cvm_after"]) < 1e-9


def test_weight_power_is_fitted_on_request():
    log_w, means, stds, z = _too_wide_with_a_spurious_peak()
    fixed, info_fixed = fit_calibration(log_w, means, stds, z, recenter=0.0)
    free, info_free = fit_calibration(log_w, means, stds, z, recenter=0.0, fit_power=True)
    assert free.weight_power > 1.5  # suppresses the spurious peak
    assert info_free["cvm_after"] < info_fixed["cvm_after"]
    assert _cvm(log_w, means, stds, z, Calibration()) == info_free["cvm_before"]


@pytest.mark.parametrize("option", [None, True])
def test_informer_option_reaches_the_fit(option, dc2_train, monkeypatch):
    from rail.deepz import informing
    from rail.estimation.algos.deepz import DeepzInformer

    seen = {}

    def recording_fit(*args, **kwargs):
        seen.update(kwargs)
        return fit_calibration(*args, **kwargs)

    monkeypatch.setattr(informing, "fit_calibration", recording_fit)
    extra = {} if option is None else dict(calibrate_weight_power=option)
    stage = DeepzInformer.make_stage(name=f"inform_cal_{option}", hdf5_groupname="", output_mode="return",
                                     num_threads=1, **TINY, **extra)
    stage.inform({k: np.asarray(v[:600]) for k, v in dc2_train.items()})
    assert seen["fit_power"] is bool(option)
    if option is None:
        assert stage.get_data("model")["meta"]["calibration"]["weight_power"] == 1.0
