"""The run folder contract: every artefact of a run is named here, once, and read back from here.

A run folder (`runs/NAME`) is what `geoloc run` and its stages write; a fine-tuning folder, an
experiment folder and a saved predictor live inside it. Every other module and every page asks
these classes for a path or a reader; none of them spells a file name.

    RUN/
      config.json  metrics.jsonl  status.json  job.log       each stage's settings; records; job state
      photos.csv  rejected.csv  ingest.json                  ingest: accepted photos (with a place), rejections and why
      to_locate.csv  located.csv                             photos without a location; the run's answers for them
      embeddings.npy  patches.npy  embed.json  shards/KEY/   embed: (N, D) float32 unit vectors, (N, P, Dp) f16
      embeddings_tta_{name}.npy                              a test-time augmentation's (N, D) unit vectors (mirror,
                                                             crop_*), made on use (an older embeddings_{name}.npy is
                                                             no longer read: the pass is made again)
      split.json  sites.csv  site_of_photo.npy               graph: projection + held-out flags, sites
      graph_{kind}.npy                                       graph: (E, 2) int64 edges over training sites
      regions_{kind}.csv, _summary.csv, .geojson             regions: per photo (+ outside clip), per region, polygons
      prefix_{encoder}_k{k}_{photos}.npy                     fine-tuning's cached frozen-prefix tokens
      finetune_{graph}[-N]/                                  FinetuneRun (a new run never reuses a folder)
      experiment/  table.csv  table.md  finetune_{graph}/    Experiment (held_out_*.csv: per-photo answers)
      experiment_k{K}_seed{S}/  verdicts.csv  fold{i}/       cross-validated Experiment; each fold a Run
      predictor_{descriptor}_{database}_{settings}/          PredictorStore
      held_out_{kind}.csv                                    evaluate: the w/o probe's answer per held-out photo
      compare.csv  compare_predictions.csv                   geoloc compare (with --folds: compare_verdicts.csv,
      compare_folds.csv)
      coverage_loo.csv  coverage.geojson                     geoloc coverage: every photo's leave-location-out
                                                             answer (kept while photos and embeddings are); the map
      *.provenance.json                                      what each artefact was computed from (`runs.provenance`;
                                                             `Run.artefact` says what, every reader checks it)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.errors import UserError
from geoloc_core.base.geo import LocalProjection
from geoloc_core.config import GRAPHS, POLYGON_SETTINGS, FinetuneConfig, PipelineConfig, RegionConfig, server_config
from geoloc_core.ingest.photos import IngestReport, PhotoTable
from geoloc_core.regions.partition import SiteGraph, region_areas_km2
from geoloc_core.runs import provenance
from geoloc_core.runs.provenance import Stale

log = logging.getLogger(__name__)

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def run_in(root: Path, name: str) -> Path:
    """`root/name` for a new run's plain name; refuses names that are empty, hidden, or that leave `root`."""
    if not RUN_NAME.fullmatch(name or "") or ".." in name:
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (no slashes, no '..', not starting "
                         "with '.')")
    path = (Path(root) / name).resolve()
    if path.parent != Path(root).resolve():
        raise ValueError(f"run name {name!r} leaves {root}")
    return path


