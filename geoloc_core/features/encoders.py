"""Image encoders by name: a registry of tower specs, loading weights from local files, and the forward pass.

The default encoder is DINOv2 ViT-S/14 as an open_clip `VisionTransformer`, its weights made by the
install step (`geoloc install-weights`, see weights.py). Any open_clip model name works too, with a
local checkpoint or a pretrained tag already in the local cache: nothing is downloaded at run time.
An encoder's `key` names its weights and input size; every cache and artefact made with it is keyed by it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from geoloc_core.base.storage import file_digest
from geoloc_core.config import PROJECT_DIR
from geoloc_core.features.towers import finish_forward, prefix_tokens

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ENCODER = "dinov2-vits14"


def model_dir() -> Path:
    """Where installed weights live: $GEOLOC_MODEL_DIR, else `models/` beside the package."""
    return Path(os.environ.get("GEOLOC_MODEL_DIR", PROJECT_DIR / "models"))


@dataclass(frozen=True)
class EncoderSpec:
    """An open_clip VisionTransformer configuration plus how to feed it; data, not code."""

    name: str
    tower: dict  # keyword arguments of open_clip.transformer.VisionTransformer
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    ln_eps: float = 1e-5
    weights_file: str | None = None  # default checkpoint, relative to model_dir()


DINOV2_VITS14 = EncoderSpec(
    name="dinov2-vits14",
    tower=dict(image_size=224, patch_size=14, width=384, layers=12, heads=6, mlp_ratio=4.0, ls_init_value=1.0,
               output_dim=384, no_ln_pre=True, pool_type="tok"),
    ln_eps=1e-6,
    weights_file="dinov2_vits14.safetensors",
)

ENCODERS: dict[str, EncoderSpec] = {DINOV2_VITS14.name: DINOV2_VITS14}


def register_encoder(spec: EncoderSpec) -> None:
    """Make `spec` loadable by its name (`load_encoder`, `--model`)."""
    ENCODERS[spec.name] = spec


def spec_to_metadata(spec: EncoderSpec) -> dict[str, str]:
    """safetensors metadata that lets a checkpoint describe its own tower (see spec_from_checkpoint)."""
    return {"geoloc_encoder_spec": json.dumps(dataclasses.asdict(spec))}


def spec_from_checkpoint(path: Path) -> EncoderSpec | None:
    """The EncoderSpec a safetensors checkpoint carries in its metadata, if any.

    So a checkpoint of a tower this process has never registered (another process's, a user's)
    loads by name with --checkpoint alone.
    """
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("geoloc_encoder_spec")
    if raw is None:
        return None
    d = json.loads(raw)
    return EncoderSpec(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})


def build_vision_tower(spec: EncoderSpec) -> torch.nn.Module:
    """An untrained tower for `spec` (no I/O)."""
    from open_clip.transformer import LayerNorm, VisionTransformer

    return VisionTransformer(**spec.tower, norm_layer=functools.partial(LayerNorm, eps=spec.ln_eps))


@dataclass
class Encoder:
    """A loaded image tower: `model(pixels) -> (pooled (B, D), patch tokens (B, P, Dp))`."""

    name: str
    key: str  # identifies the weights: the cache and every artefact are keyed by it
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    image_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) preprocessed pixels -> (B, D) pooled embeddings, (B, P, Dp) patch tokens, float32."""
        pixels = pixels.to(self.device, non_blocking=True)
        with autocast(self.device):
            pooled, tokens = self.model(pixels)
        return pooled.float(), tokens.float()

    @torch.no_grad()
    def forward_with(self, pixels: torch.Tensor, head: Head, finish: bool = True
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """`forward` plus `head` run on the tokens entering the tower's last `head.unfrozen_blocks` blocks, in one pass.

        `finish=False` skips the tower's own last blocks (pooled and tokens are None) where the head's output is all
        that is wanted: a fine-tuned backbone's embedding costs no more than the pretrained one's."""
        pixels = pixels.to(self.device, non_blocking=True)
        with autocast(self.device):
            prefix = prefix_tokens(self.model, pixels, head.unfrozen_blocks)
            pooled, tokens = finish_forward(self.model, prefix, head.unfrozen_blocks) if finish else (None, None)
            out = head(prefix)
        return (pooled.float(), tokens.float(), out.float()) if finish else (None, None, out.float())


class Head(Protocol):
    """A model on a tower's intermediate tokens, e.g. a fine-tuned region classifier (classifier.RegionHead)."""

    unfrozen_blocks: int

    def __call__(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens entering the tower's last `unfrozen_blocks` blocks -> the head's (B, C) output."""


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op on the CPU (where bf16 matmuls are slower, not faster)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of a `device` setting: "auto" is CUDA when present, else the CPU; any other name as given."""
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                        else ("cpu" if device == "auto" else device))


def resize_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, D) class + patch position embeddings -> (1 + grid*grid, D), patch part resized bicubically."""
    cls, patches = pos[:1], pos[1:]
    side = int(round(len(patches) ** 0.5))
    if side == grid:
        return pos
    x = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, x.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pos.dtype)])


def input_sides(name: str, checkpoint: str | Path | None = None) -> tuple[int, int] | None:
    """(native input side, patch side) in px of a registered encoder (or one its checkpoint describes), whose input size
    `load_encoder(image_size=...)` can change; None for an open_clip model, which keeps its own."""
    spec = ENCODERS.get(name) or (spec_from_checkpoint(Path(checkpoint)) if checkpoint else None)
    return None if spec is None else (spec.tower["image_size"], spec.tower["patch_size"])


def load_encoder(name: str = DEFAULT_ENCODER, checkpoint: str | Path | None = None, pretrained: str | None = None,
                 device: str = "auto", image_size: int | None = None) -> Encoder:
    """Load an encoder by registry name or open_clip model name.

    Args:
        name: a registered name (`dinov2-vits14`, the default) or any `open_clip.list_models()` name.
        checkpoint: a local weights file (safetensors, or a torch state dict loaded with
            weights_only=True); for registered encoders it defaults to the installed weights.
        pretrained: an open_clip pretrained tag, used only if its weights are already cached locally.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        image_size: input side in pixels for registered encoders (a multiple of the patch size); the
            learned position grid is resized to it. None keeps the encoder's own size.
    """
    dev = resolve_device(device)
    if name not in ENCODERS and checkpoint is not None:
        described = spec_from_checkpoint(Path(checkpoint))
        if described is not None and described.name == name:
            register_encoder(described)
    if name in ENCODERS:
        spec = ENCODERS[name]
        path = Path(checkpoint) if checkpoint else (model_dir() / spec.weights_file if spec.weights_file else None)
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"weights for encoder {name!r} not found at {path}; run `bash scripts/setup.sh` (or "
                "`geoloc install-weights`) or pass --checkpoint FILE"
            )
        image_size = image_size or spec.tower["image_size"]
        if image_size % spec.tower["patch_size"]:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {spec.tower['patch_size']}")
        model = build_vision_tower(EncoderSpec(**{**vars(spec), "tower": {**spec.tower, "image_size": image_size}}))
        state = load_state_dict(path)
        state["positional_embedding"] = resize_positions(state["positional_embedding"],
                                                         image_size // spec.tower["patch_size"])
        model.load_state_dict(state)
        mean, std = spec.mean, spec.std
        key = f"{name}-{file_digest(path)}"
    else:
        if image_size is not None:
            raise ValueError("image_size applies to registered encoders; open_clip models keep their own")
        model, image_size, mean, std, key = _load_open_clip(name, checkpoint, pretrained)
    if not hasattr(model, "output_tokens"):
        raise ValueError(f"encoder {name!r} has no patch-token output (open_clip timm towers do not)")
    model.output_tokens = True
    model.eval().to(dev)
    return Encoder(name=name, key=f"{key}-{image_size}px", model=model,
                   preprocess=make_preprocess(image_size, mean, std), image_size=image_size, device=dev)


def _load_open_clip(name: str, checkpoint, pretrained):
    import open_clip

    if name not in open_clip.list_models():
        raise KeyError(f"unknown encoder {name!r}; registered: {sorted(ENCODERS)}, or an open_clip model name")
    source = str(checkpoint) if checkpoint else pretrained
    try:
        clip = open_clip.create_model(name, pretrained=source, weights_only=True)
    except Exception as exc:
        raise FileNotFoundError(f"could not load open_clip {name!r} with {source!r} offline ({exc}); pass --checkpoint "
                                "FILE") from exc
    cfg = clip.visual.preprocess_cfg
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    key = f"{name}-{file_digest(Path(checkpoint)) if checkpoint else (pretrained or 'random')}"
    return clip.visual, size, tuple(cfg["mean"]), tuple(cfg["std"]), key


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file or a torch state dict, never executing pickled code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def make_preprocess(image_size: int, mean, std) -> Callable[[Image.Image], torch.Tensor]:
    """Shorter side to `image_size` (bicubic), centre crop, normalise: open_clip's eval transform."""
    import open_clip

    return open_clip.image_transform(image_size, is_train=False, mean=mean, std=std)
