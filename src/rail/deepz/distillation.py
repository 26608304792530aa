"""The compact network: one network distilled from the calibrated ensemble, for fast estimation.

The ensemble's PDF of a galaxy is the calibrated pool of every member's mixture (50 Gaussians with
the defaults, 100 for a model informed with a target and simulations), which RAIL's evaluators
need merged to a few components. The compact network outputs such a compact mixture directly: it
starts as the ensemble's first member and is trained to reproduce the ensemble's calibrated PDFs
(the teacher's), so estimating runs one network and no merge, whatever the ensemble holds.

Training inputs: the spec-z rows, copies of them re-observed with their own flux errors (fresh
noise each copy), and the target photometry when the model was informed with one (the rows the
estimator will see, where the teacher's PDFs are out of sample). The loss is the cross-entropy of
the compact mixture at redshifts drawn from the teacher's PDF (a Monte Carlo estimate of the
Kullback-Leibler divergence up to a constant), plus ``label_weight`` times the negative log
likelihood of the spec-z rows' true redshifts, which keeps the compact mixture as sharp as the data
allow (a forward-KL fit alone is slightly wider than its teacher).

Beyond the spec-z sample's redshifts the fine-tuned ensemble knows little: its members were tuned
on galaxies below them. For a model pretrained on simulations the teacher is therefore gated by
redshift (:func:`range_gated`): with g = P_sims(z <= z_high | x), the simulation-pretrained
model's probability that the galaxy lies below the spec-z sample's 99th redshift percentile
z_high, the teacher's PDF is g P_ensemble + (1 - g) P_sims. Inside the spec-z range (g near 1) the
ensemble decides; where the simulations put the galaxy beyond it, their PDF does. The gate acts
where the training inputs reach those galaxies, i.e. on the target photometry.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from . import features as feat
from . import mixture
from .inputs import STATUS_OK, Photometry
from .networks import DeepzEnsemble, StackedLinear, mixture_parameters

__all__ = ["DistillConfig", "DistillData", "distillation_data", "first_member", "distill", "range_gated",
           "add_compact_network"]

#: the teacher: calibrated pooled mixtures (weights, means, stds), each (N, K), of unscaled features (N, F)
Teacher = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class DistillConfig:
    """Settings of the distillation (chosen on folds of the DC2 training file, benchmarks/compact.py).

    ``copies``: spec-z rows in the training set, each time with fresh flux noise after the first
    (the rows as measured); ``max_target_rows``: at most this many x the spec-z rows of the target
    photometry join them; ``epochs`` passes over that set in batches of ``batch_size`` with a
    one-cycle learning rate peaking at ``learning_rate``; ``samples`` teacher redshifts per row and
    step; ``label_weight``: weight of the true-redshift likelihood of the spec-z rows;
    ``frozen_blocks``: hidden blocks of the redshift network kept as in the first member (their
    outputs are then computed once, like the encoder's).
    """

    copies: int = 4
    max_target_rows: float = 4.0
    epochs: int = 16
    batch_size: int = 1024
    learning_rate: float = 3e-3
    samples: int = 8
    label_weight: float = 0.04
    frozen_blocks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistillData:
    """The distillation inputs: unscaled features (N, F), true redshifts (N,) (NaN: unlabelled rows)."""

    features: np.ndarray
    redshift: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


def distillation_data(spec: Photometry, redshift: np.ndarray, ref_index: int, cfg: DistillConfig, seed: int,
                      target_features: np.ndarray | None = None) -> DistillData:
    """The spec-z rows (``spec``, ``redshift`` (N,)) with ``cfg.copies - 1`` noisy copies, and target rows.

    A copy adds N(0, flux_err) to every detected flux (non-detections and missing bands stay as they
    are); rows whose reference band is then not a detection are left out. ``target_features`` (unscaled,
    rows with a usable reference band) are subsampled to ``cfg.max_target_rows`` x the spec-z rows.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7, 1)))
    xs, zs = [], []
    detected = spec.status == STATUS_OK
    for c in range(cfg.copies):
        flux = spec.flux if c == 0 else np.where(detected, spec.flux + spec.flux_err * rng.standard_normal(spec.flux.shape),
                                                  spec.flux)
        x, _, _, bad = feat.flux_features(Photometry(flux, spec.flux_err, spec.status), ref_index)
        xs.append(x[~bad])
        zs.append(np.asarray(redshift, dtype=np.float32)[~bad])
    if target_features is not None and len(target_features):
        n_max = int(cfg.max_target_rows * len(redshift))
        rows = rng.permutation(len(target_features))[:n_max] if len(target_features) > n_max else slice(None)
        xs.append(np.asarray(target_features, dtype=np.float32)[rows])
        zs.append(np.full(xs[-1].shape[0], np.nan, dtype=np.float32))
    return DistillData(np.concatenate(xs).astype(np.float32), np.concatenate(zs))


