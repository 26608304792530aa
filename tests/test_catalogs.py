"""Other catalogue conventions: RAIL catalog tags (their sentinels and column names) and flux columns."""

from __future__ import annotations

import numpy as np
import pytest
import tables_io
import yaml
from rail.utils.path_utils import find_rail_file

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz.inputs import AB_ZEROPOINT_NJY, STATUS_MISSING, STATUS_NONDETECT, read_photometry

UGRIZY = list("ugrizy")
DC2_MAGS = [f"mag_{b}_lsst" for b in UGRIZY]
DC2_ERRS = [f"mag_err_{b}_lsst" for b in UGRIZY]


def _ugrizy_tags() -> list[dict]:
    """The tags of pz-rail-base's default_catalogs.yaml whose band list is u g r i z y."""
    with open(find_rail_file("examples_data/catalog_data/default_catalogs.yaml")) as fh:
        tags = [t["CatalogTag"] for t in yaml.safe_load(fh)["CatalogTags"]]
    return [t for t in tags if t["band_list"] == UGRIZY]


@pytest.fixture()
def catalog_tag():
    """Apply a RAIL catalog tag (``catalog_tag(name)``); RAIL's shared defaults are restored afterwards."""
    from rail.core.common_params import SHARED_PARAMS, set_param_defaults
    from rail.utils import catalog_utils
    from rail.utils.catalog_tag import CatalogTag

    saved = {k: dict.get(SHARED_PARAMS, k).default for k in SHARED_PARAMS}
    yield catalog_utils.apply_defaults
    set_param_defaults(**saved)
    CatalogTag._active_tag = None  # pylint: disable=protected-access


def _column(tag: dict, band: str, kind: str) -> str:
    override = tag.get("bands", {}).get(band, {}).get(f"{kind}_column_name")
    return override or tag[f"{kind}_column_template"].format(band=band)


def _tagged_table(table: dict, tag: dict, nondetect, nonobserved) -> dict:
    """DC2 columns renamed to the tag's names; non-detections (99) and unobserved (-99) as its sentinels."""
    out = {tag.get("redshift_col", "redshift"): np.asarray(table["redshift"])}
    for b, mag, err in zip(UGRIZY, DC2_MAGS, DC2_ERRS):
        m = np.array(table[mag], dtype=np.float32)
        m = np.where(m == 99.0, np.float32(nondetect), np.where(m == -99.0, np.float32(nonobserved), m))
        out[_column(tag, b, "mag")] = m
        out[_column(tag, b, "mag_err")] = np.asarray(table[err], dtype=np.float32)
    return out


@pytest.fixture(scope="module")
def dc2_rows(dc2_train, dc2_valid):
    """800 training and 300 test DC2 rows, a few bands of them made unobserved (-99)."""
    rng = np.random.default_rng(4)
    train = {k: np.array(v[:800]) for k, v in dc2_train.items()}
    test = {k: np.array(v[::70][:300]) for k, v in dc2_valid.items()}
    for t in (train, test):
        for col in ("mag_u_lsst", "mag_y_lsst"):
            t[col][rng.random(len(t[col])) < 0.05] = -99.0
    return train, test


def _pdfs(train: dict, test: dict, tiny, **options) -> dict:
    inform = DeepzInformer.make_stage(name="inform_tag", output_mode="return", hdf5_groupname="",
                                      **tiny(num_threads=1, **options))
    inform.inform(train)
    estimate = DeepzEstimator.make_stage(name="estimate_tag", model=inform.get_data("model"), output_mode="return",
                                         hdf5_groupname="", num_threads=1,
                                         **{k: v for k, v in options.items() if k in ("bands", "err_bands")})
    ens = estimate.estimate(test).data
    return {**ens.objdata, **ens.ancil}


