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
    with torch.no_grad():
        ref = net.mixture(x)[:3]
        out = FusedEnsemble(net).mixture(x)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