def first_member(net: DeepzEnsemble) -> DeepzEnsemble:
    """A one-member copy of the ensemble's first member (weights and batch-norm statistics), eval mode."""
    single = DeepzEnsemble(net.arch, 1)
    m = net.n_members
    state = {}
    for key, value in net.state_dict().items():
        if value.dim() == 0:
            state[key] = value.clone()
        elif value.shape[0] == m:
            state[key] = value[:1].clone()
        else:  # batch-norm parameters and statistics are stored as (M * F,)
            state[key] = value[: value.numel() // m].clone()
    single.load_state_dict(state)
    return single.to(next(net.parameters()).device).eval()


def _teacher_draws(w: torch.Tensor, m: torch.Tensor, s: torch.Tensor, n: int,
                   generator: torch.Generator) -> torch.Tensor:
    """``n`` stratified draws (B, n) from each row's mixture (weights (B, K) summing to 1).

    Draw j takes u = (j + U) / n with one uniform U per row: the component whose cumulative weight
    interval holds u, at the quantile of that Gaussian given by u's position in the interval, so the
    draws cover the mixture evenly (a low-variance estimate of the cross-entropy).
    """
    cum = torch.cumsum(w, dim=1)
    u = (torch.arange(n, device=w.device, dtype=w.dtype) + torch.rand(w.shape[0], 1, generator=generator,
                                                                      device=w.device, dtype=w.dtype)) / n
    comp = torch.searchsorted(cum, u).clamp_max(w.shape[1] - 1)
    lower = torch.gather(cum, 1, comp) - torch.gather(w, 1, comp)
    within = ((u - lower) / torch.gather(w, 1, comp).clamp_min(1e-30)).clamp(1e-6, 1.0 - 1e-6)
    return torch.gather(m, 1, comp) + torch.gather(s, 1, comp) * torch.special.ndtri(within)


def distill(teacher: Teacher, student: DeepzEnsemble, data: DistillData, mean: np.ndarray, std: np.ndarray,
            cfg: DistillConfig, seed: int, progress: Callable[[str], None] | None = None) -> dict:
    """Train the redshift network of ``student`` (a one-member :class:`DeepzEnsemble`) on ``data``.

    The student's encoder (the autoencoder's, as trained with the ensemble) is kept as it is, so its
    latent features are computed once, like the teacher's mixtures; batch norm runs on its stored
    statistics (eval mode) and there is no dropout, so the student is a fixed function of its weights.
    The feature scaler ``mean``, ``std`` (F,) is the ensemble's. Returns a summary: rows, steps,
    seconds, the final mean cross-entropy to the teacher.
    """
    t0 = time.time()
    device = next(student.parameters()).device
    tw, tm, ts = (t.to(device=device, dtype=torch.float32) for t in teacher(data.features))
    tw = tw / tw.sum(-1, keepdim=True)
    student.eval()
    layers = list(student.mdn.net)
    starts = [i for i, mod in enumerate(layers) if isinstance(mod, StackedLinear)]
    split = starts[min(cfg.frozen_blocks, len(starts) - 1)]
    frozen, trained = torch.nn.Sequential(*layers[:split]), torch.nn.Sequential(*layers[split:])
    with torch.no_grad():
        x = torch.as_tensor((data.features - mean) / std, dtype=torch.float32, device=device).unsqueeze(0)
        h = x if student.encoder is None else torch.cat([x, student.encoder(x)], dim=-1)  # (1, N, F + latent)
        h = frozen(h)
    z = torch.as_tensor(data.redshift, dtype=torch.float32, device=device)
    labelled = torch.isfinite(z)
    opt = torch.optim.Adam(trained.parameters(), lr=cfg.learning_rate)
    n = len(data)
    total = cfg.epochs * math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.learning_rate, total_steps=max(total, 1),
                                                pct_start=0.1)
    order_rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7, 2)))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) + 104729)
    last = float("nan")
    for epoch in range(cfg.epochs):
        perm = torch.as_tensor(order_rng.permutation(n), device=device)
        running = torch.zeros((), device=device)
        for a in range(0, n, cfg.batch_size):
            idx = perm[a : a + cfg.batch_size]
            log_w, means, stds = (t[0] for t in mixture_parameters(trained(h[:, idx]), student.arch))
            draws = _teacher_draws(tw[idx], tm[idx], ts[idx], cfg.samples, generator)
            cross = -mixture.log_prob(draws, log_w, means, stds).mean()
            loss = cross
            if cfg.label_weight > 0:
                lab = labelled[idx]
                zl = torch.where(lab, z[idx], torch.zeros_like(z[idx]))
                nll = -(mixture.log_prob(zl, log_w, means, stds) * lab).sum() / lab.sum().clamp_min(1)
                loss = (1.0 - cfg.label_weight) * cross + cfg.label_weight * nll
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += cross.detach() * len(idx)
        last = float(running) / n
        if progress is not None and (epoch % 4 == 3 or epoch == cfg.epochs - 1):
            progress(f"compact network: epoch {epoch + 1}/{cfg.epochs}, cross-entropy to the ensemble {last:.4f}")
    return dict(rows=n, steps=total, seconds=round(time.time() - t0, 2), cross_entropy=round(last, 5),
                config=cfg.to_dict())


