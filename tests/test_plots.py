"""Plot helpers run with the Agg backend and return figures and axes."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rail.deepz import plots  # noqa: E402
from rail.deepz.quality_cuts import completeness_curves  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    n = 2000
    zspec = rng.uniform(0.05, 2.5, n)
    zphot = np.clip(zspec + 0.03 * (1 + zspec) * rng.normal(size=n), 0, 3)
    mag = rng.uniform(18, 25.3, n)
    mag[:10] = 99.0
    return zspec, zphot, mag, rng.uniform(size=n)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_pit_and_zphot_zspec(sample):
    zspec, zphot, _, pit = sample
    fig, axes = plots.plot_pit({"a": pit, "b": pit ** 1.2}, bins=20)
    assert isinstance(fig, plt.Figure) and len(axes) == 2
    assert len(axes[1].lines) == 3  # two QQ curves + diagonal
    fig2, ax = plots.plot_zphot_zspec(zphot, zspec)
    assert ax.get_xlabel() == "z spec"
    fig2.savefig(__import__("io").BytesIO(), format="png")


def test_sigma68_vs_magnitude_and_redshift(sample):
    zspec, zphot, mag, _ = sample
    fig, (ax_s, ax_o) = plots.plot_sigma68_vs_magnitude(mag, {"x": zphot, "y": zphot + 0.01}, zspec)
    assert len(ax_s.lines) == 2 and ax_o.get_xlabel() == "i [mag]"
    y = ax_s.lines[0].get_ydata()
    assert np.all(np.isfinite(y)) and np.all(y > 0.01) and np.all(y < 0.2)
    fig, (ax_s, _) = plots.plot_sigma68_vs_redshift(zspec, zphot)
    assert len(ax_s.lines[0].get_xdata()) == 12


def test_completeness_and_pdfs(sample):
    import qp

    zspec, zphot, _, rank = sample
    curves = {"odds": completeness_curves(zphot, zspec, rank), "z": completeness_curves(zphot, zspec, -zspec)}
    fig, axes = plots.plot_completeness_curves(curves)
    assert len(axes[0].lines) == 2
    np.testing.assert_allclose(axes[0].lines[0].get_xdata(), curves["odds"].completeness)
    ens = qp.Ensemble(qp.stats.norm, data=dict(loc=zphot[:5, None], scale=np.full((5, 1), 0.05)),
                      ancil=dict(zmode=zphot[:5]))
    fig, ax = plots.plot_pdfs(ens, zspec, [0, 3])
    assert len(ax.lines) == 6  # 2 PDFs + 2 truth + 2 point-estimate lines
    # drawing onto given axes
    fig, axes = plt.subplots(1, 2)
    out_fig, out_axes = plots.plot_pit(rank, ax=axes)
    assert out_fig is fig and out_axes[0] is axes[0]
    with pytest.raises(ValueError):
        plots.plot_pit(rank, ax=axes[0])


def test_missing_matplotlib_is_explained(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pz-rail-deepz\[plots\]"):
        plots.require_matplotlib()
