import numpy as np
import torch
from scipy import stats

from rail.deepz import mixture as MX


def _random_mixtures(n=200, k=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, k, generator=g, dtype=torch.float64) ** 3
    w = w / w.sum(-1, keepdim=True)
    m = torch.rand(n, k, generator=g, dtype=torch.float64) * 3
    s = 0.01 + 0.3 * torch.rand(n, k, generator=g, dtype=torch.float64)
    return w, m, s


def test_pdf_cdf_match_scipy():
    w, m, s = _random_mixtures(20, 5)
    z = torch.linspace(-0.5, 3.5, 50, dtype=torch.float64).expand(20, -1).contiguous()
    ref_pdf = (w[:, None, :].numpy() * stats.norm.pdf(z[..., None].numpy(), m[:, None, :].numpy(), s[:, None, :].numpy())).sum(-1)
    ref_cdf = (w[:, None, :].numpy() * stats.norm.cdf(z[..., None].numpy(), m[:, None, :].numpy(), s[:, None, :].numpy())).sum(-1)
    np.testing.assert_allclose(MX.pdf(z, w, m, s).numpy(), ref_pdf, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(MX.cdf(z, w, m, s).numpy(), ref_cdf, rtol=1e-10, atol=1e-12)


def test_mode_is_the_global_maximum():
    w, m, s = _random_mixtures()
    zmode = MX.mode(w, m, s)
    grid = torch.linspace(-1, 4, 50001, dtype=torch.float64)
    dens = MX.pdf(grid.expand(w.shape[0], -1).contiguous(), w, m, s)
    best = dens.max(-1).values
    at_mode = MX.pdf(zmode, w, m, s)
    # never worse than the best point of a 1e-4 grid, and a true stationary point
    assert torch.all(at_mode >= best * (1 - 1e-9))
    eps = 1e-6
    assert torch.all(MX.pdf(zmode + eps, w, m, s) <= at_mode * (1 + 1e-9))
    assert torch.all(MX.pdf(zmode - eps, w, m, s) <= at_mode * (1 + 1e-9))


def test_median_and_interval_probability():
    w, m, s = _random_mixtures()
    zmed = MX.median(w, m, s)
    np.testing.assert_allclose(MX.cdf(zmed, w, m, s).numpy(), 0.5, atol=1e-7)
    lo, hi = zmed - 0.1, zmed + 0.2
    np.testing.assert_allclose(
        MX.interval_probability(lo, hi, w, m, s).numpy(),
        (MX.cdf(hi, w, m, s) - MX.cdf(lo, w, m, s)).numpy(),
    )
    np.testing.assert_allclose(MX.mean(w, m).numpy(), (w * m).sum(-1).numpy())


def test_median_fast_path_equals_the_robust_iteration_on_hard_mixtures():
    """float32 search + float64 Newton step == the float64 safeguarded iteration, to 1e-9.

    Hard cases: far-apart narrow modes (CDF flat between them: bisection, then the fallback),
    sigma at the network's 1e-3 floor, one dominant component, and equal weights."""
    w, m, s = _random_mixtures(400, 50, seed=3)
    s[:100] = 1e-3  # the MDN's sigma floor
    m[100:200, :25], m[100:200, 25:] = 0.2, 2.8  # two narrow modes far apart, median in the gap
    s[100:200] = 0.005
    w[200:300] = torch.softmax(torch.randn(100, 50, dtype=torch.float64) * 8, -1)  # one dominant component
    w[300:] = 1.0 / 50
    ref = MX._median_robust(w.clone(), m.clone(), s.clone(), 1e-10, 200)
    zmed = MX.median(w, m, s)
    np.testing.assert_allclose(zmed.numpy(), ref.numpy(), atol=1e-9)
    np.testing.assert_allclose(MX.cdf(zmed, w, m, s).numpy(), 0.5, atol=1e-9)


def test_combine_members_divides_weights_by_member_count():
    g = torch.Generator().manual_seed(1)
    log_w = torch.log_softmax(torch.randn(4, 7, 3, generator=g), -1)
    means, stds = torch.rand(4, 7, 3, generator=g), torch.rand(4, 7, 3, generator=g) + 0.1
    w, m, s = MX.combine_members(log_w, means, stds)
    assert w.shape == (7, 12)
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[:, 3:6].numpy(), torch.exp(log_w[1]).numpy() / 4, rtol=1e-6)
    np.testing.assert_allclose(m[:, 6:9].numpy(), means[2].numpy())
