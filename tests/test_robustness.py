"""The input policy, case by case: every row gets a finite, normalised PDF and a flag saying what was
wrong with it; a misconfigured table fails up front with an error naming the column. Plus
property-based tests (hypothesis) of the input conversion and of the mixture output."""

import numpy as np
import torch
import pandas as pd
import pytest
import tables_io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rail.core.data import TableHandle
from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz import features as F
from rail.deepz import inputs as I
from rail.deepz import flags as FL
from rail.deepz.schema import OptionError

from conftest import BANDS, ERR_BANDS

MICRO = dict(epochs_per_step=[2, 1, 0], n_folds=2, encoder_layers=[8], decoder_layers=[8], mdn_layers=[8],
             n_gaussians=2, batch_size=100, seed=3)
LIMITS = {b: 27.0 for b in BANDS}
REF = BANDS.index("mag_i_lsst")


@pytest.fixture(scope="module")
def rows(dc2_train):
    return {k: np.array(v[:400]) for k, v in dc2_train.items()}


@pytest.fixture(scope="module")
def model(rows, one_torch_thread):
    stage = DeepzInformer.make_stage(name="rb_inform", output_mode="return", hdf5_groupname="", **MICRO)
    stage.inform(rows)
    return stage.get_data("model")


def _table(rows, n=20):
    return {k: np.array(v[:n]) for k, v in rows.items()}


def _estimate(model, table, **kw):
    stage = DeepzEstimator.make_stage(name="rb_est", model=model, hdf5_groupname="", output_mode="return", **kw)
    return stage.estimate(table).data