@dataclass(frozen=True)
class Folder:
    """What every job folder has: its settings, its metrics records, its state and its log."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def holds_work(self) -> bool:
        """Whether a stage of this folder finished and recorded an artefact (its work outlives a later stage's
        failure)."""
        return any(self.root.glob("*provenance.json"))

    @property
    def config(self) -> Path:
        """`config.json`: each stage's settings, one section per stage (`record_config`)."""
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        """`metrics.jsonl`: the figures the folder's stages or epochs appended, one JSON record a line."""
        return self.root / "metrics.jsonl"

    @property
    def status(self) -> Path:
        """`status.json`: the job's state, pid and time (`write_status`)."""
        return self.root / "status.json"

    @property
    def progress(self) -> Path:
        """`progress.json`: where a long phase is (`write_progress`)."""
        return self.root / "progress.json"

    @property
    def log(self) -> Path:
        """`job.log`: the output of the job that works in the folder."""
        return self.root / "job.log"

    def exists(self) -> bool:
        """Whether the folder is there."""
        return self.root.is_dir()

    def read_config(self) -> dict[str, Any]:
        """`config.json` as a dict; empty before any stage recorded its settings."""
        return storage.read_json(self.config) if self.config.exists() else {}

    def record_config(self, section: str, cfg: Any) -> None:
        """Merge one section into config.json, so the file always says how every artefact was made."""
        storage.write_json(self.config, {**self.read_config(), section: storage.to_jsonable(cfg)})

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record to `metrics.jsonl`."""
        storage.append_jsonl(self.metrics, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete record of `metrics.jsonl`, oldest first."""
        return storage.read_jsonl(self.metrics)

    def write_status(self, state: str, **extra: Any) -> None:
        """running / done / failed, the pid and any detail, for a page that polls the job."""
        storage.write_json(self.status, {"state": state, "pid": os.getpid(), "time": time.time(), **extra})

    def read_status(self) -> dict[str, Any] | None:
        """`status.json` as written, or None before the first job; `state` also tells a dead job from a running one."""
        return storage.read_json(self.status) if self.status.exists() else None

    def state(self) -> str | None:
        """running / done / failed / stopped (said running, but its process is gone), queued (waiting in the job queue,
        `jobqueue`), or None before any."""
        status = self.read_status()
        if status is None:
            return None
        if status["state"] == "running" and not storage.pid_alive(int(status["pid"])):
            return "stopped"
        return status["state"]

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """The folder's state around the work in the block: running, then done, failed, or stopped (SIGTERM, Ctrl-C)."""
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:  # signal handlers belong to the main thread; a job started from a thread is stopped another way
            previous = signal.signal(signal.SIGTERM, _raise_stop)
            # a job started from a thread that blocks SIGTERM (a server's) inherits the block: undo it, or Stop never
            # lands
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        self.write_status("running")
        try:
            yield
        except (SystemExit, KeyboardInterrupt):
            self.write_status("stopped")
            raise
        except BaseException as exc:
            self.write_status("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        self.write_status("done")

    def write_progress(self, phase: str, done: int, total: int) -> None:
        """Where a long phase is (caching tokens, an epoch, re-embedding): the page draws it as a bar."""
        storage.write_json(self.progress, {"phase": phase, "done": int(done), "total": int(total), "time": time.time()})

    def read_progress(self) -> dict[str, Any] | None:
        """The last `write_progress` record, or None (none yet, or caught mid-write)."""
        try:
            return storage.read_json(self.progress)
        except (FileNotFoundError, json.JSONDecodeError):
            return None


class RegionFiles:
    """One partition's three files: `{stem}.csv` (region per photo), `{stem}_summary.csv`, `{stem}.geojson`.

    `check` raises `provenance.Stale` where the partition no longer matches what it was cut from: every read calls it
    (the run's regions check their own record, a fine-tuning round's its folder's). Equal, hashed and pickled (so keyed
    by the app's caches) by its files alone: the check is a closure over the run, not data."""

    def __init__(self, stem: Path, check: Callable[[], object] | None = None):
        self.stem, self.check = Path(stem), check

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionFiles) and other.stem == self.stem

    def __hash__(self) -> int:
        return hash(self.stem)

    def __repr__(self) -> str:
        return f"RegionFiles({str(self.stem)!r})"

    def __reduce__(self) -> tuple:
        return RegionFiles, (self.stem,)

    @property
    def csv(self) -> Path:
        """`{stem}.csv`: the region of every photo."""
        return self.stem.with_name(self.stem.name + ".csv")

    @property
    def summary(self) -> Path:
        """`{stem}_summary.csv`: one row per region."""
        return self.stem.with_name(self.stem.name + "_summary.csv")

    @property
    def geojson(self) -> Path:
        """`{stem}.geojson`: the region polygons."""
        return self.stem.with_name(self.stem.name + ".geojson")

    def exists(self) -> bool:
        """Whether the partition was written (its per-photo CSV is there)."""
        return self.csv.exists()

    @property
    def files(self) -> list[Path]:
        """The partition's three files."""
        return [self.csv, self.summary, self.geojson]

    @property
    def record(self) -> Path:
        """Its provenance record (the run's regions; a fine-tuning round's partition is covered by its folder's)."""
        return self.stem.with_name(self.stem.name + ".provenance.json")

    def remove(self) -> None:
        """Delete the partition's files and its provenance record."""
        for path in (*self.files, self.record):
            path.unlink(missing_ok=True)

    def _checked(self) -> None:
        if self.check is not None:
            self.check()

    def write(self, labels: pd.DataFrame, summary: pd.DataFrame, polygons: gpd.GeoDataFrame) -> None:
        """Write the three files: `labels` per photo, `summary` per region, `polygons` as GeoJSON."""
        storage.write_csv(self.csv, labels)
        storage.write_csv(self.summary, summary)
        storage.write_bytes(self.geojson, polygons.to_json().encode())

    def labels(self) -> pd.DataFrame:
        """path, region, test, outside: one row per photo of the run, in photos.csv order.

        `outside`: the photo lies outside the area the polygons were clipped to (False in files written before
        clipping)."""
        self._checked()
        frame = pd.read_csv(self.csv, keep_default_na=False, dtype={"path": str})
        return frame if "outside" in frame else frame.assign(outside=False)

    def geodataframe(self) -> gpd.GeoDataFrame:
        """The polygons with their summary row (region, n_photos, lat_deg, lon_deg, area_km2) in EPSG:4326."""
        return gpd.GeoDataFrame.from_features(self.polygons()["features"], crs="EPSG:4326")

    def polygons(self) -> dict:
        """The polygons as a GeoJSON dict (the partition checked first)."""
        self._checked()
        return json.loads(self.geojson.read_text())

    def read_summary(self) -> pd.DataFrame:
        """One row per region (the partition checked first); `area_km2` computed from the polygons for older files."""
        self._checked()
        summary = pd.read_csv(self.summary)
        if "area_km2" not in summary:  # written before regions recorded their areas
            frame = gpd.GeoDataFrame.from_features(self.polygons()["features"], crs="EPSG:4326")
            areas = pd.DataFrame({"region": frame["region"], "area_km2": region_areas_km2(frame)})
            summary = summary.merge(areas, on="region", how="left")
        return summary


@dataclass(frozen=True)
class FinetuneRun(Folder):
    """A fine-tuning folder: checkpoints, and per round k the regions cut from its features and its embeddings."""

    @property
    def last_checkpoint(self) -> Path:
        """The checkpoint a resume starts from, rewritten after every epoch."""
        return self.root / "checkpoints" / "last.pt"

    def round_checkpoint(self, r: int) -> Path:
        """The checkpoint kept at the end of round r."""
        return self.root / "checkpoints" / f"round{r}.pt"

    def round_checkpoints(self) -> dict[int, Path]:
        """{round: checkpoint} of the rounds this folder finished."""
        found = {}
        for p in (self.root / "checkpoints").glob("round*.pt"):
            if p.stem.removeprefix("round").isdigit():
                found[int(p.stem.removeprefix("round"))] = p
        return dict(sorted(found.items()))

    def regions(self, r: int) -> RegionFiles:
        """The regions cut from round r's features (r = 0: the pretrained ones), which round r + 1 learns; reading them
        checks the folder (`check`)."""
        return RegionFiles(self.root / f"regions_r{r}", self.check)

    @property
    def record(self) -> Path:
        """What the folder is trained from (`runs.provenance`): written before round 0, checked on every resume and
        read."""
        return self.root / "provenance.json"

    def check(self) -> str:
        """The folder's provenance digest once the run's photos, split, embeddings, graph and region settings are still
        those it was trained on; `provenance.Stale` otherwise."""
        return Run(self.run_dir()).check_finetune(self)

    def is_current(self) -> bool:
        """Whether the folder still matches the run (`check` passes); False if it changed or is gone."""
        try:
            self.check()
        except (Stale, FileNotFoundError):  # changed, or gone
            return False
        return True

    def clear(self) -> None:
        """Remove all the folder's work (checkpoints, rounds, records), keeping its job state and log: a stale folder
        started again."""
        keep = {self.status.name, self.log.name}
        for path in self.root.iterdir() if self.root.exists() else []:
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def round_digest(self, r: int) -> str:
        """Round r's backbone as an input: the folder's digest with its checkpoint's and re-embedded photos'
        contents."""
        return provenance.settings([self.check(), provenance.outside_file(self.round_checkpoint(r)),
                                    provenance.outside_file(self.embeddings(r))])

    def region_rounds(self) -> list[int]:
        """The rounds whose regions this folder cut, ascending."""
        return sorted(int(p.stem.removeprefix("regions_r")) for p in self.root.glob("regions_r*.geojson")
                      if p.stem.removeprefix("regions_r").isdigit())

    def embeddings(self, r: int) -> Path:
        """Round r's (N, D) re-embedded unit photo vectors."""
        return self.root / f"embeddings_r{r}.npy"

    def held_out(self, r: int) -> Path:
        """Round r's answer for each held-out photo (photo, region, pred, error_km): the unit of every interval."""
        return self.root / f"held_out_r{r}.csv"

    def run_dir(self) -> Path:
        """The run this folder fine-tunes: the run folder it lies in (`finetune_*/`, `experiment/finetune_*/`), else the
        one recorded (absolute; a relative record from older versions is read against this folder's parents)."""
        for parent in self.root.resolve().parents[:2]:
            if Run(parent).photos.exists():
                return parent
        recorded = Path(self.read_config()["run_dir"])
        if recorded.is_absolute():
            return recorded
        for parent in self.root.resolve().parents:
            if Run(parent).photos.exists():
                return parent
        return recorded.resolve()


