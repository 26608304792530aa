"""Compact PDFs: the candidate ways to give RAIL a few-component mixture, side by side.

The ensemble's calibrated PDF pools every member's mixture (50 Gaussians with the stage defaults,
100 for a model informed with a target and simulations); RAIL's evaluators need a compact mixture.
Candidates, each scored with the four scores and timed (estimation in this process, seconds per
``--speed-rows`` rows of the tiled validation file, ``--threads`` threads):

every component     the ensemble's full mixture (no merge): the quality reference
greedy merge        the ensemble merged to 10 Gaussians, pair by pair (the adjacent pair of lowest
                    Runnalls cost, several non-overlapping pairs per step; ``network='ensemble'``)
one sorted pass     the ensemble's components sorted by mean and cut into 10 runs at the 9 largest
                    adjacent Runnalls costs, each run moment-matched (one pass, no iteration)
compact network     one network distilled at inform time from the calibrated ensemble, 10 Gaussians
                    out, no merge (the estimator's default, ``network='compact'``)

Parts (``--parts``): ``folds`` (the training file alone: half A trains, half B scores; seeds
87-89; the candidates are chosen here), ``validation`` (the whole training file -> the validation
file; reported) and ``target`` (half A's i < 23.5 rows train with half B's photometry as target and
``--n-sims`` simulations, so the default two-set model of 100 components; half B scores).

    python benchmarks/compact.py --threads 2
    python benchmarks/compact.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import time

import numpy as np

import harness

QUICK = dict(epochs_per_step=[3, 1, 1], pretrain_epochs_per_step=[2, 1])
CANDIDATES = ("every component", "greedy merge", "one sorted pass", "compact network")
SCORES = ("sigma68", "outlier_frac", "pit_ks", "cde_loss")


def sorted_pass(weights: np.ndarray, means: np.ndarray, stds: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Candidate 'one sorted pass': (N, K) mixtures -> (N, n), moment-preserving."""
    import torch

    w, m, s = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (weights, means, stds))
    order = torch.argsort(m, dim=-1)
    w, m, s = (torch.gather(t, 1, order) for t in (w, m, s))
    v = s * s
    wi, wj = w[:, :-1], w[:, 1:]
    ws = (wi + wj).clamp_min(1e-300)
    fi = wi / ws
    dm = m[:, :-1] - m[:, 1:]
    vm = fi * v[:, :-1] + (1 - fi) * v[:, 1:] + fi * (1 - fi) * dm * dm
    cost = ws * torch.log(vm) - wi * torch.log(v[:, :-1]) - wj * torch.log(v[:, 1:])
    cut = torch.zeros_like(cost, dtype=torch.bool).scatter_(1, torch.topk(cost, n - 1, dim=1).indices, True)
    run = torch.cat([torch.zeros_like(cut[:, :1], dtype=torch.long), torch.cumsum(cut, 1)], 1)
    total = torch.zeros(w.shape[0], n, dtype=w.dtype).scatter_add_(1, run, w)
    first = torch.zeros_like(total).scatter_add_(1, run, w * m) / total
    second = torch.zeros_like(total).scatter_add_(1, run, w * (v + m * m)) / total
    return total.numpy(), first.numpy(), torch.sqrt((second - first * first).clamp_min(1e-12)).numpy()


def candidate_ensembles(model: dict, table: dict) -> tuple[dict, dict]:
    """Every candidate's qp ensemble of ``table`` and its estimation seconds."""
    out, seconds = {}, {}
    with harness.timed() as t:
        out["every component"] = harness.deepz_ensemble(model, table, network="ensemble", n_output_components=0)
    seconds["every component"] = t["wall_s"]
    with harness.timed() as t:
        out["greedy merge"] = harness.deepz_ensemble(model, table, network="ensemble")
    seconds["greedy merge"] = t["wall_s"]
    full = out["every component"].objdata
    with harness.timed() as t:
        merged = sorted_pass(full["weights"], full["means"], full["stds"], 10)
        out["one sorted pass"] = harness.pdf_ensemble(*merged)
    seconds["one sorted pass"] = seconds["every component"] + t["wall_s"]
    with harness.timed() as t:
        out["compact network"] = harness.deepz_ensemble(model, table)
    seconds["compact network"] = t["wall_s"]
    return out, seconds


def score_part(name: str, train: dict, test: dict, seeds: list[int], options: dict, sims: dict | None = None,
               target: dict | None = None) -> list[dict]:
    """Rows (candidate, seed, scores) of one part."""
    from rail.deepz.metrics import photoz_scores

    rows = []
    for seed in seeds:
        harness.log(f"{name}: seed {seed}")
        model = harness.deepz_inform(train, sims=sims, target=target, seed=seed, **options)
        ensembles, _ = candidate_ensembles(model, test)
        for cand in CANDIDATES:
            s = photoz_scores(ensembles[cand], test["redshift"])
            rows.append(dict(part=name, candidate=cand, seed=seed, n_components=int(ensembles[cand].objdata["weights"].shape[1]),
                             **{k: float(s[k]) for k in SCORES}))
        rows[-1]["distill_s"] = float(model["meta"]["compact"]["seconds"])
    return rows


