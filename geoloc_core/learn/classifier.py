"""The region classifier that fine-tuning trains and prediction reuses: a cosine head on the ViT's trainable suffix.

Fine-tuning (`finetune.py`) trains a `RegionClassifier`; each finished round saves its suffix and head
(`FinetuneRun.round_checkpoint(r)`), which predict the regions cut in round r - 1. Prediction loads
one as a `RegionHead` and runs it inside a photo's one embedding pass: the frozen encoder computes
the tokens entering those k blocks anyway, so classifying costs k more blocks (`Encoder.forward_with`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geoloc_core.features.encoders import Encoder
from geoloc_core.features.towers import Suffix
from geoloc_core.runs.folders import FinetuneRun, RegionFiles


class CosineHead(nn.Module):
    """logits = scale * cos(embedding, class weight).

    The graph is weighted by cosine similarity of unit embeddings, so the head trains exactly that
    geometry: photos of one region are pulled towards one direction, which the next cut then sees.
    """

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) / dim**0.5)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, n_classes) scaled cosine logits."""
        return self.scale * nn.functional.normalize(x, dim=-1) @ nn.functional.normalize(self.weight, dim=-1).T


class RegionClassifier(nn.Module):
    """The trainable suffix of the ViT with one cosine head per label set (one, or several for CPlaNet)."""

    def __init__(self, suffix: Suffix, n_classes: list[int], dim: int, seed: int):
        super().__init__()
        self.suffix = suffix
        torch.manual_seed(seed)
        self.heads = nn.ModuleList(CosineHead(dim, n) for n in n_classes)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, D) prefix tokens -> one (B, n_classes) logit tensor per head."""
        pooled = self.suffix(tokens)
        return [head(pooled) for head in self.heads]


@dataclass
class RegionHead:
    """(B, T, D) tokens entering the last `unfrozen_blocks` blocks -> (B, n_regions) log-probabilities."""

    suffix: Suffix
    head: CosineHead
    unfrozen_blocks: int
    round: int
    regions: RegionFiles  # the partition it predicts (cut in round - 1), with its polygons

    def __call__(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, T, D) prefix tokens -> (B, n_regions) log-probabilities, float32."""
        return torch.log_softmax(self.head(self.suffix(prefix)).float(), dim=1)

    @property
    def name(self) -> str:
        """How tables name it, e.g. "FT2 classifier"."""
        return f"FT{self.round} classifier"


@dataclass
class BackboneHead:
    """An `encoders.Head` for retrieving with a fine-tuning round's backbone: of one pass, its (B, D) unit embedding and
    its (B, C) region log-probabilities, side by side in one (B, D + C) output that `split` parts."""

    region: RegionHead

    @property
    def unfrozen_blocks(self) -> int:
        """The blocks the head runs itself: those of its region head."""
        return self.region.unfrozen_blocks

    def __call__(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, T, D) prefix tokens -> (B, D + C): the unit embedding, then the region log-probabilities."""
        pooled = self.region.suffix(prefix).float()
        return torch.cat([nn.functional.normalize(pooled, dim=-1),
                          torch.log_softmax(self.region.head(pooled).float(), dim=1)], dim=1)

    def split(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D + C) outputs -> (N, D) unit embeddings, (N, C) log-probabilities."""
        d = self.region.head.weight.shape[1]
        return out[:, :d], out[:, d:]


def load_region_head(ft: FinetuneRun, r: int, encoder: Encoder) -> RegionHead:
    """Round r's checkpoint of `ft` on top of `encoder` (weights only, never unpickled code); refuses another encoder's,
    and one whose folder was trained on another split, other photos or embeddings (`FinetuneRun.check`)."""
    ft.check()
    path = ft.round_checkpoint(r)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("encoder", encoder.key) != encoder.key:
        raise ValueError(f"{path} fine-tuned encoder {state['encoder']}, not this run's {encoder.key}")
    suffix = Suffix(encoder.model, int(state["unfrozen_blocks"]))
    suffix.load_state_dict(state["suffix"])
    weight = state["head"]["weight"]
    head = CosineHead(weight.shape[1], weight.shape[0])
    head.load_state_dict(state["head"])
    regions = ft.regions(r - 1)
    if not regions.exists():
        raise FileNotFoundError(f"{path} predicts the regions of {regions.csv}, which is missing")
    return RegionHead(suffix.eval().to(encoder.device), head.eval().to(encoder.device), int(state["unfrozen_blocks"]),
                      r, regions)

