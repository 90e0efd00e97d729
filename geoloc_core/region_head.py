"""The latest fine-tuning round's region classifier, run on new photos inside their embedding pass.

A round checkpoint (`finetune_{graph}/checkpoints/round{r}.pt`) holds the fine-tuned last k blocks,
the cosine head and the regions it learned: those cut in round r-1 (`regions_r{r-1}.*` beside the
checkpoints). The frozen encoder computes the tokens entering those k blocks anyway, so classifying
a photo costs k more blocks, not a second forward pass (`Encoder.forward_with`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .embed import Encoder
from .finetune import CosineHead, finetune_dirs
from .towers import Suffix


@dataclass
class RegionHead:
    """(B, T, D) tokens entering the last `unfrozen_blocks` blocks -> (B, n_regions) log-probabilities."""

    suffix: Suffix
    head: CosineHead
    unfrozen_blocks: int
    round: int
    regions: Path  # regions_r{round-1}.csv: the labels it predicts, with their polygons (.geojson) beside it

    def __call__(self, prefix: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.suffix(prefix)).float(), dim=1)

    @property
    def name(self) -> str:
        return f"FT{self.round} classifier"


def round_checkpoints(run_dir: Path, graph: str = "*") -> list[Path]:
    """Every round checkpoint of the run's fine-tuning runs for `graph` (a glob), by `geoloc finetune` or `geoloc experiment`."""
    return sorted(p for d in finetune_dirs(run_dir, graph) for p in (d / "checkpoints").glob("round*.pt")
                  if p.stem.removeprefix("round").isdigit())


def latest_round(run_dir: Path, graph: str) -> Path | None:
    """The highest round's checkpoint for `graph` (the newer one where two fine-tuning runs reached it)."""
    return max(round_checkpoints(run_dir, graph), key=lambda p: (int(p.stem.removeprefix("round")), p.stat().st_mtime), default=None)


def load_region_head(path: Path, encoder: Encoder) -> RegionHead:
    """A round checkpoint on top of `encoder` (weights only, never unpickled code); refuses another encoder's checkpoint."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("encoder", encoder.key) != encoder.key:
        raise ValueError(f"{path} fine-tuned encoder {state['encoder']}, not this run's {encoder.key}")
    suffix = Suffix(encoder.model, int(state["unfrozen_blocks"]))
    suffix.load_state_dict(state["suffix"])
    weight = state["head"]["weight"]
    head = CosineHead(weight.shape[1], weight.shape[0])
    head.load_state_dict(state["head"])
    r = int(path.stem.removeprefix("round"))
    regions = path.parent.parent / f"regions_r{r - 1}.csv"
    if not regions.exists():
        raise FileNotFoundError(f"{path} predicts the regions of {regions}, which is missing")
    return RegionHead(suffix.eval().to(encoder.device), head.eval().to(encoder.device), int(state["unfrozen_blocks"]), r, regions)
