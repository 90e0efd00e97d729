"""One frozen dataclass per stage, composed into a PipelineConfig. The CLI, the app and the tests build these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "croatia-streetview"


@dataclass(frozen=True)
class IngestConfig:
    data: str = str(DEFAULT_DATA)  # photo folder (its manifest.csv, else EXIF GPS) or a manifest CSV
    manifest: str | None = None  # explicit manifest whose paths are relative to `data`
    workers: int = 8  # threads that read, hash and check the files


@dataclass(frozen=True)
class EmbedConfig:
    model: str = "dinov2-vits14"  # registered encoder or open_clip model name
    checkpoint: str | None = None  # local weights file; None = the installed default
    pretrained: str | None = None  # open_clip pretrained tag, only if already cached locally
    image_size: int | None = None  # input side in px for registered encoders (position grid resized); None = native
    batch_size: int = 16  # images per forward pass (16 is fastest per image on 2 CPU cores)
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    patches: bool = False  # also store patch tokens (float16) for GeM / VLAD
    workers: int = 4  # decoding threads, one batch ahead of the model
    ray: str | None = None  # Ray address ("local" starts one here, "auto", "ray://head:10001"); None = this process


@dataclass(frozen=True)
class GraphConfig:
    kinds: tuple[str, ...] = ("dt", "gg", "rng")  # proximity graphs to build
    test_frac: float = 0.2  # share of locations held out; graphs and regions see only the rest
    split_seed: int = 0  # seed of the grouped train/test split


@dataclass(frozen=True)
class RegionConfig:
    resolution: float = 1.0  # Louvain resolution: higher gives more, smaller regions
    seed: int = 0  # Louvain's random node order
    negative: str = "clip"  # negative cosine -> weight: "clip" (to 0) or "shift" ((1 + cos) / 2)


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 0  # seed of the classifier


@dataclass(frozen=True)
class FinetuneConfig:
    graph: str = "dt"  # proximity graph whose Louvain regions are the classes
    rounds: int = 3  # fine-tuning rounds: FT1 .. FTn (round 0, "w/o", is always run)
    epochs: int = 4  # epochs per round
    unfrozen_blocks: int = 2  # last k transformer blocks trained (with the final norm and a new head)
    lr: float = 2e-4  # AdamW learning rate of the unfrozen blocks
    head_lr: float = 2e-3  # learning rate of the (cosine) classification head
    weight_decay: float = 0.05
    batch_size: int = 32
    seed: int = 0  # batch order and head initialisation
    device: str = "auto"  # "auto" = CUDA (bf16 autocast) when present, else CPU


@dataclass(frozen=True)
class PipelineConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Inverse of dataclasses.asdict; unknown keys are an error, missing ones take defaults."""
        parts = {}
        for f in dataclasses.fields(cls):
            sub = dict(d.get(f.name, {}))
            sub_cls = type(getattr(cls(), f.name))
            for sf in dataclasses.fields(sub_cls):
                if sf.name in sub and isinstance(sub[sf.name], list):
                    sub[sf.name] = tuple(sub[sf.name])
            parts[f.name] = sub_cls(**sub)
        return cls(**parts)