@pytest.mark.parametrize("tag", _ugrizy_tags(), ids=lambda t: t["name"])
def test_catalog_tags_give_the_pdfs_of_the_default_conventions(tag, dc2_rows, tiny, catalog_tag, one_torch_thread):
    train, test = dc2_rows
    catalog_tag(tag["name"])
    from rail.core.common_params import SHARED_PARAMS

    assert np.isnan(SHARED_PARAMS["nondetect_val"]) and SHARED_PARAMS["nonobserved_val"] == np.inf
    tagged = _pdfs(_tagged_table(train, tag, np.nan, np.inf), _tagged_table(test, tag, np.nan, np.inf), tiny)
    # the same bands and limits under the default conventions (99 / -99), set explicitly
    bands = [_column(tag, b, "mag") for b in UGRIZY]
    explicit = dict(bands=bands, err_bands=[_column(tag, b, "mag_err") for b in UGRIZY],
                    ref_band=SHARED_PARAMS["ref_band"], mag_limits=dict(SHARED_PARAMS["mag_limits"]),
                    redshift_col=SHARED_PARAMS["redshift_col"], nondetect_val=99.0, nonobserved_val=-99.0)
    default = _pdfs(_tagged_table(train, tag, 99.0, -99.0), _tagged_table(test, tag, 99.0, -99.0), tiny, **explicit)
    for key, value in default.items():
        np.testing.assert_allclose(tagged[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    assert (tagged["deepz_flag"] & 4).any() and (tagged["deepz_flag"] & 2).any()  # both sentinels were seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nondetect, nonobserved", [(np.nan, np.inf), (99.0, -99.0), (-99.0, 99.0),
                                                    (np.inf, -np.inf), (-np.inf, np.nan), (0.0, np.nan)])
def test_sentinels_mean_what_they_say(nondetect, nonobserved, dtype):
    mags = np.array([[22.0, nondetect, nonobserved, 23.0]], dtype=dtype)
    errs = np.full((1, 4), 0.05, dtype=dtype)
    phot = read_photometry(dict(a=mags[:, 0], b=mags[:, 1], c=mags[:, 2], d=mags[:, 3], ea=errs[:, 0],
                                eb=errs[:, 1], ec=errs[:, 2], ed=errs[:, 3]),
                           list("abcd"), ["ea", "eb", "ec", "ed"], dict(a=27, b=27, c=27, d=27), nondetect, nonobserved)
    assert phot.status.tolist() == [[0, STATUS_NONDETECT, STATUS_MISSING, 0]]
    assert phot.flux[0, 1] == 0.0 and phot.flux_err[0, 1] == pytest.approx(10 ** (-0.4 * (27 - AB_ZEROPOINT_NJY)))


def test_nan_is_missing_unless_it_is_the_nondetection_sentinel():
    mags = np.array([[np.nan, np.inf, -np.inf]])
    errs = np.full((1, 3), 0.1)
    cols = dict(a=mags[:, 0], b=mags[:, 1], c=mags[:, 2], ea=errs[:, 0], eb=errs[:, 1], ec=errs[:, 2])
    lims = dict(a=27, b=27, c=27)
    default = read_photometry(cols, list("abc"), ["ea", "eb", "ec"], lims)  # 99 / -99
    assert default.status.tolist() == [[STATUS_MISSING, STATUS_NONDETECT, STATUS_MISSING]]
    tagged = read_photometry(cols, list("abc"), ["ea", "eb", "ec"], lims, np.nan, np.inf)
    assert tagged.status.tolist() == [[STATUS_NONDETECT, STATUS_MISSING, STATUS_MISSING]]


def test_equal_sentinels_are_refused(small_train, tiny):
    stage = DeepzInformer.make_stage(name="same_sentinels", output_mode="return", hdf5_groupname="",
                                     **tiny(nondetect_val=np.nan, nonobserved_val=np.nan))
    with pytest.raises(ValueError, match="'nondetect_val' and 'nonobserved_val'"):
        stage.inform(small_train)


