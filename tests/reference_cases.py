"""Reference runs whose SHA-256 hashes pin the behaviour of training and estimation.

Each case trains a model through the public stage API (fixed seed, one torch thread), estimates
PDFs with it, and hashes the model's arrays and the PDFs' arrays. The hashes are stored in
``tests/data/reference_hashes.json``; ``tests/test_reference.py`` recomputes them, so a change of
behaviour (not of code layout) shows up as a failed test. Regenerate them, only when a change of
behaviour is intended, with ``python tests/reference_cases.py --write [case ...]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
HASH_FILE = os.path.join(HERE, "data", "reference_hashes.json")

# the same small settings as conftest.TINY (kept here so the cases do not depend on fixture edits)
_TINY = dict(epochs_per_step=[3, 1, 1], n_folds=2, encoder_layers=[16, 16], decoder_layers=[16, 16],
             mdn_layers=[16, 16], n_gaussians=3, batch_size=64, seed=11, num_threads=1)


def _hash_arrays(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _dc2(which: str) -> dict[str, np.ndarray]:
    import tables_io
    from rail.utils.path_utils import find_rail_file

    rel = f"examples_data/testdata/test_dc2_{which}_9816.hdf5"
    return {k: np.asarray(v) for k, v in tables_io.read(find_rail_file(rel))["photometry"].items()}


def _rows(table: dict, rows: Any) -> dict:
    return {k: np.asarray(v)[rows] for k, v in table.items()}


def _estimate(model: dict, table: dict) -> dict[str, np.ndarray]:
    from rail.deepz import DeepzEstimator

    # every component of the mixture (the hashes pin the full PDFs, whatever the output default)
    stage = DeepzEstimator.make_stage(name="reference_estimate", model=model, hdf5_groupname="",
                                      output_mode="return", num_threads=1, n_output_components=0)
    ens = stage.estimate(table).data
    out = {f"pdf/{k}": np.asarray(v) for k, v in ens.objdata.items()}
    # 'coverage' is all NaN for models informed without a target: left out, so the hashes stored
    # before the column existed still pin everything else
    out.update({f"ancil/{k}": np.asarray(v) for k, v in ens.ancil.items()
                if not (k == "coverage" and np.isnan(np.asarray(v, dtype=float)).all())})
    return out


def _inform(table: dict, sims: dict | None = None, **options: Any) -> dict:
    from rail.deepz import DeepzInformer

    stage = DeepzInformer.make_stage(name="reference_inform", output_mode="return", hdf5_groupname="",
                                     checkpoint_dir="none", **options)
    stage.inform(table, sims=sims)
    return stage.get_data("model")


def _sims(n: int, seed: int, **options: Any) -> dict[str, np.ndarray]:
    from rail.deepz import DeepzSimCreator

    stage = DeepzSimCreator.make_stage(name="reference_sims", n_samples=n, seed=seed, hdf5_groupname="",
                                       output_mode="return", n_jobs=1, **options)
    return dict(stage.sample().data)


def case_default() -> tuple[dict, dict]:
    """Stage defaults (seed 87) on the DC2 training file; PDFs of the validation file."""
    model = _inform(_dc2("training"), num_threads=1)
    return model, _estimate(model, _dc2("validation"))


def case_tiny() -> tuple[dict, dict]:
    """Tiny networks on 1,000 training rows; PDFs of 2,000 validation rows."""
    model = _inform(_rows(_dc2("training"), slice(0, 1000)), **_TINY)
    return model, _estimate(model, _rows(_dc2("validation"), slice(0, 20449, 10)))


def case_tiny_transfer() -> tuple[dict, dict]:
    """Pretraining on 600 simulations, fine-tuning with L2-SP, frozen encoder and simulation mixing."""
    sims = _sims(600, 5)
    model = _inform(_rows(_dc2("training"), slice(0, 1000)), sims=sims, pretrain_epochs_per_step=[2, 1],
                    pretrain_batch_size=128, finetune_l2sp=1e-3, finetune_sim_fraction=0.25, freeze=["encoder"],
                    **_TINY)
    return model, _estimate(model, _rows(_dc2("validation"), slice(0, 20449, 10)))


def case_tiny_exposures() -> tuple[dict, dict]:
    """Simulated exposures: randomised coadds and outlier augmentation; PDFs of other simulations."""
    train = _sims(800, 6, exposures=True, n_exposures_range=[1, 4], exposure_outlier_fraction=0.05)
    test = _sims(300, 7, exposures=True, n_exposures_range=[1, 4])
    model = _inform(train, coadd_keep_prob=0.7, outlier_fraction=0.1, **_TINY)
    return model, _estimate(model, test)


CASES: dict[str, Callable[[], tuple[dict, dict]]] = dict(
    default=case_default, tiny=case_tiny, tiny_transfer=case_tiny_transfer, tiny_exposures=case_tiny_exposures,
)


def run_case(name: str) -> dict[str, str]:
    """Hashes of case ``name``: ``model`` (network weights, scaler, prior), ``pdfs`` (mixtures + ancil)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, pdfs = CASES[name]()
    finally:
        torch.set_num_threads(old)
    return dict(model=_hash_arrays(model["arrays"]), pdfs=_hash_arrays(pdfs),
                calibration=json.dumps(model["meta"]["calibration"], sort_keys=True))


def load_hashes() -> dict[str, dict[str, str]]:
    with open(HASH_FILE) as fh:
        return json.load(fh)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="*", help=f"cases to run (default all: {', '.join(CASES)})")
    p.add_argument("--write", action="store_true", help=f"store the hashes in {HASH_FILE}")
    args = p.parse_args(argv)
    names = args.cases or list(CASES)
    stored = load_hashes() if os.path.exists(HASH_FILE) else {}
    for name in names:
        got = run_case(name)
        same = stored.get(name) == got
        print(f"{name}: {'matches' if same else 'DIFFERS from'} the stored hashes: {got}", flush=True)
        stored[name] = got
    if args.write:
        os.makedirs(os.path.dirname(HASH_FILE), exist_ok=True)
        with open(HASH_FILE, "w") as fh:
            json.dump(stored, fh, indent=2, sort_keys=True)
            fh.write("\n")


if __name__ == "__main__":
    sys.exit(main())
