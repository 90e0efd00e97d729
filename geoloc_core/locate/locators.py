"""Two learned locators over frozen image embeddings, both trained on a database's photos only:

- `GpsVerifier`, GeoCLIP's idea without text: a GPS encoder (random Fourier features of the unit
  position vector at several scales, one small MLP per scale, summed) and an image projection,
  trained contrastively so a photo's embedding points at its own location's encoding. G3 uses such
  a model to *verify* candidate coordinates: the candidate whose encoding the photo matches best wins.
- `LatLonRegressor`, the MAE thesis baseline: an MLP from the embedding straight to a position on
  the sphere, trained on the great-circle angle.

Scales are relative to the database's angular extent, so the same settings serve a campus and a
country. Both save as safetensors plus a JSON of their settings; loading never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from geoloc_core.base import storage
from geoloc_core.base.geo import latlon_to_xyz, xyz_to_latlon
from geoloc_core.config import LocatorConfig, from_dict


def angular_extent(xyz: np.ndarray) -> float:
    """Largest angle (radians) between a database position and their mean: the data set's scale."""
    centre = xyz.mean(axis=0)
    centre /= np.linalg.norm(centre)
    return float(max(np.arccos(np.clip(xyz @ centre, -1, 1)).max(), 1e-6))


class GpsEncoder(nn.Module):
    """(N, 3) unit position vectors -> (N, dim) unit encodings."""

    def __init__(self, cfg: LocatorConfig, extent_rad: float):
        super().__init__()
        g = torch.Generator().manual_seed(cfg.seed)
        freqs = torch.stack([torch.randn(3, cfg.n_freq, generator=g) * s / extent_rad for s in cfg.scales])
        self.register_buffer("freqs", freqs)  # (S, 3, F), part of the saved state
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * cfg.n_freq, cfg.hidden), nn.ReLU(),
                                                nn.Linear(cfg.hidden, cfg.dim))
                                  for _ in cfg.scales)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N, 3) unit position vectors -> (N, dim) unit codes: the scales' MLP outputs summed, then normalised."""
        phase = torch.einsum("nc,scf->snf", xyz, self.freqs)
        feats = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)
        return nn.functional.normalize(sum(mlp(f) for mlp, f in zip(self.mlps, feats)), dim=-1)


