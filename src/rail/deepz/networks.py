"""The Deepz networks, for a whole ensemble at once.

Every layer holds the weights of all M ensemble members stacked along a leading axis, so one
batched matrix multiply runs every member (no Python loop over networks in training or inference).
Tensors flow with shape (M, B, features): member m sees its own batch row ``x[m]``.

Architecture (Eriksen et al. 2020): an encoder maps the input features to ``latent_dim`` latent
features, a decoder maps them back to the normalised fluxes (a denoising autoencoder), and the
redshift network takes the input features concatenated with the latent features and outputs a
mixture of ``n_gaussians`` Gaussians (a mixture density network, Bishop 1994). Every hidden linear
layer is followed by batch normalisation, ReLU and dropout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "Architecture", "StackedLinear", "StackedBatchNorm", "StackedDropout", "StackedMLP", "DeepzEnsemble",
    "MemberNoise", "member_rng", "init_members", "mixture_parameters",
]

SIGMA_MIN = 1e-3  # floor of the mixture standard deviations (redshift units)
_STREAMS = {"init": 0, "order": 1, "dropout": 2}


def member_rng(seed: int, member: int, stream: str) -> np.random.Generator:
    """The random stream ``stream`` ("init", "order" or "dropout") of ensemble member ``member``.

    Seeded from (seed, member, stream) only, so a member's weights, batches and dropout masks do
    not depend on which other members are trained with it (in one model, a loop or MPI ranks).
    """
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(member), _STREAMS[stream])))


class MemberNoise:
    """Dropout masks drawn from one numpy generator per member (see :func:`member_rng`).

    Each member's mask is i.i.d. Bernoulli: the dropped positions are drawn as geometric gaps
    between them (a dropout of 0.02 needs 2% as many draws as a uniform number per element, which
    cost about a tenth of a training step). Masks go to buffers kept per layer; a mask is only read
    by the backward pass of its own step, before it is drawn again.
    """

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self.generators = list(generators)
        self._buffers: dict[tuple[int, int, int, int], tuple[np.ndarray, torch.Tensor]] = {}

    def keep_scale(self, shape: tuple[int, int, int], p: float, device: torch.device, slot: int = 0) -> torch.Tensor:
        """(M, B, F) float32 tensor: 1 / (1 - p) where kept, 0 where dropped (probability p, 0 < p < 1).

        ``slot`` tells apart layers of the same shape (each needs its own buffer within a step).
        """
        m, b, f = shape
        if m != len(self.generators):
            raise ValueError(f"dropout noise for {len(self.generators)} members, the batch has {m}")
        key = (slot, m, b, f)
        if key not in self._buffers:
            mask = np.empty((m, b * f), dtype=np.float32)
            self._buffers[key] = (mask, torch.from_numpy(mask).view(m, b, f))
        mask, tensor = self._buffers[key]
        mask.fill(np.float32(1.0 / (1.0 - p)))
        n = b * f
        chunk = int(n * p + 6.0 * math.sqrt(n * p) + 16)
        for g, row in zip(self.generators, mask):
            ends = np.cumsum(g.geometric(p, size=chunk))  # 1-based positions of the dropped elements
            while ends[-1] <= n:
                ends = np.concatenate([ends, ends[-1] + np.cumsum(g.geometric(p, size=chunk))])
            row[ends[ends <= n] - 1] = 0.0
        return tensor if device.type == "cpu" else tensor.to(device)


# softplus(x) = log(1 + exp(x)) is a float32 denormal for x < ~-87, which costs an x86 CPU ~20x a
# normal result; below -80 its value (< 1.8e-35) is zero for every use here, so x is clamped there
_SOFTPLUS_FLOOR = -80.0


def mixture_parameters(raw: torch.Tensor, arch: "Architecture") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MDN output layer (..., 3 G) -> log-weights, means, stds (..., G) of G Gaussians.

    Weights: softmax; means: softplus x ``z_scale`` (>= 0); stds: softplus x 0.1 ``z_scale`` +
    ``SIGMA_MIN`` (redshift units).
    """
    g = arch.n_gaussians
    log_w = F.log_softmax(raw[..., :g], dim=-1)
    # one softplus over a contiguous copy (on a strided slice it is ~4x slower on CPU)
    sp = F.softplus(raw[..., g:].clamp(min=_SOFTPLUS_FLOOR))
    means = sp[..., :g] * arch.z_scale
    stds = sp[..., g:] * arch.z_scale * 0.1 + SIGMA_MIN
    return log_w, means, stds


@dataclass
class Architecture:
    """Hyper-parameters of one Deepz network (identical for every ensemble member).

    ``n_inputs`` features in, ``n_bands`` reconstructed normalised fluxes out of the decoder.
    Layer lists give hidden widths. ``z_scale``/``z_shift`` set the output scale of the means.
    """

    n_inputs: int
    n_bands: int
    encoder_layers: list[int] = field(default_factory=lambda: [128, 128])
    decoder_layers: list[int] = field(default_factory=lambda: [128, 128])
    mdn_layers: list[int] = field(default_factory=lambda: [128, 128, 128])
    latent_dim: int = 10
    n_gaussians: int = 10
    dropout: float = 0.02
    z_scale: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def default_layers(n_bands: int) -> dict[str, list[int]]:
    """Hidden widths suited to the number of bands: broad-band (LSST ugrizy) or ~46 PAUS bands."""
    if n_bands <= 12:
        return dict(encoder_layers=[128, 128], decoder_layers=[128, 128], mdn_layers=[128, 128, 128])
    return dict(
        encoder_layers=[250, 250, 250, 250],
        decoder_layers=[250, 250, 250, 250],
        mdn_layers=[250, 250, 250, 250, 250, 250],
    )


