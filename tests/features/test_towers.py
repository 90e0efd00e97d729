import pytest
import torch

from conftest import TINY
from geoloc_core.features.encoders import build_vision_tower
from geoloc_core.features.towers import Suffix, finish_forward, prefix_tokens


@pytest.mark.parametrize("unfrozen", [0, 1, 2])
def test_the_suffix_with_a_class_token_last_block_equals_the_whole_tower_forward_and_backward(unfrozen):
    torch.manual_seed(0)
    tower = build_vision_tower(TINY).eval()
    size = TINY.tower["image_size"]
    pixels = torch.randn(3, 3, size, size)
    with torch.no_grad():
        tokens = prefix_tokens(tower, pixels, unfrozen)
        whole, _ = finish_forward(tower, tokens, unfrozen)
    suffix = Suffix(tower, unfrozen)
    pooled = suffix(tokens)
    assert torch.allclose(pooled, whole, atol=1e-5)
    # the gradient reaches every trainable weight of the last block that the class token depends on, as the full block's
    # would
    pooled.square().sum().backward()
    reference = Suffix(tower, unfrozen)
    x = tokens
    for block in reference.blocks:
        x = block(x)
    (reference.ln_post(x)[:, 0] @ reference.proj).square().sum().backward()
    for (name, p), q in zip(suffix.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