def _as_fluxes(table: dict, names: list[str], err_names: list[str]) -> dict:
    """DC2 magnitudes as nJy fluxes (float64): detections converted, non-detections flux 0 +- limit."""
    out = {"redshift": np.asarray(table["redshift"])}
    limits = dict(zip(DC2_MAGS, (27.79, 29.04, 29.06, 28.62, 27.98, 27.05)))
    for mag, err, name, err_name in zip(DC2_MAGS, DC2_ERRS, names, err_names):
        m, e = np.asarray(table[mag], dtype=np.float64), np.asarray(table[err], dtype=np.float64)
        detected = m < 90
        flux = np.where(detected, 10.0 ** (-0.4 * (np.where(detected, m, 0.0) - AB_ZEROPOINT_NJY)), 0.0)
        out[name] = flux
        out[err_name] = np.where(detected, flux * (np.log(10.0) / 2.5) * e,
                                 10.0 ** (-0.4 * (limits[mag] - AB_ZEROPOINT_NJY)))
    return out


GAAP = [f"{b}_gaap1p0Flux" for b in UGRIZY]
GAAP_ERR = [f"{b}_gaap1p0FluxErr" for b in UGRIZY]
FLUX_OPTIONS = dict(photometry="fluxes", bands=GAAP, err_bands=GAAP_ERR, ref_band="i_gaap1p0Flux",
                    mag_limits=dict(zip(GAAP, (27.79, 29.04, 29.06, 28.62, 27.98, 27.05))))


def test_flux_columns_give_the_pdfs_of_the_magnitudes(dc2_train, dc2_valid, tiny, one_torch_thread):
    train = {k: np.array(v[:800]) for k, v in dc2_train.items()}
    test = {k: np.array(v[::70][:300]) for k, v in dc2_valid.items()}
    mags = _pdfs(train, test, tiny)
    fluxes = _pdfs(_as_fluxes(train, GAAP, GAAP_ERR), _as_fluxes(test, GAAP, GAAP_ERR), tiny, **FLUX_OPTIONS)
    for key, value in mags.items():
        if key != "deepz_flag":
            np.testing.assert_allclose(fluxes[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    # a flux of 0 +- the limit is a measurement, not a flagged non-detection (bit 4)
    assert (mags["deepz_flag"] & 4).any()
    np.testing.assert_array_equal(fluxes["deepz_flag"], mags["deepz_flag"] & ~4)


def test_negative_and_zero_fluxes_are_measurements():
    cols = dict(a=np.array([100.0, 100.0]), b=np.array([-20.0, 0.0]), ea=np.array([5.0, 5.0]),
                eb=np.array([10.0, 10.0]))
    phot = read_photometry(cols, ["a", "b"], ["ea", "eb"], dict(a=27, b=27), np.nan, np.inf, photometry="fluxes")
    assert phot.status.tolist() == [[0, 0], [0, 0]]
    assert phot.flux[:, 1].tolist() == [-20.0, 0.0] and phot.flux_err[:, 1].tolist() == [10.0, 10.0]


def test_rubin_dm_fluxes_are_estimated_by_a_flux_trained_model(dc2_train, tiny, one_torch_thread):
    pq = tables_io.read(find_rail_file("examples_data/testdata/rubin_dm_dc2_example.pq"))
    train = _as_fluxes({k: np.array(v[:1000]) for k, v in dc2_train.items()}, GAAP, GAAP_ERR)
    inform = DeepzInformer.make_stage(name="inform_flux", output_mode="return", hdf5_groupname="",
                                      **tiny(**FLUX_OPTIONS))
    inform.inform(train)
    estimate = DeepzEstimator.make_stage(name="estimate_flux", model=inform.get_data("model"), output_mode="return",
                                         hdf5_groupname="", bands=GAAP, err_bands=GAAP_ERR)
    ens = estimate.estimate(pq).data
    assert ens.npdf == len(pq) == 100
    w, m, s = (np.asarray(ens.objdata[k]) for k in ("weights", "means", "stds"))
    assert np.isfinite(w).all() and np.isfinite(m).all() and (s > 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(ens.ancil["zmode"]).all()
    flags = ens.ancil["deepz_flag"]
    bad_ref = np.asarray(pq["i_gaap1p0Flux"]) <= 0
    assert ((flags & 1) > 0).tolist() == bad_ref.tolist()  # only an unusable reference band gets the prior