class StackedLinear(nn.Module):
    """M independent linear layers: (M, B, n_in) -> (M, B, n_out)."""

    def __init__(self, n_members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, n_in, n_out))
        self.bias = nn.Parameter(torch.empty(n_members, 1, n_out))
        bound = 1.0 / math.sqrt(n_in)
        nn.init.uniform_(self.weight, -bound, bound)  # torch's default nn.Linear initialisation
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous (M, B, F).

    Batch norm returns its input gradient in (B, M, F) memory order; reduced in that layout, the
    previous layer's bias gradient (a sum over B) would round differently for different member
    counts M, and members would not train bit-identically alone and together.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # pylint: disable=arguments-differ
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # pylint: disable=arguments-differ
        return grad.contiguous()


class StackedBatchNorm(nn.Module):
    """Batch normalisation with separate statistics and affine parameters per member."""

    def __init__(self, n_members: int, n_features: int) -> None:
        super().__init__()
        self.n_members, self.n_features = n_members, n_features
        self.bn = nn.BatchNorm1d(n_members * n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b, f = x.shape
        if x.requires_grad:
            x = _ContiguousGrad.apply(x)
        y = self.bn(x.transpose(0, 1).reshape(b, m * f))
        return y.reshape(b, m, f).transpose(0, 1)


class StackedDropout(nn.Module):
    """Dropout on (M, B, F); with ``noise`` set (a :class:`MemberNoise`) each member uses its own stream.

    Without ``noise`` it is ``nn.Dropout`` (torch's global generator). No parameters or buffers.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.noise: MemberNoise | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        if self.noise is None:
            return F.dropout(x, self.p, True)
        return x * self.noise.keep_scale(tuple(x.shape), self.p, x.device, id(self))


class StackedMLP(nn.Module):
    """Hidden blocks (Linear + BatchNorm + ReLU + Dropout) and a final plain linear layer."""

    def __init__(self, n_members: int, n_in: int, hidden: list[int], n_out: int, dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_in
        for h in hidden:
            blocks += [StackedLinear(n_members, width, h), StackedBatchNorm(n_members, h), nn.ReLU()]
            if dropout > 0:
                blocks.append(StackedDropout(dropout))
            width = h
        blocks.append(StackedLinear(n_members, width, n_out))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepzEnsemble(nn.Module):
    """M Deepz networks (encoder, decoder, MDN) evaluated together.

    ``forward(x)`` takes features (M, B, F) (or (B, F), shared by all members) and returns
    ``(log_weights, means, stds, latent, reconstruction)`` with shapes (M, B, G) x 3,
    (M, B, latent_dim) and (M, B, n_bands).
    """

    def __init__(self, arch: Architecture, n_members: int) -> None:
        super().__init__()
        self.arch, self.n_members = arch, n_members
        a = arch
        # latent_dim == 0: no autoencoder, the redshift network reads the input features only
        self.encoder: StackedMLP | None = None
        self.decoder: StackedMLP | None = None
        if a.latent_dim > 0:
            self.encoder = StackedMLP(n_members, a.n_inputs, a.encoder_layers, a.latent_dim, a.dropout)
            self.decoder = StackedMLP(n_members, a.latent_dim, a.decoder_layers, a.n_bands, a.dropout)
        self.mdn = StackedMLP(n_members, a.n_inputs + a.latent_dim, a.mdn_layers, 3 * a.n_gaussians, a.dropout)

    def set_noise(self, noise: MemberNoise | None) -> None:
        """Draw dropout masks from per-member generators (None: torch's global generator)."""
        for mod in self.modules():
            if isinstance(mod, StackedDropout):
                mod.noise = noise

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x.unsqueeze(0).expand(self.n_members, -1, -1)
        return x

    def mixture(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixture parameters and latent features, without running the decoder."""
        x = self._expand(x)
        if self.encoder is None:
            latent = x.new_zeros(*x.shape[:-1], 0)
            raw = self.mdn(x)
        else:
            latent = self.encoder(x)
            raw = self.mdn(torch.cat([x, latent], dim=-1))
        return (*mixture_parameters(raw, self.arch), latent)

    def forward(self, x: torch.Tensor):
        log_w, means, stds, latent = self.mixture(x)
        if self.decoder is None:
            recon = latent.new_zeros(*latent.shape[:-1], self.arch.n_bands)
        else:
            recon = self.decoder(latent)
        return log_w, means, stds, latent, recon


@torch.no_grad()
def init_members(model: DeepzEnsemble, seed: int, members: Sequence[int]) -> None:
    """Re-draw every linear layer's weights and biases, member by member, from its own stream.

    Same distribution as ``nn.Linear``'s default (uniform +-1/sqrt(n_in)); member j of ``model``
    gets the weights of global member ``members[j]``, whatever the other members are.
    """
    if len(members) != model.n_members:
        raise ValueError(f"{len(members)} member indices for {model.n_members} ensemble members")
    layers = [mod for mod in model.modules() if isinstance(mod, StackedLinear)]
    for j, member in enumerate(members):
        rng = member_rng(seed, member, "init")
        for layer in layers:
            n_in, n_out = layer.weight.shape[1:]
            bound = 1.0 / math.sqrt(n_in)
            layer.weight[j] = torch.as_tensor(rng.uniform(-bound, bound, (n_in, n_out)), dtype=layer.weight.dtype)
            layer.bias[j] = torch.as_tensor(rng.uniform(-bound, bound, (1, n_out)), dtype=layer.bias.dtype)