def range_gated(teacher: Teacher, simulations: Teacher, z_high: float, stats: dict | None = None) -> Teacher:
    """The teacher gated by redshift: g P_teacher + (1 - g) P_sims, g = P_sims(z <= ``z_high``) per row.

    ``simulations``: the PDFs of the simulation-pretrained model (same feature rows); the result has
    both sets of components (N, K + K_sims). ``stats`` (optional) receives the mean gate and the share
    of rows with g < 0.5.
    """

    def pdfs(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w, m, s = teacher(x)
        pw, pm, ps = (t.to(w.dtype) for t in simulations(x))
        g = mixture.cdf(torch.full((w.shape[0],), float(z_high), dtype=w.dtype, device=w.device), pw, pm, ps)
        g = g.clamp(0.0, 1.0).unsqueeze(1)
        if stats is not None:
            stats.update(mean_gate=round(float(g.mean()), 4), beyond_share=round(float((g < 0.5).double().mean()), 4))
        return torch.cat([w * g, pw * (1.0 - g)], 1), torch.cat([m, pm], 1), torch.cat([s, ps], 1)

    return pdfs


def add_compact_network(model: dict, spec: Photometry, redshift: np.ndarray, target_features: np.ndarray | None,
                        seed: int, device: torch.device, progress: Callable[[str], None] | None = None,
                        cfg: DistillConfig | None = None, z_high: float | None = None) -> dict:
    """``model`` (a packed ensemble) with its compact network: distilled from the model's own calibrated
    PDFs on the spec-z rows ``spec`` (photometry of the usable training rows), ``redshift`` (N,), and
    ``target_features`` (unscaled, or None). ``z_high``: for a model holding its simulation-pretrained
    network (:func:`rail.deepz.model_io.with_simulation_network`), that network's PDFs decide above
    this redshift (:func:`range_gated`); None: the ensemble's PDFs alone. See the module docstring."""
    from .building import prior_mixture  # pylint: disable=import-outside-toplevel
    from .estimating import DeepzPredictor  # pylint: disable=import-outside-toplevel
    from .model_io import with_compact_network  # pylint: disable=import-outside-toplevel

    cfg = cfg or DistillConfig()
    teacher = DeepzPredictor(model, device, batch_size=16384, network="ensemble")

    def teacher_pdfs(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cover = teacher.coverage(x, np.zeros(len(x), dtype=bool)) if teacher.calibration.uses_coverage else None
        return teacher.mixtures(x, torch.float32, cover)

    gate: dict = {}
    if z_high is not None:
        teacher_pdfs = range_gated(teacher_pdfs, lambda x: teacher.simulation_mixtures(x, torch.float32), z_high,
                                   gate)
        gate["z_high"] = round(z_high, 4)
    data = distillation_data(spec, redshift, teacher.ref_index, cfg, seed, target_features)
    student = first_member(teacher.net)
    summary = distill(teacher_pdfs, student, data, teacher.mean.cpu().numpy(), teacher.std.cpu().numpy(), cfg, seed,
                      progress)
    if gate:
        summary["range_gate"] = gate
        if progress is not None:
            progress(f"compact network: beyond z = {gate['z_high']:.3f} (the spec-z sample's 99th percentile) the "
                     f"simulation-pretrained model decides; {gate['beyond_share']:.1%} of the distillation rows "
                     f"mostly above it")
    prior = prior_mixture(np.asarray(redshift, dtype=np.float64), student.arch.n_gaussians)
    return with_compact_network(model, student, prior, summary)