def _check(ens, n):
    """Every row: a finite, normalised mixture and finite point estimates."""
    w, m, s = (np.asarray(ens.objdata[k]).reshape(n, -1) for k in ("weights", "means", "stds"))
    assert ens.npdf == n
    # normalised to the stored precision (float32 by default: a few ulp)
    np.testing.assert_allclose(w.sum(1, dtype=np.float64), 1.0, rtol=4 * np.finfo(w.dtype).eps)
    assert (w >= 0).all() and np.isfinite(m).all() and (s > 0).all() and np.isfinite(s).all()
    cdf = np.asarray(ens.cdf(np.array([-50.0, 50.0]))).reshape(n, 2)
    np.testing.assert_allclose(cdf[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(cdf[:, 1], 1.0, atol=1e-9)
    assert np.isfinite(ens.pdf(np.linspace(0, 3, 31))).all()
    for key in ("zmode", "zmean", "zmedian", "zstd", "odds"):
        assert np.isfinite(ens.ancil[key]).all(), key
    return np.asarray(ens.ancil["deepz_flag"]).ravel()


def _prior_rows(ens, model):
    """Rows holding the model's prior mixture (folded into the default [zmin, zmax] like every PDF)."""
    from rail.deepz.mixture import fold_into_range

    prefix = "compact/prior" if "compact" in model["meta"] else "prior"  # the estimator's default network's prior
    prior = (torch.as_tensor(model["arrays"][f"{prefix}/{k}"]) for k in ("means", "stds"))
    means = fold_into_range(*prior, 0.0, 3.0)[0].numpy()
    return np.all(np.isclose(ens.objdata["means"], means[None, :]), axis=1)


# ---- the cases of the input policy -------------------------------------------------------------

def test_nan_and_minus_inf_are_missing(model, rows):
    t = _table(rows)
    t["mag_u_lsst"][:3] = np.nan
    t["mag_g_lsst"][3:5] = -np.inf
    t["mag_i_lsst"][5] = np.nan  # reference band: prior PDF
    flags = _check(_estimate(model, t), 20)
    assert (flags[:5] & FL.HAS_MISSING).all() and not (flags[:5] & FL.BAD_REFERENCE).any()
    assert flags[5] & FL.BAD_REFERENCE and flags[5] & FL.HAS_MISSING


def test_plus_inf_and_nondetect_value_are_nondetections(model, rows):
    t = _table(rows)
    t["mag_u_lsst"][:2] = np.inf
    t["mag_y_lsst"][2:4] = 99.0
    t["mag_i_lsst"][4] = 99.0
    ens = _estimate(model, t)
    flags = _check(ens, 20)
    assert (flags[:5] & FL.HAS_NONDETECTION).all()
    assert flags[4] & FL.BAD_REFERENCE and _prior_rows(ens, model)[4] and not _prior_rows(ens, model)[:4].any()


def test_absurd_magnitudes_are_invalid_and_flagged(model, rows):
    t = _table(rows)
    t["mag_u_lsst"][0] = 1e30
    t["mag_g_lsst"][1] = -1e30
    t["mag_z_lsst"][2] = -30.0
    t["mag_i_lsst"][3] = 1e30
    ens = _estimate(model, t)
    flags = _check(ens, 20)
    assert (flags[:4] & FL.INVALID_VALUE).all() and (flags[:4] & FL.HAS_MISSING).all()
    assert not (flags[4:] & FL.INVALID_VALUE).any()
    assert flags[3] & FL.BAD_REFERENCE and not (flags[:3] & FL.BAD_REFERENCE).any()
    # an invalid value is exactly a missing band
    t2 = _table(rows)
    t2["mag_u_lsst"][0] = np.nan
    ens2 = _estimate(model, t2)
    np.testing.assert_array_equal(ens.objdata["means"][0], ens2.objdata["means"][0])


def test_zero_negative_nan_errors_use_the_limit_error(model, rows):
    t = _table(rows)
    t["mag_err_u_lsst"][0] = 0.0
    t["mag_err_g_lsst"][1] = -0.1
    t["mag_err_r_lsst"][2] = np.nan
    t["mag_err_z_lsst"][3] = np.inf
    flags = _check(_estimate(model, t), 20)
    assert (flags[:4] & FL.BAD_ERROR).all() and not (flags[4:] & FL.BAD_ERROR).any()
    p = I.read_photometry(t, BANDS, ERR_BANDS, LIMITS)
    limit_flux = 10 ** (-0.4 * (27.0 - I.AB_ZEROPOINT_NJY))
    assert p.flux_err[0, 0] == limit_flux and p.bad_err[:4].any(axis=1).all()


def test_negative_and_zero_fluxes():
    flux = np.array([[100.0, -5.0, 0.0, 200.0], [100.0, 50.0, 60.0, 0.0], [10.0, 20.0, 30.0, -4.0]])
    err = np.full_like(flux, 3.0)
    status = np.zeros(flux.shape, dtype=np.int8)
    phot = I.Photometry(flux, err, status)
    x, ratios, ratio_err, bad_ref = F.flux_features(phot, ref_index=3)
    assert np.isfinite(x).all() and np.isfinite(ratios).all() and np.isfinite(ratio_err).all()
    np.testing.assert_array_equal(bad_ref, [False, True, True])  # zero / negative reference flux
    assert ratios[0, 1] < 0 and ratios[0, 2] == 0  # negative and zero fluxes of other bands are kept
    assert (x[1:] == 0).all()
    np.testing.assert_array_equal(FL.compute_flags(status, bad_ref) & FL.BAD_REFERENCE, [0, 1, 1])


def test_missing_error_column_fails_up_front(model, rows):
    t = _table(rows)
    del t["mag_err_r_lsst"]
    with pytest.raises(KeyError, match="mag_err_r_lsst"):
        _estimate(model, t)
    stage = DeepzInformer.make_stage(name="rb_noerr", output_mode="return", hdf5_groupname="", **MICRO)
    with pytest.raises(KeyError, match="mag_err_r_lsst"):
        stage.inform(t)


def test_all_missing_band_and_rows_with_every_band_missing(model, rows):
    t = _table(rows)
    t["mag_y_lsst"][:] = -99.0
    for b in BANDS:
        t[b][:2] = np.nan
    ens = _estimate(model, t)
    flags = _check(ens, 20)
    assert (flags & FL.HAS_MISSING).all()
    want = FL.BAD_REFERENCE | FL.HAS_MISSING | FL.ALL_MISSING
    assert (flags[:2] & want == want).all() and not (flags[2:] & FL.ALL_MISSING).any()
    assert _prior_rows(ens, model)[:2].all()
    assert "no band measured" in FL.describe(int(flags[0]))


def test_dtypes_int_float32_and_text(model, rows):
    t = _table(rows)
    ref = _estimate(model, t)
    t32 = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in t.items()}
    t32["mag_u_lsst"][0] = np.float32(99.0)
    t["mag_u_lsst"][0] = 99.0
    ref = _estimate(model, t)
    e32 = _estimate(model, t32)
    np.testing.assert_array_equal(ref.ancil["deepz_flag"], e32.ancil["deepz_flag"])
    np.testing.assert_allclose(ref.objdata["means"], e32.objdata["means"], rtol=1e-4, atol=1e-5)
    # integer magnitudes are read as numbers
    ti = dict(t, mag_y_lsst=np.round(t["mag_y_lsst"]).astype(np.int64))
    _check(_estimate(model, ti), 20)
    # text/object columns: numbers are read, other entries are invalid (flagged), not a crash
    tobj = dict(t, mag_u_lsst=np.array([str(v) for v in t["mag_u_lsst"]], dtype=object))
    tobj["mag_u_lsst"][1] = "n/a"
    tobj["mag_u_lsst"][2] = None
    flags = _check(_estimate(model, tobj), 20)
    assert flags[1] & FL.INVALID_VALUE and flags[1] & FL.HAS_MISSING  # not a number
    assert flags[2] & FL.HAS_MISSING and not flags[2] & FL.INVALID_VALUE  # None: missing
    assert not (flags[3:] & FL.INVALID_VALUE).any()
    # a column without any number, and a boolean column, are misconfigured tables
    with pytest.raises(TypeError, match="mag_g_lsst"):
        _estimate(model, dict(t, mag_g_lsst=np.array(["x"] * 20)))
    with pytest.raises(TypeError, match="mag_g_lsst"):
        _estimate(model, dict(t, mag_g_lsst=np.ones(20, dtype=bool)))


def test_duplicated_and_misspelled_columns(model, rows):
    t = _table(rows)
    df = pd.DataFrame(t)
    dup = pd.concat([df, df[["mag_r_lsst"]]], axis=1)
    with pytest.raises(ValueError, match="mag_r_lsst.*more than once"):
        I.read_photometry(dup, BANDS, ERR_BANDS, LIMITS)
    with pytest.raises(OptionError, match="'bands' lists column"):
        I.read_photometry(t, BANDS[:-1] + ["mag_u_lsst"], ERR_BANDS, LIMITS)
    bad = dict(t)
    bad["mag_z_lst"] = bad.pop("mag_z_lsst")
    with pytest.raises(KeyError, match="did you mean 'mag_z_lst'"):
        _estimate(model, bad)


def test_empty_table_and_one_row(model, rows):
    with pytest.raises(ValueError, match="empty"):
        _estimate(model, _table(rows, 0))
    _check(_estimate(model, _table(rows, 1)), 1)
    stage = DeepzInformer.make_stage(name="rb_one", output_mode="return", hdf5_groupname="", **MICRO)
    with pytest.raises(ValueError, match="at least 10"):
        stage.inform(_table(rows, 1))


def test_a_chunk_that_is_all_bad(model, rows, tmp_path):
    t = _table(rows, 60)
    for b in BANDS:
        t[b][20:40] = np.nan
    path = str(tmp_path / "cat.hdf5")
    tables_io.write(dict(photometry=t), path)
    stage = DeepzEstimator.make_stage(name="rb_chunks", model=model, hdf5_groupname="photometry", chunk_size=20,
                                      output=str(tmp_path / "out.hdf5"))
    ens = stage.estimate(TableHandle("cat", path=path)).data
    flags = _check(ens, 60)
    assert (flags[20:40] & FL.ALL_MISSING).all() and _prior_rows(ens, model)[20:40].all()
    whole = _estimate(model, t)
    np.testing.assert_allclose(ens.objdata["means"], whole.objdata["means"], rtol=1e-6, atol=1e-7)


# ---- property-based tests ---------------------------------------------------------------------

SPECIAL = [np.nan, np.inf, -np.inf, 99.0, -99.0, 1e30, -1e30, 0.0, 95.0, 1e4]
mag_values = st.one_of(st.floats(10.0, 35.0), st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True))
err_values = st.one_of(st.floats(0.001, 2.0), st.sampled_from([0.0, -0.1, np.nan, np.inf, 1e30]),
                       st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, (n, 4), elements=mag_values),
    hnp.arrays(np.float64, (n, 4), elements=err_values))))
