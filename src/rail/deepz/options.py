"""The options of DeepzInformer and DeepzEstimator: one schema each, and the checks between options.

:data:`INFORM_OPTIONS` and :data:`ESTIMATE_OPTIONS` (lists of :class:`rail.deepz.schema.Option`)
are the single source of the stages' ``config_options``, of the dataclasses :class:`InformOptions`
and :class:`EstimateOptions` that the plain functions take, of the value checks and of the option
tables in the documentation. Pure Python (no torch, no RAIL).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .schema import Option, OptionError, Rule, build_options, closest, options_dataclass

__all__ = [
    "PHASES",
    "PHOTOMETRY_KINDS",
    "USE_EXPOSURES",
    "COADD_MODES",
    "NETWORK_PARTS",
    "PRECISIONS",
    "PDF_DTYPES",
    "NETWORKS",
    "INFORM_OPTIONS",
    "ESTIMATE_OPTIONS",
    "InformOptions",
    "EstimateOptions",
    "inform_options",
    "estimate_options",
    "check_band_lists",
]

PHASES = ("full", "pretrain", "autoencoder")
PHOTOMETRY_KINDS = ("magnitudes", "fluxes")
USE_EXPOSURES = ("auto", "yes", "no")
TARGET_STARTS = ("auto", "pretrained", "scratch", "pooled", "widened")
COADD_MODES = ("force_one", "drop")
NETWORK_PARTS = ("encoder", "decoder", "mdn")
PRECISIONS = ("float32", "bfloat16", "float16")
NETWORKS = ("auto", "compact", "ensemble")
PDF_DTYPES = ("float32", "float64")

_RAIL_BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]

# the RAIL shared parameters every Deepz stage reads (catalog tags set them; checked here)
_SHARED = [
    Option("bands", "list", list(_RAIL_BANDS), "magnitude (or flux) column per band", item="str", shared=True),
    Option("err_bands", "list", [f"mag_err_{b}_lsst" for b in "ugrizy"], "error column per band", item="str",
           shared=True),
    Option("ref_band", "str", "mag_i_lsst", "reference band: fluxes are divided by its flux", shared=True),
    Option("nondetect_val", "float", 99.0, "value of a non-detection (any number, nan and +-inf included)",
           finite=False, shared=True),
    Option("nonobserved_val", "float", -99.0, "value of an unobserved band (any number, nan and +-inf included)",
           finite=False, shared=True),
    Option("mag_limits", "dict", dict(zip(_RAIL_BANDS, (27.79, 29.04, 29.06, 28.62, 27.98, 27.05))),
           "1-sigma limiting magnitude per band (error of non-detections)", shared=True),
    Option("redshift_col", "str", "redshift", "column of the true redshift", shared=True),
]

# what the band columns hold (an informer option; the model remembers it for estimation)
_PHOTOMETRY = Option("photometry", "str", "magnitudes", "what the bands / err_bands columns hold: AB magnitudes "
                     "and their errors, or fluxes and flux errors in nJy (negative and zero fluxes are kept)",
                     choices=PHOTOMETRY_KINDS)
_SHARED_BY_NAME = {o.name: o for o in _SHARED}

_NETWORK = [
    Option("n_splits", "int", 1, "random k-fold splits in the ensemble (paper: 10)", lo=1),
    Option("n_folds", "int", 5, "folds per split, one network per fold (paper: 5); 1 = one 80/20 split", lo=1),
    Option("encoder_layers", "list", [], "encoder hidden widths; [] = [128, 128] for <= 12 bands, 4 x 250 otherwise",
           item="int", lo=1),
    Option("decoder_layers", "list", [], "decoder hidden widths; [] = same rule as encoder_layers", item="int", lo=1),
    Option("mdn_layers", "list", [], "redshift network hidden widths; [] = 3 x 128 for <= 12 bands, 6 x 250 otherwise",
           item="int", lo=1),
    Option("latent_dim", "int", 10, "autoencoder latent features fed to the redshift network (0: no autoencoder)",
           lo=0),
    Option("n_gaussians", "int", 10, "Gaussian components per network", lo=1),
    Option("dropout", "float", 0.02, "dropout probability after every hidden block", lo=0.0, hi=1.0, hi_open=True),
]

_TRAINING = [
    Option("learning_rates", "list", [1e-3, 1e-4, 1e-5], "step-wise learning rates (paper: 1e-3, 1e-4, 1e-5, 1e-6)",
           item="float", lo=0.0, lo_open=True),
    Option("epochs_per_step", "list", [40, 15, 5], "epochs at each learning rate (paper: 100, 200, 200, 200)",
           item="int", lo=0),
    Option("batch_size", "int", 100, "training batch size (paper: 100)", lo=1),
    Option("weight_decay", "float", 1e-5, "Adam weight decay", lo=0.0),
    Option("ae_weight", "float", 0.0, "weight of the autoencoder reconstruction loss (0: redshift loss only)", lo=0.0),
    Option("calibrate", "bool", True, "calibrate the pooled PDFs on the held-out folds"),
    Option("calibrate_weight_power", "bool", False, "also fit a power of the component weights (sharpens or "
           "flattens secondary peaks)"),
    Option("recenter", "float", 1.0, "shift members toward the ensemble mean before pooling (0: plain pool)",
           lo=0.0, hi=1.0),
    Option("ambiguity_shrink", "float", 1.0, "narrow each calibrated pooled PDF so its variance drops by this "
           "fraction of the members' spread (0: off)", lo=0.0, hi=1.0),
    Option("compact_network", "bool", True, "also train the compact network: one network distilled from the "
           "calibrated ensemble that outputs n_gaussians components, so that estimating runs no ensemble and no "
           "merge (DeepzEstimator option 'network')"),
    Option("sims_beyond_range", "bool", True, "for a model pretrained on simulations: the compact network follows "
           "the simulation-pretrained model's PDF where that model puts a galaxy above the spec-z sample's 99th "
           "redshift percentile (weight: its probability above), the ensemble's below; the model keeps that network "
           "for the estimator's 'confidence' column"),
    Option("seed", "int", 87, "random seed: splits, initial weights, batches, dropout, distillation"),
    Option("device", "str", "auto", "'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N'"),
    Option("num_threads", "int", 0, "torch CPU threads; 0 = torch default (ceci sets OMP_NUM_THREADS)", lo=0),
]

_TRANSFER = [
    Option("phase", "str", "full", "'full': (pretrain on sims, then) train or fine-tune on the input; 'pretrain': "
           "pretrain on sims (or on the input) and write that model; 'autoencoder': train the autoencoder alone "
           "on the unlabelled input", choices=PHASES),
    Option("pretrained_model", "str", "", "pretrained model file (phase 'pretrain' or 'autoencoder') to fine-tune "
           "from instead of pretraining"),
    Option("sims_groupname", "str", "photometry", "group of the simulation table holding the columns ('' = flat)"),
    Option("pretrain_learning_rates", "list", [1e-3, 1e-4], "pretraining step-wise learning rates", item="float",
           lo=0.0, lo_open=True),
    Option("pretrain_epochs_per_step", "list", [15, 5], "pretraining epochs at each learning rate", item="int", lo=0),
    Option("pretrain_batch_size", "int", 500, "pretraining batch size", lo=1),
    Option("pretrain_ae_weight", "float", 1.0, "weight of the reconstruction loss in pretraining and "
           "autoencoder-only training", lo=0.0),
    Option("pretrain_flux_noise", "float", 0.0, "pretraining: resample simulated fluxes as f + k sigma N(0,1) "
           "every batch", lo=0.0),
    Option("pretrain_members", "int", 1, "networks pretrained; ensemble member m starts from network m % this",
           lo=1),
    Option("pretrain_val_fraction", "float", 0.1, "fraction of the simulations used for best-epoch selection",
           lo=0.0, hi=1.0, lo_open=True, hi_open=True),
    Option("pretrain_parts", "list", ["encoder", "decoder", "mdn"], "parts initialised from the pretrained model",
           item="str", choices=NETWORK_PARTS),
    Option("freeze", "list", [], "parts kept fixed while fine-tuning", item="str", choices=NETWORK_PARTS),
    Option("finetune_learning_rates", "list", [], "fine-tuning learning rates ([] = learning_rates)", item="float",
           lo=0.0, lo_open=True),
    Option("finetune_epochs_per_step", "list", [], "fine-tuning epochs per rate ([] = epochs_per_step)", item="int",
           lo=0),
    Option("finetune_l2sp", "float", 0.0, "L2-SP weight: sum (w - w_pretrained)^2 added to the fine-tuning loss",
           lo=0.0),
    Option("finetune_sim_fraction", "float", 0.0, "fraction of every fine-tuning batch drawn from the simulations",
           lo=0.0, hi=1.0, hi_open=True),
]

# used only when inform is given the unlabelled target photometry (input / keyword 'target'); the defaults
# were chosen on selections of the DC2 training file with its other half as the target
# (benchmarks/target_shift.py, parts options, starts and noisy): simulations pretrained toward the target
# (noise and weights) are on, the copies, the fill and the target autoencoder are off
_TARGET = [
    Option("target_weights", "bool", True, "with a target: weight each spec-z galaxy by p_target(x) / p_spec(x) "
           "(a classifier on the network inputs) in the fine-tuning loss, best-epoch selection and calibration"),
    Option("weight_clip", "float", 5.0, "with a target: largest covariate-shift weight; where the target is denser "
           "than this x the spec-z density, the spec-z sample covers it only in part (ancil 'coverage' < 1)",
           lo=1.0),
    Option("target_start", "str", "pooled", "with a target and sims or a pretrained model: the members are trained "
           "from the pretrained weights and from scratch, and the model keeps one of four candidates: 'pooled' "
           "(both sets as one ensemble, each PDF the equal mixture of the two sets' calibrated PDFs), 'pretrained' "
           "(the fine-tuned members), 'scratch', 'widened' (the fine-tuned PDFs widened by the two sets' "
           "disagreement, its scale fitted on the held-out folds); 'auto' keeps the one with the highest mean log "
           "density at the spec-z galaxies' redshifts in held-out predictions weighted toward the target (blind "
           "beyond the spec-z sample's coverage); 'scratch' skips the pretraining, 'pretrained' the second set",
           choices=TARGET_STARTS),
    Option("target_fill", "bool", False, "with a target and sims: simulations weighted toward the target fill "
           "the part of it the spec-z sample does not cover, in fine-tuning and calibration (their share of "
           "each batch is that uncovered fraction; replaces finetune_sim_fraction)"),
    Option("target_member_spread", "bool", True, "with a target: recenter and ambiguity_shrink act in proportion "
           "to each galaxy's coverage, so the members' disagreement stays in the PDFs of galaxies beyond the "
           "spec-z sample"),
    Option("target_width_by_coverage", "bool", True, "with a target: the calibration's width scale (std_scale, "
           "fitted on the spec-z galaxies) acts in proportion to each galaxy's coverage, std_scale^coverage, so "
           "beyond the spec-z sample the networks' own widths are kept"),
    Option("target_dimmed_copies", "int", 0, "with a target: add this many copies of every spec-z galaxy, dimmed to "
           "reference magnitudes drawn from the target's fainter galaxies, with the target's noise at that flux and "
           "its detection threshold (same redshift and colours)", lo=0),
    Option("target_autoencoder", "bool", False, "with a target and neither sims nor a pretrained model: first "
           "train the encoder and decoder on the target's photometry (phase 'autoencoder'), then the ensemble "
           "from them"),
    Option("target_sim_weights", "bool", True, "with a target and sims (pretrained here, not given as "
           "'pretrained'): weight each simulated galaxy's pretraining loss by p_target(x) / p_sims(x) (clipped at "
           "weight_clip squared)"),
    Option("target_sim_noise", "bool", True, "with a target and sims holding noiseless fluxes (flux_true_*): "
           "redraw the simulations' noise from the target's error-vs-magnitude relation before use"),
]

_AUGMENTATION = [
    Option("use_exposures", "str", "auto", "read flux_{band}_exp{k} exposure columns: 'auto' (when present), "
           "'yes', 'no'", choices=USE_EXPOSURES),
    Option("coadd_keep_prob", "float", 0.8, "randomised coadds: probability of keeping each exposure (1 = full "
           "coadd)", lo=0.0, hi=1.0, lo_open=True),
    Option("coadd_mode", "str", "force_one", "randomised coadds: 'force_one' (keep >= 1 exposure per observed band) "
           "or 'drop' (leave out galaxies that lose a band)", choices=COADD_MODES),
    Option("outlier_fraction", "float", 0.0, "fraction of training galaxies per batch given a photometric outlier",
           lo=0.0, hi=1.0),
    Option("outlier_amplitude", "list", [0.2, 1.0], "outlier amplitude range [lo, hi]: extra flux as a fraction of "
           "the band flux (or of its error when larger), random sign", item="float", lo=0.0, length=2, ordered=True),
]

_CHECKPOINTS = [
    Option("checkpoint_dir", "str", "auto", "folder of per-epoch training checkpoints, a re-run resumes from them; "
           "'auto': '<model file>_checkpoints' (off when nothing is written); '' or 'none': off"),
    # 30 s, not every epoch: a save takes a few percent of a one-second epoch, and a crash costs half a minute
    Option("checkpoint_interval", "float", 30.0, "minimum seconds between checkpoint saves (0: after every "
           "epoch; the first epoch is always saved)", lo=0.0),
]

#: every DeepzInformer option (RAIL shared parameters first)
INFORM_OPTIONS: list[Option] = (_SHARED + [_PHOTOMETRY] + _NETWORK + _TRAINING + _TRANSFER + _TARGET + _AUGMENTATION
                                 + _CHECKPOINTS)

#: every DeepzEstimator option (RAIL shared parameters first)
ESTIMATE_OPTIONS: list[Option] = [
    _SHARED_BY_NAME["bands"],
    _SHARED_BY_NAME["err_bands"],
    Option("batch_size", "int", 1024, "galaxies per network pass (independent of chunk_size; larger on a GPU)", lo=1),
    Option("odds_window", "float", 0.06, "ODDS half-width in units of (1 + zmode)", lo=0.0, lo_open=True),
    Option("device", "str", "auto", "'auto' (CUDA when available, GPU rank % n_gpus under MPI), 'cpu', 'cuda[:N]'"),
    Option("num_threads", "int", 0, "torch CPU threads; 0 = torch default (ceci sets OMP_NUM_THREADS)", lo=0),
    Option("precision", "str", "float32", "network precision at inference: 'float32', or on a GPU 'bfloat16' / "
           "'float16' (autocast)", choices=PRECISIONS),
    Option("pdf_dtype", "str", "float32", "dtype of the stored mixture weights, means and stds", choices=PDF_DTYPES),
    Option("network", "str", "auto", "which network estimates: 'compact' (the model's distilled network: one "
           "network, no merge), 'ensemble' (every member, calibrated and pooled, then merged to "
           "n_output_components), 'auto' (compact when the model has one)", choices=NETWORKS),
    # 10, not all 50: RAIL's evaluators then take KNN's time and memory on Deepz output, the scores barely move
    Option("n_output_components", "int", 10, "merge each PDF to at most this many Gaussians (moment-preserving; "
           "0 = keep every component: the compact network's n_gaussians, or the ensemble's members x n_gaussians; "
           "1 = one Gaussian)", lo=0),
    # larger than RAIL's 10,000: fewer per-chunk costs (qp ensemble, HDF5 write call, gc.collect)
    Option("chunk_size", "int", 100_000, "rows read, estimated and written at a time", lo=1),
]


def check_band_lists(bands: Sequence[str], err_bands: Sequence[str], ref_band: str | None = None,
                     mag_limits: Mapping[str, float] | None = None) -> None:
    """Raise :class:`OptionError` when the band options do not fit together.

    Checks lengths, duplicates, a column in both lists, ``ref_band`` among ``bands`` and a
    ``mag_limits`` entry for every band (when given).
    """
    bands, err_bands = list(bands), list(err_bands)
    if not bands:
        raise OptionError("option 'bands' is empty: give the magnitude column names")
    if len(bands) != len(err_bands):
        raise OptionError(f"options 'bands' ({len(bands)} columns) and 'err_bands' ({len(err_bands)} columns) "
                          "must have the same length")
    for name, cols in (("bands", bands), ("err_bands", err_bands)):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise OptionError(f"option {name!r} lists column(s) {dup} more than once")
    both = sorted(set(bands) & set(err_bands))
    if both:
        raise OptionError(f"column(s) {both} appear in both 'bands' and 'err_bands'")
    if ref_band is not None and ref_band not in bands:
        near = closest(ref_band, bands, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise OptionError(f"option 'ref_band' = {ref_band!r} is not one of 'bands'{hint}: allowed values are {bands}")
    if mag_limits is not None:
        missing = [b for b in bands if b not in mag_limits]
        if missing:
            raise OptionError(f"option 'mag_limits' has no entry for band(s) {missing}")


def _bands_rule(v: Mapping[str, Any]) -> None:
    check_band_lists(v["bands"], v["err_bands"], v.get("ref_band"), v.get("mag_limits"))


def _sentinels_rule(v: Mapping[str, Any]) -> None:
    a, b = float(v["nondetect_val"]), float(v["nonobserved_val"])
    if a == b or (a != a and b != b):  # equal, or both NaN
        raise OptionError(f"options 'nondetect_val' and 'nonobserved_val' are both {a!r}: a value cannot mean "
                          "both a non-detection and an unobserved band")


def _schedule_rule(lrs: str, eps: str, may_be_empty: bool = False) -> Rule:
    """Learning rates and epochs: lists of the same length with at least one epoch (or both empty)."""
    def rule(v: Mapping[str, Any]) -> None:
        if may_be_empty and not v[lrs] and not v[eps]:
            return
        if not v[lrs] or len(v[lrs]) != len(v[eps]) or sum(v[eps]) < 1:
            raise OptionError(f"options {lrs!r} ({len(v[lrs])} values) and {eps!r} ({len(v[eps])} values) must be "
                              "non-empty lists of the same length with at least one epoch"
                              + (" (or both empty)" if may_be_empty else ""))
    return rule


INFORM_RULES: list[Rule] = [
    _bands_rule,
    _sentinels_rule,
    _schedule_rule("learning_rates", "epochs_per_step"),
    _schedule_rule("pretrain_learning_rates", "pretrain_epochs_per_step"),
    _schedule_rule("finetune_learning_rates", "finetune_epochs_per_step", may_be_empty=True),
]
ESTIMATE_RULES: list[Rule] = [lambda v: check_band_lists(v["bands"], v["err_bands"])]

InformOptions = options_dataclass(
    "InformOptions", INFORM_OPTIONS, "Every DeepzInformer option, checked (fields: :data:`INFORM_OPTIONS`).", __name__)
EstimateOptions = options_dataclass(
    "EstimateOptions", ESTIMATE_OPTIONS, "Every DeepzEstimator option, checked (fields: :data:`ESTIMATE_OPTIONS`).",
    __name__)


def _options(cls: type, options: Sequence[Option], rules: Sequence[Rule], values: Mapping[str, Any] | None,
             overrides: Mapping[str, Any]) -> Any:
    """``cls`` from ``values`` (a stage config or any mapping) and ``overrides``, schema defaults elsewhere."""
    merged = {o.name: o.default for o in options}
    merged.update({k: v for k, v in (values or {}).items() if k in merged})
    merged.update(overrides)
    return build_options(cls, options, merged, rules)


def inform_options(values: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
    """An :class:`InformOptions` from a stage config (or any mapping) plus overrides, checked.

    Options absent from ``values`` take their schema defaults.
    """
    return _options(InformOptions, INFORM_OPTIONS, INFORM_RULES, values, overrides)


def estimate_options(values: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
    """An :class:`EstimateOptions` from a stage config (or any mapping) plus overrides, checked."""
    return _options(EstimateOptions, ESTIMATE_OPTIONS, ESTIMATE_RULES, values, overrides)
