"""The frozen trunk's in-place GELU: the same values as F.gelu, in place only without autograd."""

import pytest
import torch
import torch.nn.functional as F

from ovseg.modeling.backbone import InPlaceGELU


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_same_values_and_in_place_only_without_grad(approximate):
    x = torch.randn(4, 7)
    expected = F.gelu(x, approximate=approximate)
    act = InPlaceGELU(approximate)
    with torch.no_grad():
        y = x.clone()
        out = act(y)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, expected)
    leaf = x.clone().requires_grad_(True)
    out = act(leaf)
    assert torch.equal(leaf.detach(), x)  # input untouched when autograd records
    out.sum().backward()
    reference = x.clone().requires_grad_(True)
    F.gelu(reference, approximate=approximate).sum().backward()
    torch.testing.assert_close(leaf.grad, reference.grad)


def test_every_trunk_mlp_uses_it(parity_predictor):
    trunk = parity_predictor.model.backbone.clip.visual.trunk
    acts = [m.act for m in trunk.stages.modules() if hasattr(m, "act")]
    assert acts and all(isinstance(a, InPlaceGELU) for a in acts)