def test_property_input_conversion(arrays):
    mags, errs = arrays
    phot = I.magnitudes_to_fluxes(mags, errs, np.full(4, 26.0))
    assert set(np.unique(phot.status)) <= {0, 1, 2}
    assert np.isfinite(phot.flux).all() and (phot.flux >= 0).all()
    assert np.isfinite(phot.flux_err).all() and (phot.flux_err > 0).all()
    assert (phot.flux[phot.status != 0] == 0).all()
    with np.errstate(invalid="ignore"):
        assert (phot.status[np.isnan(mags)] == 2).all()
        assert (phot.status[(mags >= 90) & (mags <= I.MAX_MAGNITUDE)] == 1).all()
        assert (phot.status[(mags > 10) & (mags < 35)] == 0).all()
    x, ratios, ratio_err, bad_ref = F.flux_features(phot, ref_index=2)
    assert np.isfinite(x).all() and np.isfinite(ratios).all()
    assert not np.isnan(ratio_err).any()
    np.testing.assert_array_equal(bad_ref, phot.status[:, 2] != 0)
    flags = FL.compute_flags(phot.status, bad_ref, phot.invalid, phot.bad_err)
    np.testing.assert_array_equal((flags & FL.BAD_REFERENCE) > 0, bad_ref)
    np.testing.assert_array_equal((flags & FL.ALL_MISSING) > 0, (phot.status == 2).all(1))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, (n, 6), elements=st.one_of(st.floats(15.0, 30.0), st.sampled_from(SPECIAL))),
    hnp.arrays(np.float64, (n, 6), elements=err_values))))
