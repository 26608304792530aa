"""Held-out calibration fit (rail.deepz.calibration)."""

import numpy as np
import pytest
import torch


from rail.deepz.calibration import Calibration, apply_calibration, fit_calibration, pool_members, pit_cvm
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
def test_informer_option_reaches_the_fit(option, tiny, dc2_train, monkeypatch):
    from rail.deepz import informing
    from rail.estimation.algos.deepz import DeepzInformer

    seen = {}

    def recording_fit(*args, **kwargs):
        seen.update(kwargs)
        return fit_calibration(*args, **kwargs)

    monkeypatch.setattr(informing, "fit_calibration", recording_fit)
    extra = {} if option is None else dict(calibrate_weight_power=option)
    stage = DeepzInformer.make_stage(name=f"inform_cal_{option}", hdf5_groupname="", output_mode="return",
                                     num_threads=1, **tiny(**extra))
    stage.inform({k: np.asarray(v[:600]) for k, v in dc2_train.items()})
    assert seen["fit_power"] is bool(option)
    if option is None:
        assert stage.get_data("model")["meta"]["calibration"]["weight_power"] == 1.0


def _two_members(d=0.1, n=50, sigma=0.05):
    """Two single-Gaussian members with the same width, means 1 - d and 1 + d: spread A = d^2."""
    log_w = torch.zeros(2, n, 1, dtype=torch.float64)
    means = torch.stack([torch.full((n, 1), 1.0 - d, dtype=torch.float64), torch.full((n, 1), 1.0 + d, dtype=torch.float64)])
    stds = torch.full((2, n, 1), sigma, dtype=torch.float64)
    return log_w, means, stds


def _pooled_moments(log_w, means, stds):
    w, m, s = mixture.combine_members(log_w, means, stds)
    mu = (w * m).sum(-1)
    return mu, (w * (s * s + (m - mu[:, None]) ** 2)).sum(-1)


def test_ambiguity_narrowing_removes_the_members_spread_from_the_pooled_variance():
    log_w, means, stds = _two_members(d=0.03, sigma=0.05)
    base = Calibration(recenter=1.0)
    mu0, var0 = _pooled_moments(*apply_calibration(log_w, means, stds, base))
    np.testing.assert_allclose(var0, 0.05**2)  # recentred: the pool is one member's shape
    mu1, var1 = _pooled_moments(*apply_calibration(log_w, means, stds, Calibration(recenter=1.0, ambiguity=1.0)))
    np.testing.assert_allclose(mu1, mu0)
    np.testing.assert_allclose(var1, 0.05**2 - 0.03**2)
    # half the weight, half the reduction; no recentring: the pool keeps its spread, minus A
    _, var_half = _pooled_moments(*apply_calibration(log_w, means, stds, Calibration(recenter=1.0, ambiguity=0.5)))
    np.testing.assert_allclose(var_half, 0.05**2 - 0.5 * 0.03**2)
    _, var_plain = _pooled_moments(*apply_calibration(log_w, means, stds, Calibration(ambiguity=1.0)))
    np.testing.assert_allclose(var_plain, 0.05**2)  # (sigma^2 + d^2) - d^2