@dataclass(frozen=True)
class Experiment(Folder):
    """`geoloc experiment`: one fine-tuning folder per graph and the table."""

    @property
    def table_csv(self) -> Path:
        """The experiment table as CSV."""
        return self.root / "table.csv"

    @property
    def table_md(self) -> Path:
        """The experiment table as Markdown."""
        return self.root / "table.md"

    def finetune(self, graph: str) -> FinetuneRun:
        """The fine-tuning folder over `graph` inside the experiment."""
        return FinetuneRun(self.root / f"finetune_{graph}")

    def held_out(self, row: str) -> Path:
        """A baseline row's answer for each held-out photo (`row`: a slug such as "mesh")."""
        return self.root / f"held_out_{row}.csv"

    @property
    def verdicts(self) -> Path:
        """The paired verdicts of a cross-validated experiment."""
        return self.root / "verdicts.csv"

    @property
    def files(self) -> list[Path]:
        """The table and the files written with it (one provenance record: `Run.record_table`)."""
        return [self.table_csv, self.verdicts, self.table_md]

    def fold(self, i: int) -> Run:
        """Fold i of a cross-validated experiment: a run of its own split over the parent run's photos."""
        return Run(self.root / f"fold{i}")


@dataclass(frozen=True)
class PredictorStore:
    """A saved predictor: index, database, vocabulary, verifier, calibration errors;
    `predictor.json` is written last."""

    root: Path

    @property
    def meta(self) -> Path:
        """`predictor.json`: settings and what else the predictor needs; written last, so its presence means whole."""
        return self.root / "predictor.json"

    @property
    def index(self) -> Path:
        """The faiss index of the database descriptors."""
        return self.root / "index.faiss"

    @property
    def db(self) -> Path:
        """The database photos: row of the run's photos, path, coordinates, group."""
        return self.root / "db.csv"

    @property
    def vocabulary(self) -> Path:
        """The VLAD vocabulary (with the vlad descriptor)."""
        return self.root / "vocabulary.npy"

    @property
    def verifier(self) -> Path:
        """The GPS verifier's weights (its settings beside them as JSON)."""
        return self.root / "verifier.safetensors"

    @property
    def regressor(self) -> Path:
        """The lat/lon regression whose answer is a candidate (source "regression")."""
        return self.root / "regressor.safetensors"

    @property
    def calibration(self) -> Path:
        """The calibration errors (km) the uncertainty radius is read from."""
        return self.root / "calibration_errors.npy"

    @property
    def region_probe(self) -> Path:
        """The hierarchy's region classifier: (D + 1, R) linear weights, its classes in `meta`."""
        return self.root / "region_probe.npy"

    @property
    def familiarity(self) -> Path:
        """The sorted leave-location-out top-1 similarities a photo's familiarity is ranked against."""
        return self.root / "familiar_similarities.npy"

    @property
    def lock(self) -> Path:
        """Locked (flock) shared while a predictor is read, exclusive while one is built and written."""
        return self.root / ".lock"

    def read_meta(self) -> dict[str, Any]:
        """`predictor.json` as a dict; empty while the predictor is not whole."""
        return storage.read_json(self.meta) if self.meta.exists() else {}

    @property
    def files(self) -> list[Path]:
        """Everything a saved predictor is (what its provenance record covers)."""
        return [self.meta, self.index, self.db, self.vocabulary, self.verifier, self.verifier.with_suffix(".json"),
                self.regressor, self.regressor.with_suffix(".json"), self.calibration, self.region_probe,
                self.familiarity]

    @property
    def record(self) -> Path:
        """What the predictor was built from (`runs.provenance`), written after the predictor is whole."""
        return self.root / "provenance.json"


@dataclass(frozen=True)
class PartitionSources:
    """One partition's inputs: the embeddings it was cut from, the round whose cosine head predicts its regions (its
    checkpoint and the embeddings that head reads; None for the run's w/o regions), the held-out answers of every
    classifier graded on it (by name), and the region settings it was cut with."""

    features: Path
    head: Path | None
    head_features: Path | None
    held_out: dict[str, Path]
    regions: RegionConfig


def _existing(paths: dict[str, Path]) -> dict[str, Path]:
    return {name: p for name, p in paths.items() if p.exists()}



