"""DeepzSimCreator in parallel (option n_jobs): the catalogue does not depend on the worker count."""

import numpy as np

from rail.deepz.simulation import default_options, simulate_catalogue


def _opts(**extra):
    opts = default_options()
    opts.update(extra)
    return opts


def test_n_jobs_gives_identical_catalogues():
    # 4 blocks of 400 rows: n_jobs=2 runs them in two spawned worker processes
    one = simulate_catalogue(1600, 5, _opts(chunk_size=400, n_jobs=1, exposures=True))
    two = simulate_catalogue(1600, 5, _opts(chunk_size=400, n_jobs=2, exposures=True))
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def test_stage_has_n_jobs_option(in_tmp):
    from rail.creation.engines.deepz_sims import DeepzSimCreator

    stage = DeepzSimCreator.make_stage(name="sims_parallel", n_samples=50, seed=2, n_jobs=2)
    assert stage.config.n_jobs == 2
    table = stage.sample(50, 2).data["photometry"]
    assert len(table["redshift"]) == 50  # one block: runs in this process