class GpsVerifier(nn.Module):
    """Scores how well a photo's embedding matches candidate coordinates (cosine of an image code and a GPS code)."""
    def __init__(self, cfg: LocatorConfig, in_dim: int, extent_rad: float):
        super().__init__()
        self.cfg, self.in_dim, self.extent_rad = cfg, in_dim, extent_rad
        self.gps = GpsEncoder(cfg, extent_rad)
        self.image = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim))
        self.log_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))  # CLIP's initial temperature

    def image_codes(self, emb: torch.Tensor) -> torch.Tensor:
        """(M, D) image embeddings -> (M, dim) unit codes, with gradients (for training)."""
        return nn.functional.normalize(self.image(emb), dim=-1)

    @torch.no_grad()
    def image_codes_np(self, emb: np.ndarray) -> np.ndarray:
        """(M, D) unit image embeddings -> (M, dim) unit codes."""
        return self.image_codes(torch.from_numpy(np.asarray(emb, np.float32))).numpy()

    @torch.no_grad()
    def gps_codes(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """Coordinates of any shape (...) -> (..., dim) unit codes."""
        xyz = latlon_to_xyz(np.asarray(lat_deg), np.asarray(lon_deg)).astype(np.float32)
        return self.gps(torch.from_numpy(xyz.reshape(-1, 3))).numpy().reshape(*xyz.shape[:-1], -1)

    def scores(self, emb: np.ndarray, cand_lat_deg: np.ndarray, cand_lon_deg: np.ndarray) -> np.ndarray:
        """(M, D) embeddings, (M, C) candidate coordinates -> (M, C) cosine of photo and candidate codes."""
        return np.einsum("md,mcd->mc", self.image_codes_np(emb), self.gps_codes(cand_lat_deg, cand_lon_deg))


class LatLonRegressor(nn.Module):
    """Predicts an offset from the data's centre in units of its extent, so a campus and a country both
    train on outputs of order one."""

    def __init__(self, cfg: LocatorConfig, in_dim: int, centre: np.ndarray, extent_rad: float):
        super().__init__()
        self.cfg, self.in_dim, self.extent_rad = cfg, in_dim, extent_rad
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, 3))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings -> (N, 3) unit position vectors: the data's centre plus a learned offset."""
        return nn.functional.normalize(self.centre + self.extent_rad * self.mlp(emb), dim=-1)

    @torch.no_grad()
    def predict(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) embeddings -> (lat, lon), (N,) degrees each."""
        self.eval()
        return xyz_to_latlon(self(torch.from_numpy(np.asarray(emb, np.float32))).numpy())


def _fit(model: nn.Module, loss_fn, n: int, cfg: LocatorConfig) -> nn.Module:
    """Minibatch AdamW over `n` training rows; `loss_fn(idx)` gives a batch's loss."""
    g = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = -(-n // cfg.batch_size)
    epochs = max(1, min(cfg.epochs, cfg.max_steps // per_epoch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=epochs * per_epoch)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(cfg.batch_size):
            optimizer.zero_grad()
            loss_fn(idx).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def fit_verifier(emb: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, groups: np.ndarray,
                 cfg: LocatorConfig = LocatorConfig()) -> GpsVerifier:
    """Contrastive image <-> GPS training; photos of one location are each other's positives, not negatives."""
    torch.manual_seed(cfg.seed)
    xyz = latlon_to_xyz(lat_deg, lon_deg)
    extent = angular_extent(xyz)
    model = GpsVerifier(cfg, emb.shape[1], extent)
    e, p = torch.from_numpy(np.asarray(emb, np.float32)), torch.from_numpy(xyz.astype(np.float32))
    g = torch.from_numpy(np.unique(groups, return_inverse=True)[1])
    p64 = torch.from_numpy(xyz)  # float64: a campus's chords are far below float32's resolution of arccos near 1
    noise = torch.Generator().manual_seed(cfg.seed + 1)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        pos = nn.functional.normalize(p[idx] + torch.randn(p[idx].shape, generator=noise) * cfg.jitter * extent, dim=-1)
        logits = model.log_scale.exp().clamp(max=100) * model.image_codes(e[idx]) @ model.gps(pos).T
        same = (g[idx][:, None] == g[idx][None, :]).float()
        if cfg.smooth > 0:  # PIGEON's haversine smoothing: nearby photos are soft positives
            angle = 2 * torch.asin((torch.cdist(p64[idx], p64[idx]) / 2).clamp(max=1))
            same = torch.maximum(same, torch.exp(-angle / (cfg.smooth * extent)).float())
        return -(torch.log_softmax(logits, dim=1) * same / same.sum(1, keepdim=True)).sum(1).mean()

    return _fit(model, loss, len(e), cfg)


def fit_regressor(emb: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray,
                  cfg: LocatorConfig = LocatorConfig()) -> LatLonRegressor:
    """MLP embedding -> unit position, trained on the great-circle angle to the truth."""
    torch.manual_seed(cfg.seed)
    xyz = latlon_to_xyz(lat_deg, lon_deg)
    centre = xyz.mean(axis=0) / np.linalg.norm(xyz.mean(axis=0))
    model = LatLonRegressor(cfg, emb.shape[1], centre, angular_extent(xyz))
    e, p = torch.from_numpy(np.asarray(emb, np.float32)), torch.from_numpy(xyz.astype(np.float64))

    def loss(idx: torch.Tensor) -> torch.Tensor:  # great-circle angle, in extents; atan2 stays exact near zero
        q = model(e[idx]).double()
        angle = torch.atan2(torch.linalg.cross(q, p[idx]).norm(dim=-1), (q * p[idx]).sum(-1))
        return (angle / model.extent_rad).mean()

    return _fit(model, loss, len(e), cfg)


def save_locator(model: nn.Module, path: Path, meta: dict) -> None:
    """Weights as safetensors, settings (and what `load_locator` needs to rebuild it) as JSON beside them; each file
    written atomically (`storage`: a temp file of the writer's own, fsynced, renamed), so two writers never share
    one."""
    path = Path(path)
    storage.write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    storage.write_json(path.with_suffix(".json"), meta)


def locator_meta(kind: str, cfg: LocatorConfig, in_dim: int, **extra: object) -> dict:
    """The JSON saved beside a locator's weights: its kind, settings, input size and what else rebuilds it."""
    return {"kind": kind, "config": asdict(cfg), "in_dim": in_dim, **extra}


def load_locator(path: Path) -> GpsVerifier | LatLonRegressor:
    """A locator saved by `save_locator`, rebuilt from its JSON and loaded in eval mode (safetensors: no unpickling)."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("kind") not in ("verifier", "regressor"):
        raise ValueError(f"{path}: unknown locator kind {meta.get('kind')!r}")
    cfg = from_dict(LocatorConfig, meta["config"])
    if meta["kind"] == "verifier":
        model = GpsVerifier(cfg, meta["in_dim"], meta["extent_rad"])
    else:
        model = LatLonRegressor(cfg, meta["in_dim"], np.zeros(3), meta["extent_rad"])
    model.load_state_dict(load_file(path))
    return model.eval()
