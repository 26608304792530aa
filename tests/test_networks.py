import pytest
import torch

from rail.deepz.networks import Architecture, DeepzEnsemble, StackedBatchNorm, StackedLinear


def test_stacked_linear_equals_separate_layers():
    torch.manual_seed(0)
    layer = StackedLinear(3, 5, 4)
    x = torch.randn(3, 8, 5)
    y = layer(x)
    for m in range(3):
        ref = x[m] @ layer.weight[m] + layer.bias[m]
        torch.testing.assert_close(y[m], ref)


def test_stacked_batchnorm_normalises_each_member_separately():
    bn = StackedBatchNorm(2, 3)
    x = torch.randn(2, 64, 3)
    x[1] = x[1] * 10 + 5
    y = bn(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(1, unbiased=False), torch.ones(2, 3), atol=1e-3, rtol=0)


def test_ensemble_output_shapes_and_constraints():
    arch = Architecture(n_inputs=13, n_bands=6, encoder_layers=[8], decoder_layers=[8], mdn_layers=[8, 8],
                        latent_dim=4, n_gaussians=5)
    net = DeepzEnsemble(arch, n_members=3).eval()
    log_w, means, stds, latent, recon = net(torch.randn(10, 13))
    assert log_w.shape == means.shape == stds.shape == (3, 10, 5)
    assert latent.shape == (3, 10, 4) and recon.shape == (3, 10, 6)
    torch.testing.assert_close(torch.exp(log_w).sum(-1), torch.ones(3, 10))
    assert (stds > 0).all() and (means >= 0).all()


def test_members_are_independent():
    """A loss on member 0 only must not change the gradients of member 1."""
    arch = Architecture(n_inputs=4, n_bands=2, encoder_layers=[6], decoder_layers=[6], mdn_layers=[6],
                        latent_dim=2, n_gaussians=2, dropout=0.0)
    net = DeepzEnsemble(arch, n_members=2)
    log_w, means, stds, _, _ = net(torch.randn(2, 16, 4))
    (means[0].sum() + stds[0].sum()).backward()
    for p in net.parameters():
        if p.grad is not None and p.shape[0] == 2:
            assert torch.all(p.grad[1] == 0)


def test_fused_inference_equals_the_module():
    from rail.deepz.estimating import FusedEnsemble

    torch.manual_seed(3)
    arch = Architecture(n_inputs=13, n_bands=6, encoder_layers=[16, 8], decoder_layers=[8], mdn_layers=[16, 16],
                        latent_dim=4, n_gaussians=5)
    net = DeepzEnsemble(arch, n_members=3)
    net.train()
    for _ in range(3):  # give batch norm non-trivial running statistics
        net(torch.randn(64, 13) * 2 + 1)
    net.eval()
    x = torch.randn(50, 13)
    fused = FusedEnsemble(net)  # latent 4 and 15 outputs, zero-padded to 16 inside
    with torch.no_grad():
        ref = net.mixture(x)[:3]
        out = fused.mixture(x)
        kept = [t.clone() for t in out]
        again = fused.mixture(x[:20])  # other batch shape, then the same one: layer buffers reused
        fused.mixture(torch.randn(50, 13))
    for a, b, c in zip(ref, out, kept):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=0, atol=0)  # earlier outputs are not overwritten
    for a, b in zip(ref, again):
        torch.testing.assert_close(a[:, :20], b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width,threads", [(4, 1), (64, 1), (64, 2)])
def test_members_train_the_same_in_any_group(width, threads):
    """Per-member random streams: members 1, 2 trained as a 2-member model equal the 4-member run.

    (Used by MPI inform, which trains contiguous slices of the ensemble on different ranks.)
    Width 4: every parameter in foreach Adam; width 64: most in the fused Adam kernel (per-member
    blocks of multiples of 64 elements), also with 2 threads splitting the kernel's work.
    """
    import numpy as np

    from rail.deepz.building import build_network
    from rail.deepz.training import TrainConfig, _adam, ensemble_splits, train_ensemble

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(5)
    n = 400
    x, z = torch.randn(n, 7, generator=gen), torch.rand(n, generator=gen)
    ratios, ratio_err = torch.randn(n, 3, generator=gen), torch.ones(n, 3)
    arch = Architecture(n_inputs=7, n_bands=3, encoder_layers=[width], decoder_layers=[width],
                        mdn_layers=[width, width], latent_dim=2, n_gaussians=2, dropout=0.1)
    fused = [g for g in _adam(list(build_network(arch, 4, 3).parameters()), 4, 1e-3, 0.0).param_groups if g["fused"]]
    assert bool(fused) == (width == 64)
    splits = ensemble_splits(n, 1, 4, 3)
    cfg = TrainConfig(learning_rates=[1e-3], epochs_per_step=[2], batch_size=32, seed=3)
    full = build_network(arch, 4, 3)
    res_full = train_ensemble(full, x, z, ratios, ratio_err, splits, cfg)
    part = build_network(arch, 2, 3, members=[1, 2])
    res_part = train_ensemble(part, x, z, ratios, ratio_err, splits, cfg, members=[1, 2])
    np.testing.assert_array_equal(res_full.best_val_loss[1:3], res_part.best_val_loss)
    for name, value in part.state_dict().items():
        if value.dim():
            ref = full.state_dict()[name].reshape(4, -1)[1:3]
            assert torch.equal(ref, value.reshape(2, -1)), name
    torch.set_num_threads(old_threads)