@dataclass(frozen=True)
class Run(Folder):
    """A run folder: the stages' artefacts (see the module docstring) and the folders inside it."""

    # ingest
    @property
    def photos(self) -> Path:
        """`photos.csv`: the accepted photos (`PhotoTable.frame`)."""
        return self.root / "photos.csv"

    @property
    def rejected(self) -> Path:
        """`rejected.csv`: the files ingest rejected (path, reason)."""
        return self.root / "rejected.csv"

    @property
    def ingest_meta(self) -> Path:
        """`ingest.json`: the photo root, counts, warnings, places and near-duplicates of the ingest."""
        return self.root / "ingest.json"

    @property
    def to_locate(self) -> Path:
        """The photos without a location (path, reason): the run locates them with its own database."""
        return self.root / "to_locate.csv"

    @property
    def located(self) -> Path:
        """The run's answers for its photos to locate (`locate.predict.predictions_frame` rows)."""
        return self.root / "located.csv"

    # embed
    @property
    def embeddings(self) -> Path:
        """(N, D) float32 unit embeddings of the photos, in photos.csv order."""
        return self.root / "embeddings.npy"

    def augmented_embeddings(self, name: str) -> Path:
        """The photos embedded with one augmentation (`embed.AUGMENTATIONS`: the mirror image, a corner crop), for
        test-time augmentation (`stages.tta_embeddings`); made on demand."""
        return self.root / f"embeddings_tta_{name}.npy"

    @property
    def patches(self) -> Path:
        """(N, P, Dp) float16 patch tokens (with `embed --patches`)."""
        return self.root / "patches.npy"

    @property
    def embed_meta(self) -> Path:
        """`embed.json`: the encoder key, embedding size and failures of the embed pass."""
        return self.root / "embed.json"

    def shards(self, encoder_key: str) -> Path:
        """The Parquet shards of a distributed (Ray) embed pass with this encoder."""
        return self.root / "shards" / encoder_key

    # graph
    @property
    def split(self) -> Path:
        """`split.json`: the local projection and the held-out flags."""
        return self.root / "split.json"

    @property
    def sites(self) -> Path:
        """`sites.csv`: the distinct photo locations the graphs are built over."""
        return self.root / "sites.csv"

    @property
    def site_of_photo(self) -> Path:
        """(N,) the site of each photo."""
        return self.root / "site_of_photo.npy"

    def graph(self, kind: str) -> Path:
        """(E, 2) int64 edges of graph `kind` over the training sites."""
        return self.root / f"graph_{kind}.npy"

    def graphs(self) -> list[str]:
        """The proximity graphs this run has built, in the usual order."""
        return [k for k in GRAPHS if self.graph(k).exists()]

    def labelled_graph(self) -> str | None:
        """The graph whose regions label predictions by default: DT where the run has its regions, else the first
        graph that has them; None before any regions."""
        return next((k for k in GRAPHS if self.regions(k).csv.exists()), None)

    # regions
    def regions(self, kind: str) -> RegionFiles:
        """The w/o regions: Louvain on the pretrained features (every read checks their provenance)."""
        return RegionFiles(self.root / f"regions_{kind}", lambda: self.check(f"regions:{kind}"))

    # fine-tuning
    def prefix_tokens(self, encoder_key: str, unfrozen_blocks: int, photos_digest: str) -> Path:
        """The photos' frozen-prefix tokens; a fold shares those of the run it was cut from (the same photos)."""
        return self.photos_home / f"prefix_{encoder_key}_k{unfrozen_blocks}_{photos_digest}.npy"

    @property
    def photos_home(self) -> Path:
        """The folder whose photos these are: this run's, or, for a fold of a cross-validated
        experiment, its parent's."""
        return Path(self.read_config().get("fold", {}).get("of", self.root))

    def finetune_dirs(self, graph: str = "*") -> list[FinetuneRun]:
        """The fine-tuning folders for `graph` (a glob): `geoloc finetune`'s, then `geoloc experiment`'s."""
        found = [*sorted(self.root.glob(f"finetune_{graph}")), *sorted(self.root.glob(f"finetune_{graph}-*")),
                 *sorted(self.experiment.root.glob(f"finetune_{graph}"))]
        return [FinetuneRun(p) for p in dict.fromkeys(found) if p.is_dir()]

    def new_finetune(self, graph: str) -> FinetuneRun:
        """A folder for a new fine-tuning run over `graph`: `finetune_{graph}`, or `-2`, `-3`,
        ... once that is taken."""
        candidates = (self.root / (f"finetune_{graph}" + (f"-{n}" if n > 1 else "")) for n in range(1, 10_000))
        return FinetuneRun(next(p for p in candidates if not p.exists()))

    def current_finetune_dirs(self, graph: str = "*") -> list[FinetuneRun]:
        """The fine-tuning folders for `graph` trained on the run as it is now (its photos, split, embeddings, graph and
        region settings): the only ones whose backbones and heads may be used (`FinetuneRun.check`)."""
        return [ft for ft in self.finetune_dirs(graph) if ft.is_current()]

    def latest_round(self, graph: str) -> tuple[FinetuneRun, int] | None:
        """The highest finished round for `graph` of a current folder (the newer where two reached it): (its folder, the
        round). A folder trained on another split or other photos is never offered."""
        rounds = [(r, p.stat().st_mtime, ft) for ft in self.current_finetune_dirs(graph)
                  for r, p in ft.round_checkpoints().items()]
        if not rounds:
            return None
        r, _, ft = max(rounds, key=lambda t: t[:2])
        return ft, r

    def finished_rounds(self, graph: str) -> list[int]:
        """The rounds r >= 1 some fine-tuning folder for `graph` finished (checkpoint and re-embedded photos): the
        backbones a predictor can retrieve with (`PredictorConfig.ft_round`)."""
        return sorted({r for ft in self.current_finetune_dirs(graph) for r in ft.round_checkpoints()
                       if ft.embeddings(r).exists()})

    def finetune_round(self, graph: str, r: int) -> FinetuneRun:
        """The newest current fine-tuning folder for `graph` that finished round r (its checkpoint and re-embedded
        photos); where only stale ones did, the newest one's `provenance.Stale` says what changed."""
        finished = [ft for ft in self.finetune_dirs(graph) if r in ft.round_checkpoints() and ft.embeddings(r).exists()]
        done = [ft for ft in finished if ft.is_current()]
        if finished and not done:
            max(finished, key=lambda ft: ft.round_checkpoint(r).stat().st_mtime).check()
        if not done:
            raise FileNotFoundError(f"{self.root}: no fine-tuning over {graph.upper()} finished round {r} "
                                    f"(geoloc finetune --graph {graph})")
        return max(done, key=lambda ft: ft.round_checkpoint(r).stat().st_mtime)

    def iterations(self, graph: str) -> dict[str, RegionFiles]:
        """{"w/o": regions, "after FT1": ..., ...} for one graph: the run's own regions,
        then every fine-tuning round's."""
        current = self.regions(graph).exists() and self.is_current(f"regions:{graph}")
        found = {"w/o": self.regions(graph)} if current else {}
        for ft in self.current_finetune_dirs(graph):
            tag = ("" if ft.root.parent == self.root and ft.root.name == f"finetune_{graph}"
                   else f" ({ft.root.relative_to(self.root)})")
            for k in ft.region_rounds():
                found[(f"after FT{k}" if k else "w/o (fine-tuning run)") + tag] = ft.regions(k)
        return found

    def held_out(self, kind: str) -> Path:
        """The w/o linear probe's answer for each held-out photo of `kind`'s regions (photo, region, pred, error_km)."""
        return self.root / f"held_out_{kind}.csv"

    def partition_sources(self, regions: RegionFiles) -> PartitionSources:
        """What one partition (an entry of `iterations`) was cut from and which classifiers were graded on it."""
        parent, name = regions.stem.parent, regions.stem.name
        if parent == self.root:
            kind = name.removeprefix("regions_")
            current = self.held_out(kind).exists() and self.is_current(f"held_out:{kind}")  # stale answers: not shown
            graded = {"w/o linear probe": self.held_out(kind)} if current else {}
            return PartitionSources(self.embeddings, None, None, graded, self.pipeline_config().regions)
        ft, k = FinetuneRun(parent), int(name.removeprefix("regions_r"))
        head, head_emb = ft.round_checkpoint(k + 1), ft.embeddings(k + 1)
        graded = ({"w/o linear probe": ft.held_out(0)} if k == 0
                  else {}) | {f"FT{k + 1} classifier": ft.held_out(k + 1)}
        return PartitionSources(ft.embeddings(k), head if head.exists() else None, head_emb if head.exists() else None,
                                _existing(graded), RegionConfig(**ft.read_config().get("regions", {})))

    @property
    def experiment(self) -> Experiment:
        """`geoloc experiment`'s folder (one split)."""
        return Experiment(self.root / "experiment")

    def cross_validation(self, folds: int, seed: int, block_km: float = 0.0) -> Experiment:
        """`geoloc experiment --folds K`: the table over all folds, and one run per fold inside (`Experiment.fold`);
        folds of spatial blocks (`--block-km B`) have their own folder."""
        blocks = f"_block{block_km:g}km" if block_km else ""
        return Experiment(self.root / f"experiment_k{folds}_seed{seed}{blocks}")

    def cross_validations(self) -> list[Experiment]:
        """The run's cross-validated experiments, oldest first."""
        return [Experiment(p) for p in sorted(self.root.glob("experiment_k*_seed*"), key=lambda p: p.stat().st_mtime)
                if p.is_dir()]

    # prediction and comparison
    def predictor(self, descriptor: str, database: str, settings: str) -> PredictorStore:
        """A saved predictor: by descriptor, database ("all", or "train" without the held-out locations) and settings
        digest."""
        return PredictorStore(self.root / f"predictor_{descriptor}_{database}_{settings}")

    def predictors(self) -> list[PredictorStore]:
        """Every saved predictor of the run, oldest first."""
        return [PredictorStore(p) for p in sorted(self.root.glob("predictor_*"), key=lambda p: p.stat().st_mtime)
                if p.is_dir()]

    @property
    def compare_table(self) -> Path:
        """`geoloc compare`'s table."""
        return self.root / "compare.csv"

    @property
    def compare_predictions(self) -> Path:
        """`geoloc compare`'s verified prediction per held-out photo."""
        return self.root / "compare_predictions.csv"

    @property
    def compare_verdicts(self) -> Path:
        """`geoloc compare --folds K`'s paired verdicts."""
        return self.root / "compare_verdicts.csv"

    @property
    def compare_folds(self) -> Path:
        """`geoloc compare --folds K`'s per-fold figures."""
        return self.root / "compare_folds.csv"

    @property
    def compare_files(self) -> list[Path]:
        """`geoloc compare`'s table and the files written with it (one provenance record: `record_table`)."""
        return [self.compare_table, self.compare_predictions, self.compare_verdicts, self.compare_folds]

    @property
    def loo_answers(self) -> Path:
        """`geoloc coverage`'s leave-location-out answer per photo (photo, lat_deg, lon_deg, error_km)."""
        return self.root / "coverage_loo.csv"

    @property
    def coverage_map(self) -> Path:
        """`geoloc coverage`'s hexagons as GeoJSON, where no other file is asked for."""
        return self.root / "coverage.geojson"

    @property
    def levers_files(self) -> list[Path]:
        """`geoloc levers`' table and the files written with it."""
        return [self.levers_table, self.levers_verdicts, self.levers_errors]

    @property
    def levers_table(self) -> Path:
        """`geoloc levers`' table: a row per variant."""
        return self.root / "levers.csv"

    @property
    def levers_verdicts(self) -> Path:
        """`geoloc levers`' paired verdicts against the default."""
        return self.root / "levers_verdicts.csv"

    @property
    def levers_errors(self) -> Path:
        """`geoloc levers`' per-photo errors, the answers behind the table."""
        return self.root / "levers_errors.csv"

    def made_by(self, path: Path) -> str | None:
        """The `geoloc` stage that writes `path` of this run (None for a file no stage writes)."""
        made = {p: "ingest" for p in (self.photos, self.rejected, self.ingest_meta)}
        made |= {p: "embed" for p in (self.embeddings, self.embed_meta)}
        made |= {p: "graph" for p in (self.split, self.sites, self.site_of_photo, *map(self.graph, GRAPHS))}
        made |= {p: "regions" for k in GRAPHS for p in (lambda r: (r.csv, r.summary, r.geojson))(self.regions(k))}
        made |= {self.held_out(k): "evaluate" for k in GRAPHS}
        return made.get(Path(path))

    def missing(self, path: Path) -> UserError | None:
        """What to run when `path` of this run is read before its stage wrote it (None: not a stage's file)."""
        build_all = f"`geoloc run FOLDER --run {self.root}` (FOLDER: your geotagged photos)"
        if not self.exists():
            return UserError(f"there is no run at {self.root}",
                             f"Build one with {build_all}, or give --run a run's folder")
        stage = self.made_by(path)
        if stage is None:
            return None
        data = " FOLDER" if stage == "ingest" else ""
        return UserError(f"{self.root} has no {Path(path).name} yet (`geoloc {stage}` writes it)",
                         f"Run `geoloc {stage}{data} --run {self.root}`, or {build_all} for every stage")

    # provenance: what each of the run's artefacts is computed from (`runs.provenance` keeps the records)
    def artefact(self, key: str) -> tuple[str, Path, list[Path], dict[str, Any], str]:
        """The artefact `key` ("photos", "embeddings", "augmentation:mirror", "split", "graph:dt", "regions:dt",
        "held_out:dt"): its name in messages, its record, its files, its inputs today (label -> digest, computed only
        when compared) and what rebuilds it."""
        kind, _, arg = key.partition(":")
        up = lambda k: lambda: self.check(k)  # noqa: E731  an upstream artefact, itself checked
        section = lambda name, drop=(): lambda: provenance.settings(  # noqa: E731
            {k: v for k, v in self.read_config().get(name, {}).items() if k not in drop})
        if kind == "photos":
            return ("photos.csv", self._record("photos"), [self.photos, self.rejected, self.ingest_meta],
                    {"settings: ingest": section("ingest", ("workers",))}, "ingest the photos again (`geoloc ingest`)")
        if kind == "embeddings":
            inputs = {"photos.csv": up("photos"),
                      "settings: embed": section("embed", ("batch_size", "device", "workers", "ray"))}
            checkpoint = self.read_config().get("embed", {}).get("checkpoint")
            if checkpoint:
                inputs["encoder checkpoint"] = lambda: provenance.outside_file(checkpoint)
            return ("embeddings.npy", self._record("embeddings"), [self.embeddings, self.patches, self.embed_meta],
                    inputs, "embed the photos again (`geoloc embed`)")
        if kind == "augmentation":
            return (self.augmented_embeddings(arg).name, self._record(f"embeddings_tta_{arg}"),
                    [self.augmented_embeddings(arg)], {"embeddings.npy": up("embeddings"), "augmentation": arg},
                    "it is made again on its next use")
        if kind == "split":
            return ("split.json", self._record("split"), [self.split, self.sites, self.site_of_photo],
                    {"photos.csv": up("photos"), "settings: graph": section("graph", ("kinds",))}, "run `geoloc graph`")
        if kind == "graph":
            return (self.graph(arg).name, self._record(f"graph_{arg}"), [self.graph(arg)],
                    {"split.json": up("split"), "graph": arg}, "run `geoloc graph`")
        if kind == "regions":
            files = self.regions(arg)
            return (files.csv.name, files.record, files.files,
                    {"photos.csv": up("photos"), "embeddings.npy": up("embeddings"), "split.json": up("split"),
                     self.graph(arg).name: up(f"graph:{arg}"), "settings: regions": section("regions")},
                    "run `geoloc regions`")
        if kind == "held_out":
            return (self.held_out(arg).name, self._record(f"held_out_{arg}"), [self.held_out(arg)],
                    {self.regions(arg).csv.name: up(f"regions:{arg}"), "embeddings.npy": up("embeddings"),
                     "split.json": up("split"), "settings: eval": section("eval")}, "run `geoloc evaluate`")
        raise KeyError(key)

    def _record(self, stem: str) -> Path:
        return self.root / f"{stem}.provenance.json"

    def _linked(self, key: str) -> Run | None:
        """The run whose artefact this is, where it is a link to another run's (a fold's photos and embeddings)."""
        main = {"photos": self.photos, "embeddings": self.embeddings}.get(key)
        return Run(main.resolve().parent) if main is not None and main.is_symlink() else None

    def record(self, key: str) -> str:
        """Record the artefact `key` as computed from today's inputs, once it is whole (its writer calls this)."""
        name, record, files, inputs, _ = self.artefact(key)
        return provenance.record(record, files, inputs)

    def check(self, key: str) -> str:
        """The artefact `key`'s provenance digest, once it is still what today's inputs make; `provenance.Stale`
        (naming what changed and what to run) otherwise."""
        if (home := self._linked(key)) is not None:
            return home.check(key)
        name, record, files, inputs, hint = self.artefact(key)
        if not files[0].exists() and not record.exists():  # never made: `missing` names the stage that writes it
            raise FileNotFoundError(errno.ENOENT, f"{name} was not made yet", str(files[0]))
        if (self.photos.exists() and not any(self.root.glob("*.provenance.json"))
                and server_config().mode != "viewer"):  # a viewer's read writes nothing: it reads all as unrecorded
            self._adopt_legacy()  # no record at all: written before records were kept (a re-ingest keeps the others)
        return provenance.check(name, record, files, inputs, hint)

    def _adopt_legacy(self) -> None:
        """A run written before provenance was recorded: record, as found, each artefact that the evidence it carries
        shows to be of these photos and this split (row counts, the regions' paths and held-out flags, the order of
        writes that the stages kept); the rest stays unrecorded, so it is rebuilt or refused like any stale artefact."""
        try:
            n, adopted = len(pd.read_csv(self.photos, usecols=["path"])), ["photos"]
            self.record("photos")
            if self.embeddings.exists() and storage.read_npy(self.embeddings, mmap=True).shape[0] == n:
                self.record("embeddings")
                adopted.append("embeddings")
            if self.split.exists() and len(storage.read_json(self.split)["is_test"]) == n:
                self.record("split")
                adopted.append("split")
                is_test = np.asarray(storage.read_json(self.split)["is_test"], bool)
                paths = pd.read_csv(self.photos, usecols=["path"], dtype=str, keep_default_na=False)["path"].to_numpy()
                adopted += [self._adopt_kind(kind, paths, is_test) for kind in self.graphs()]
                for ft in self.finetune_dirs():
                    if ft.round_checkpoints() and _same_photos(ft.regions(0).csv, paths, is_test):
                        provenance.record(ft.record, [], self.finetune_inputs(ft.read_config().get("finetune", {})))
                        adopted.append(str(ft.root.relative_to(self.root)))
            log.warning("%s was written before provenance was recorded: recorded as found %s; anything else is rebuilt "
                        "or refused as stale", self.root, ", ".join(a for a in adopted if a))
        except (OSError, KeyError, ValueError, Stale) as why:  # read-only, or not a whole run: all reads as stale
            log.warning("%s: no provenance recorded for its older artefacts (%s)", self.root, why)

    def _adopt_kind(self, kind: str, paths: np.ndarray, is_test: np.ndarray) -> str:
        train_sites = np.flatnonzero(pd.read_csv(self.sites, usecols=["train"])["train"].to_numpy(bool))
        if not np.isin(storage.read_npy(self.graph(kind)), train_sites).all():  # over another split's training sites
            return ""
        self.record(f"graph:{kind}")
        if not _same_photos(self.regions(kind).csv, paths, is_test):
            return f"graph_{kind}"
        self.record(f"regions:{kind}")
        if self.held_out(kind).exists() and np.array_equal(
                pd.read_csv(self.held_out(kind), usecols=["photo"])["photo"].to_numpy(), np.flatnonzero(is_test)):
            self.record(f"held_out:{kind}")
        return f"graph_{kind}, regions_{kind}"

    def is_current(self, key: str) -> bool:
        """Whether artefact `key` still matches its inputs (`check` passes); False if it changed or is gone."""
        try:
            self.check(key)
        except (Stale, FileNotFoundError):  # changed, or gone
            return False
        return True

    def base_inputs(self) -> dict[str, Any]:
        """The inputs most tables are computed from (photos, embeddings, split), for `provenance.record` / `check`."""
        return {"photos.csv": lambda: self.check("photos"), "embeddings.npy": lambda: self.check("embeddings"),
                "split.json": lambda: self.check("split")}

    def finetune_inputs(self, finetune: dict[str, Any]) -> dict[str, Any]:
        """What a fine-tuning folder with these settings is trained from: the run's photos, embeddings, split, the
        graph it learns and the region settings its rounds are cut with."""
        graph = finetune.get("graph", FinetuneConfig.graph)
        return {**self.base_inputs(), self.graph(graph).name: lambda: self.check(f"graph:{graph}"),
                "settings: regions": lambda: provenance.settings(self.read_config().get("regions", {})),
                "settings: fine-tuning": provenance.settings({k: v for k, v in finetune.items() if k != "device"})}

    def record_table(self, files: list[Path], upstream: list[str], settings: Any) -> str:
        """Record a table (`geoloc compare`, `levers`, `experiment` ...: `files`, the first naming it) computed from the
        run's artefacts `upstream` (keys of `artefact`, or "finetune:FOLDER" relative to the run) with `settings` (the
        command's config objects); call it once the table is written."""
        inputs = {key: self._upstream(key) for key in upstream} | {"settings": provenance.settings(settings)}
        return provenance.record(table_record(files[0]), files, inputs)

    def check_table(self, files: list[Path]) -> str:
        """A table read against the run as it is now: `provenance.Stale` where one of the artefacts it was computed from
        changed (or it has no record), naming which; its settings are its own."""
        saved = provenance.read(table_record(files[0])) or {"inputs": {}}
        inputs = {key: _or_stale(self._upstream(key)) for key in saved["inputs"] if key != "settings"}
        inputs["settings"] = saved["inputs"].get("settings", "")
        return provenance.check(files[0].name, table_record(files[0]), files, inputs,
                                "run the command that wrote it again")

    def stale_table(self, files: list[Path]) -> str | None:
        """Why the table `files` may not be shown (what changed since it was computed, or that it has no record), or
        None when it may: every page and document that shows a table asks this first."""
        try:
            self.check_table(files)
        except (Stale, FileNotFoundError) as why:
            return str(why)
        return None

    def _upstream(self, key: str) -> Callable[[], str]:
        """The digest function of an upstream `key`: an artefact, "finetune:FOLDER", or "config:regions" (the region
        settings the labels depend on, for tables whose folds cut their own regions)."""
        kind, _, arg = key.partition(":")
        if kind == "finetune":
            return lambda: FinetuneRun(self.root / arg).check()
        if key == "config:regions":  # as the folds cut with them: defaults filled in, polygon-only settings left out
            return lambda: provenance.settings({k: v for k, v in dataclasses.asdict(self.pipeline_config().regions)
                                                .items() if k not in POLYGON_SETTINGS})
        return lambda: self.check(key)

    def check_finetune(self, ft: FinetuneRun) -> str:
        """A fine-tuning folder of this run checked against the run as it is today (`FinetuneRun.check`)."""
        return provenance.check(str(ft.root.relative_to(self.root) if ft.root.is_relative_to(self.root) else ft.root),
                                ft.record, [], self.finetune_inputs(ft.read_config().get("finetune", {})),
                                "start a new fine-tuning run (`geoloc finetune`), or remove the folder")

    # readers
    def pipeline_config(self) -> PipelineConfig:
        """The run's recorded stage settings as a `PipelineConfig` (sections not recorded take defaults)."""
        sections = {f.name for f in dataclasses.fields(PipelineConfig)}
        return PipelineConfig.from_dict({k: v for k, v in self.read_config().items() if k in sections})

    def region_clip(self) -> str:
        """What the run's region polygons were clipped to, as recorded: a boundary file, "land", "country" or "hull"
        (also for regions cut before polygons were clipped)."""
        recorded = self.read_config().get("regions", {})
        return recorded.get("boundary") or recorded.get("clip", "hull")

    def write_photos(self, table: PhotoTable, report: IngestReport) -> None:
        """The accepted photos and the rejected ones; the ingest stage records them (`record("photos")`) with its
        settings."""
        self._record("photos").unlink(missing_ok=True)  # until recorded, no stage may take these for the old photos
        storage.write_csv(self.rejected, pd.DataFrame([vars(r) for r in report.rejected], columns=["path", "reason"]))
        storage.write_csv(self.to_locate, pd.DataFrame([vars(r) for r in report.to_locate], columns=["path", "reason"]))
        storage.write_csv(self.photos, table.frame)
        self.located.unlink(missing_ok=True)  # answers for the photos of an earlier ingest
        storage.write_json(self.ingest_meta, {"root": str(table.root), "n_candidates": report.n_candidates,
                                              "n_accepted": report.n_accepted, "n_rejected": len(report.rejected),
                                              "n_to_locate": len(report.to_locate), "warnings": report.warnings,
                                              "places": dataclasses.asdict(report.places) if report.places else None,
                                              "near_duplicates": [vars(d) for d in report.near_duplicates]})

    def photo_table(self) -> PhotoTable:
        """The accepted photos, checked against their provenance record."""
        if not self.ingest_meta.exists():
            raise self.missing(self.ingest_meta)
        self.check("photos")
        meta = storage.read_json(self.ingest_meta)
        text = {"path": str, "sha1": str, "group": str, "phash": str, "near_duplicate_of": str}
        frame = pd.read_csv(self.photos, dtype=text, keep_default_na=False)
        return PhotoTable(root=Path(meta["root"]), frame=frame)

    def read_ingest_meta(self) -> dict[str, Any]:
        """`ingest.json` as a dict."""
        return storage.read_json(self.ingest_meta)

    def read_rejected(self) -> pd.DataFrame:
        """rejected.csv: path, reason, every cell text."""
        return pd.read_csv(self.rejected, dtype=str, keep_default_na=False)

    def read_to_locate(self) -> pd.DataFrame:
        """path, reason: the photos to locate (none for a run ingested before they were kept)."""
        if not self.to_locate.exists():
            return pd.DataFrame(columns=["path", "reason"])
        return pd.read_csv(self.to_locate, dtype=str, keep_default_na=False)

    def read_split(self) -> tuple[LocalProjection, np.ndarray]:
        """The local metric projection and the (N,) held-out flags."""
        self.check("split")
        meta = storage.read_json(self.split)
        return LocalProjection(**meta["projection"]), np.asarray(meta["is_test"], bool)

    def write_split(self, projection: LocalProjection, is_test: np.ndarray) -> None:
        """Write the local projection and the (N,) held-out flags (`read_split` reads them back)."""
        storage.write_json(self.split,
                           {"projection": dataclasses.asdict(projection), "is_test": np.asarray(is_test).tolist()})

    def read_embeddings(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The unit photo embeddings, and the patch tokens (memory-mapped) if the run kept them, else None."""
        self.check("embeddings")
        patches = storage.read_npy(self.patches, mmap=True) if self.patches.exists() else None
        return storage.read_npy(self.embeddings), patches

    def read_sites(self) -> pd.DataFrame:
        """site, lat_deg, lon_deg, x_m, y_m, train: the distinct photo locations."""
        return pd.read_csv(self.sites)

    def site_graph(self, kind: str) -> SiteGraph:
        """The graph stage's artefacts for one graph kind."""
        if not self.graph(kind).exists():
            raise UserError(f"{self.root} has no {kind.upper()} graph (built: {', '.join(self.graphs()) or 'none'})",
                            f"Run `geoloc graph --run {self.root} --graphs {kind}` (or `--graphs` what the run has)")
        self.check(f"graph:{kind}")
        sites = self.read_sites()
        return SiteGraph(site_of_photo=storage.read_npy(self.site_of_photo), site_xy_m=sites[["x_m", "y_m"]].to_numpy(),
                         train_sites=np.flatnonzero(sites["train"].to_numpy()),
                         edges=storage.read_npy(self.graph(kind)), is_test=self.read_split()[1])

    def graph_edges_latlon(self, kind: str) -> pd.DataFrame:
        """The graph's edges as coordinate pairs (lat0, lon0, lat1, lon1), for drawing."""
        self.check(f"graph:{kind}")
        sites, e = self.read_sites(), storage.read_npy(self.graph(kind))
        lat, lon = sites["lat_deg"].to_numpy(), sites["lon_deg"].to_numpy()
        return pd.DataFrame({"lat0": lat[e[:, 0]], "lon0": lon[e[:, 0]], "lat1": lat[e[:, 1]], "lon1": lon[e[:, 1]]})



def _or_stale(digest: Callable[[], str]) -> Callable[[], str]:
    """An upstream digest that reads as changed where the upstream is itself stale or gone (so the table's message
    names its own input, not the upstream's)."""
    def read() -> str:
        try:
            return digest()
        except (Stale, FileNotFoundError) as why:
            return f"stale: {why}"
    return read


def _same_photos(regions_csv: Path, paths: np.ndarray, is_test: np.ndarray) -> bool:
    """Whether a partition's file lists these photos with these held-out flags (the evidence an older one carries)."""
    if not regions_csv.exists():
        return False
    frame = pd.read_csv(regions_csv, usecols=["path", "test"], dtype={"path": str}, keep_default_na=False)
    return np.array_equal(frame["path"].to_numpy(), paths) and np.array_equal(frame["test"].to_numpy(bool), is_test)


def table_record(table: Path) -> Path:
    """The provenance record of a table the tools write (`compare.csv` -> `compare.provenance.json`)."""
    return table.with_name(table.stem + ".provenance.json")


def _raise_stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


def fingerprint(paths: list[Path]) -> str:
    """A cheap version stamp of files (path, size, mtime; missing ones count too): keys for caches held in memory."""
    stamps = []
    for p in paths:
        try:
            st = Path(p).stat()
            stamps.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            stamps.append(f"{p}:-")
    return ";".join(stamps)