def test_ambiguity_narrowing_keeps_a_quarter_of_the_variance_and_ignores_single_members():
    log_w, means, stds = _two_members(d=0.2, sigma=0.05)  # members far apart: A > V after recentring
    _, var = _pooled_moments(*apply_calibration(log_w, means, stds, Calibration(recenter=1.0, ambiguity=1.0)))
    np.testing.assert_allclose(var, 0.25 * 0.05**2)
    one = [t[:1] for t in (log_w, means, stds)]
    out = apply_calibration(*one, Calibration(recenter=1.0, ambiguity=1.0))
    for a, b in zip(one, out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_groups_keep_the_disagreement_between_member_groups():
    """Two groups of two members, peaks at 0.5 and 1.0: recentring within groups keeps both peaks."""
    n = 50
    means = torch.tensor([0.48, 0.52, 0.98, 1.02], dtype=torch.float64).reshape(4, 1, 1).expand(4, n, 1)
    stds = torch.full((4, n, 1), 0.02, dtype=torch.float64)
    log_w = torch.zeros(4, n, 1, dtype=torch.float64)
    grid = torch.tensor([0.5, 0.75, 1.0], dtype=torch.float64).expand(n, 3)

    def density(cal):
        w, m, s = pool_members(log_w, means, stds, cal)
        return mixture.pdf(grid, w, m, s)[0].numpy()

    one = density(Calibration(recenter=1.0, ambiguity=1.0))  # all four pulled to 0.75
    two = density(Calibration(recenter=1.0, ambiguity=1.0, groups=2))  # each pair to its own mean
    assert one[1] > 10 * max(one[0], one[2])
    assert two[0] > 10 * two[1] and two[2] > 10 * two[1]
    np.testing.assert_allclose(two[0], two[2])
    # one group is the ungrouped calibration (and is not written); a count that does not divide the members fails
    assert "groups" not in Calibration().to_dict() and Calibration(groups=2).to_dict()["groups"] == 2
    with pytest.raises(ValueError, match="groups 3 do not divide the 4 members"):
        apply_calibration(log_w, means, stds, Calibration(groups=3))
    # per-group terms: each group's members get their group's shift (in unscaled widths) and width scale
    _, mu, sd = apply_calibration(log_w, means, stds, Calibration(groups=2, std_scale=[1.0, 2.0], shift=[0.0, 1.0]))
    torch.testing.assert_close(sd[:, 0, 0], torch.tensor([0.02, 0.02, 0.04, 0.04], dtype=torch.float64))
    torch.testing.assert_close(mu[:, 0, 0], torch.tensor([0.48, 0.52, 1.00, 1.04], dtype=torch.float64))
    # the disagreement term: the first group's members alone, widened by the groups' mean gap (0.5 here)
    lw, mu, sd = apply_calibration(log_w, means, stds, Calibration(groups=2, disagreement=0.5))
    assert lw.shape == (2, n, 1)
    torch.testing.assert_close(mu[:, 0, 0], torch.tensor([0.48, 0.52], dtype=torch.float64))
    torch.testing.assert_close(sd[:, 0, 0], torch.full((2,), (0.02**2 + 0.5 * 0.5**2) ** 0.5, dtype=torch.float64))
    assert Calibration(groups=2, disagreement=0.5).output_members(4) == 2 and Calibration().output_members(4) == 4
    with pytest.raises(ValueError, match="'disagreement' needs 2 member groups"):
        apply_calibration(log_w, means, stds, Calibration(disagreement=0.5))
    with pytest.raises(ValueError, match="3 per-group values for 2 groups"):
        apply_calibration(log_w, means, stds, Calibration(groups=2, std_scale=[1.0, 1.0, 1.0]))


def test_width_scale_by_coverage_keeps_the_network_widths_beyond_the_spec_sample():
    """scale_by_coverage: widths x std_scale^coverage (per group); without coverage the plain scale."""
    log_w, means, stds, _ = _too_wide_with_a_spurious_peak(n=3)
    cal = Calibration(std_scale=0.5, shift=0.2, scale_by_coverage=True)
    assert cal.uses_coverage and cal.to_dict()["scale_by_coverage"] is True
    assert "scale_by_coverage" not in Calibration(std_scale=0.5).to_dict()
    coverage = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    _, mu, sd = apply_calibration(log_w, means, stds, cal, coverage)
    torch.testing.assert_close(sd[0, :, 0], 0.075 * torch.tensor([0.5, 0.5**0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(mu - means, 0.2 * stds)  # the shift is not scaled by coverage (unscaled widths)
    _, _, plain = apply_calibration(log_w, means, stds, cal)  # no coverage: coverage 1 everywhere
    torch.testing.assert_close(plain, 0.5 * stds)
    grouped = Calibration(groups=2, std_scale=[0.5, 0.8], scale_by_coverage=True)
    two = (torch.cat([t, t]) for t in (log_w, means, stds))
    _, _, sd = apply_calibration(*two, grouped, coverage)
    torch.testing.assert_close(sd[:, 1, 0], 0.075 * torch.tensor([0.5, 0.8], dtype=torch.float64) ** 0.5)


def test_fit_with_scale_by_coverage_records_it_only_with_coverage():
    log_w, means, stds, z = _too_wide_with_a_spurious_peak()
    cal, _ = fit_calibration(log_w, means, stds, z, recenter=0.0, scale_by_coverage=True)
    assert not cal.scale_by_coverage  # no coverage given: nothing to scale by
    cal, info = fit_calibration(log_w, means, stds, z, recenter=0.0, coverage=np.ones(z.numel()),
                                scale_by_coverage=True)
    assert cal.scale_by_coverage and cal.std_scale < 0.9 and info["cvm_after"] < 0.5 * info["cvm_before"]