def test_property_mixture_output(model, arrays):
    mags, errs = arrays
    table = {b: mags[:, j] for j, b in enumerate(BANDS)}
    table.update({e: errs[:, j] for j, e in enumerate(ERR_BANDS)})
    flags = _check(_estimate(model, table), len(mags))
    assert flags.dtype.kind in "iu" and (flags >= 0).all()


def test_training_rows_with_bad_values_are_dropped_or_flagged_not_fatal(rows, one_torch_thread):
    t = _table(rows, 300)
    t["redshift"] = t["redshift"].astype(object)
    t["redshift"][:5] = "unknown"  # not a number: the row is dropped
    t["redshift"][5] = -1.0
    t["mag_i_lsst"][6:9] = [np.nan, 99.0, 1e30]  # reference band unusable: dropped
    t["mag_u_lsst"][9:12] = [1e30, np.inf, -np.inf]  # invalid, non-detected, missing: kept
    t["mag_err_g_lsst"][12] = 0.0
    stage = DeepzInformer.make_stage(name="rb_bad_train", output_mode="return", hdf5_groupname="", **MICRO)
    stage.inform(t)
    meta = stage.get_data("model")["meta"]["training"]
    assert meta["n_dropped_ref"] == 3 and meta["n_dropped_redshift"] == 6
    assert meta["n_train"] == 300 - 9


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: hnp.arrays(
    np.float64, (n, 6), elements=st.one_of(st.floats(width=32), st.sampled_from(SPECIAL)))))
def test_property_dtype_does_not_change_the_reading(mags):
    """float64, float32 and object columns holding the same numbers are read the same way."""
    errs = np.full(mags.shape, 0.05)
    tables = []
    for conv in (lambda a: a, lambda a: a.astype(np.float32), lambda a: a.astype(object)):
        t = {b: conv(mags[:, j]) for j, b in enumerate(BANDS)}
        t.update({e: conv(errs[:, j]) for j, e in enumerate(ERR_BANDS)})
        tables.append(I.read_photometry(t, BANDS, ERR_BANDS, LIMITS))
    for p in tables[1:]:
        np.testing.assert_array_equal(p.status, tables[0].status)
        np.testing.assert_array_equal(p.invalid, tables[0].invalid)
        np.testing.assert_allclose(p.flux, tables[0].flux, rtol=1e-6)