def speed_rows(model: dict, rows: int, repeats: int) -> list[dict]:
    """Each candidate's estimation seconds on ``rows`` tiled validation rows (the fastest of ``repeats``)."""
    valid = harness.read_table(harness.dc2_paths()[1])
    reps = -(-rows // len(valid["redshift"]))
    table = {k: np.tile(v, reps)[:rows] for k, v in valid.items()}
    best: dict[str, float] = {}
    for _ in range(repeats):
        _, seconds = candidate_ensembles(model, table)
        best = {k: min(v, best.get(k, np.inf)) for k, v in seconds.items()}
    return [dict(candidate=k, rows=rows, seconds=v) for k, v in best.items()]


def summary_table(title: str, rows: list[dict], speed: dict[str, float], note: str) -> dict:
    """Mean over seeds of every score per candidate, with the speed column."""
    body = []
    for cand in CANDIDATES:
        sel = [r for r in rows if r["candidate"] == cand]
        if not sel:
            continue
        mean = {k: np.mean([r[k] for r in sel]) for k in SCORES}
        sd = {k: np.std([r[k] for r in sel], ddof=1) if len(sel) > 1 else 0.0 for k in SCORES}
        body.append([cand, sel[0]["n_components"],
                     *[f"{harness.fmt(mean[k], '.4f' if k != 'cde_loss' else '.3f')} ± "
                       f"{harness.fmt(sd[k], '.4f' if k != 'cde_loss' else '.3f')}" for k in SCORES],
                     harness.fmt(speed.get(cand), ".2f")])
    columns = ["candidate", "components", "sigma68", "outliers", "PIT KS", "CDE loss", "estimate [s / 100k]"]
    return harness.table(title, columns, body, note)


def main() -> None:
    """Score and time every candidate, write ``compact.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--seeds", default="87,88,89", help="model seeds, comma separated")
    ap.add_argument("--parts", default="folds,validation,target", help="parts to run (see above)")
    ap.add_argument("--speed-rows", type=int, default=100_000, help="rows of the timed estimations")
    ap.add_argument("--repeats", type=int, default=2, help="timed estimations per candidate (the fastest counts)")
    ap.add_argument("--n-sims", type=int, default=20_000, help="simulations of part 'target'")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    seeds = harness.int_list(args.seeds)
    options = dict(QUICK) if args.quick else {}
    if args.quick:
        seeds, args.speed_rows, args.repeats, args.n_sims = seeds[:1], 20_000, 1, 2_000
    parts = args.parts.split(",")
    train = harness.read_table(harness.dc2_paths()[0])
    valid = harness.read_table(harness.dc2_paths()[1])
    half = np.random.default_rng(2024).permutation(len(train["redshift"])) < len(train["redshift"]) // 2
    a, b = harness.subset(train, half), harness.subset(train, ~half)
    rows: list[dict] = []
    if "folds" in parts:
        rows += score_part("folds", a, b, seeds, options)
    speed: list[dict] = []
    if "validation" in parts:
        rows += score_part("validation", train, valid, seeds, options)
        model = harness.deepz_inform(train, seed=seeds[0], **options)
        speed = speed_rows(model, args.speed_rows, args.repeats)
    target_speed: list[dict] = []
    if "target" in parts:
        sims = harness.simulations(args.n_sims, seed=1)
        sel = harness.subset(a, a["mag_i_lsst"] < 23.5)
        tgt = {k: v for k, v in b.items() if k != "redshift"}
        rows += score_part("target", sel, b, seeds, options, sims=sims, target=tgt)
        model = harness.deepz_inform(sel, sims=sims, target=tgt, seed=seeds[0], **options)
        target_speed = speed_rows(model, args.speed_rows, args.repeats)
    per100k = lambda sp: {r["candidate"]: r["seconds"] * 100_000 / r["rows"] for r in sp}  # noqa: E731
    tables = []
    scale = f"speed: in-process estimation of {args.speed_rows:,} tiled validation rows, --threads {args.threads}"
    if "folds" in parts:
        tables.append(summary_table("Training file: half A trains, half B scores (the choice)",
                                    [r for r in rows if r["part"] == "folds"], per100k(speed),
                                    f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))}; {scale}."))
    if "validation" in parts:
        tables.append(summary_table("Whole training file -> validation file (reported)",
                                    [r for r in rows if r["part"] == "validation"], per100k(speed),
                                    f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))}; {scale}."))
    if "target" in parts:
        tables.append(summary_table(f"Half A's i < 23.5 rows + half B as target + {args.n_sims:,} simulations "
                                    "(two sets of members) -> half B",
                                    [r for r in rows if r["part"] == "target"], per100k(target_speed),
                                    f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))}; {scale} (this model)."))
    harness.write_result("compact", "Compact PDFs: candidates side by side", tables,
                         dict(rows=rows, speed=speed, target_speed=target_speed, load_average=harness.load_average(),
                              quick=args.quick), args.output)


if __name__ == "__main__":
    main()
