import pytest
import torch
import torch.nn.functional as F

from llama.adapters import ModalityAdapter
from llama.config import AdapterConfig


def test_conv_pooling_normalises_then_projects():
    torch.manual_seed(0)
    ad = ModalityAdapter(AdapterConfig("conv", n_pool=5, in_dim=8, out_dim=16))
    x = torch.randn(2, 5, 8)
    pooled = ad.pooled(x)
    expected = F.normalize(torch.einsum("bnw,n->bw", x, ad.pool.weight[0, :, 0]) + ad.pool.bias, dim=-1)
    torch.testing.assert_close(pooled, expected)
    assert ad(x).shape == (2, 16)


def test_mean_conv_pools_time_then_layers():
    torch.manual_seed(0)
    ad = ModalityAdapter(AdapterConfig("mean_conv", n_pool=3, in_dim=8, out_dim=16))
    x = torch.randn(1, 3, 10, 8)
    expected = F.normalize(torch.einsum("blw,l->bw", x.mean(2), ad.pool.weight[0, :, 0]) + ad.pool.bias, dim=-1)
    torch.testing.assert_close(ad.pooled(x), expected)


def test_conv_rnn_uses_every_frame():
    torch.manual_seed(0)
    ad = ModalityAdapter(AdapterConfig("conv_rnn", n_pool=3, in_dim=8, out_dim=16, rnn_size=8))
    x = torch.randn(1, 3, 10, 8)
    y = x.clone()
    y[:, :, -1] += 1.0                      # change only the last frame
    assert not torch.allclose(ad(x), ad(y))
    assert ad(torch.randn(2, 3, 1, 8)).shape == (2, 16)    # a single frame works


def test_published_video_rnn_is_kept_frozen_and_unused():
    ad = ModalityAdapter(AdapterConfig("conv", n_pool=5, in_dim=8, out_dim=16, rnn_size=12))
    assert ad.legacy_rnn.weight_ih_l0.shape == (12, 12)
    assert not any(p.requires_grad for p in ad.legacy_rnn.parameters())
    assert ad(torch.randn(1, 5, 8)).shape == (1, 16)


def test_wrong_feature_shape_names_both_sides():
    ad = ModalityAdapter(AdapterConfig("conv", n_pool=5, in_dim=8, out_dim=16))
    with pytest.raises(ValueError, match="disagree"):
        ad(torch.randn(1, 6, 8))
