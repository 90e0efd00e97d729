"""Every setting of geoloc, once: one frozen dataclass per stage, with its default, help and allowed values.

The CLI's flags are generated from these (`cli.py`), the pages build the same objects, and every
saved artefact records the config that made it. A field's metadata holds its help text (`help`),
its allowed values (`choices`) and, where two stages of one command share a field name, its flag.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the checkout: models/, .cache/, .streamlit/ live here
DEFAULT_DATA = PROJECT_DIR.parent / "shared" / "data" / "croatia-streetview"
GRAPHS = ("dt", "gg", "rng")
DESCRIPTORS = ("cls", "gem", "vlad")
# where a predictor's candidate coordinates come from
SOURCES = ("top1", "clusters", "gallery", "regions", "regression")
CLIPS = ("land", "country", "hull")  # where region polygons may lie (a boundary file, when given, replaces both)
TTAS = ("none", "flip", "crops")  # test-time augmentations of a photo (embed.TTA_AUGMENTATIONS)
# `geoloc levers`' higher-resolution row: DINOv2's 23 x 23 patches of 14 px, about croatia-streetview's 320 px
LARGER_INPUT = 322
GIS_FORMATS = ("gpkg", "kml", "shp", "geojson")  # GeoPackage, KML (Google Earth), zipped Shapefile, GeoJSON
RETRIEVALS = ("image", "geo", "both")  # the space a predictor retrieves in: descriptor, verifier's image codes, both
# how a batch of photos is grouped into places located together (together.py)
TOGETHER = ("none", "all", "folder", "time")


def setting(default: Any, help: str, choices: tuple | None = None, flag: str | None = None, **extra: Any) -> Any:
    """A config field: its default and what the CLI and the pages say about it."""
    meta = {"help": help, "choices": choices, "flag": flag, **extra}
    if isinstance(default, (list, dict, set)):
        raise TypeError("configs are frozen: use tuples")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class IngestConfig:
    """`geoloc ingest`: where the photos and their locations come from, and what makes two photos one place."""
    data: str = setting(str(DEFAULT_DATA), "photo folder (its manifest.csv / .xlsx, else EXIF GPS) or a manifest (CSV, "
                                           "TSV, XLSX)",
                        positional=True)
    manifest: str | None = setting(None, "manifest (CSV, TSV, XLSX), looked up as given, then beside DATA; its rows' "
                                         "paths are relative to the manifest's own folder unless absolute")
    workers: int = setting(8, "threads that read, hash and check the files")
    gpx: str | None = setting(None, "GPX track (or a folder of .gpx files): photos without EXIF GPS are placed on it "
                                    "by their EXIF time (and manifest rows whose lat and lon are empty); photos with "
                                    "EXIF GPS keep theirs")
    time_offset: str | None = setting(None, "the camera clock's UTC offset for --gpx, e.g. +01:00 (write "
                                            "--time-offset=-05:00); a photo that records its own offset "
                                            "(OffsetTimeOriginal) uses that; unset: camera times are UTC")
    gpx_max_gap: float = setting(300.0, "seconds: a photo taken between two track points further apart in time is not "
                                        "placed")
    place_radius_m: float = setting(25.0, "photos whose GPS fixes lie this close (metres) are one place, the "
                                    "unit every split, fold and bootstrap keeps on one side (a phone's fix is off by "
                                    "5-10 m outdoors, so two fixes of one spot differ by less than 25 m about 95 % of "
                                    "the time); 0: exact coordinates only")
    place_max_m: float = setting(100.0, "metres: a place chained wider than this (photos every 20 m along a street) "
                                 "is cut into places no wider (complete linkage), so one chain cannot swallow a campus "
                                 "or a town; a cut can part a burst, the narrower the more often "
                                 "(docs/results/places.md)")
    near_duplicate_bits: int = setting(4, "two photos whose 64-bit perceptual hashes differ in at most this many "
                                       "bits are the same picture (re-saved, resized, re-compressed): reported, and "
                                       "always in one place; -1: off")
    drop_near_duplicates: bool = setting(False, "leave out (as rejected) each photo that repeats an earlier one")


@dataclass(frozen=True)
class EmbedConfig:
    """`geoloc embed`: the image encoder, its weights and input size, and how the photos are fed to it."""
    model: str = setting("dinov2-vits14", "registered encoder or open_clip model name")
    checkpoint: str | None = setting(None, "local weights file; default: the installed weights of the encoder")
    pretrained: str | None = setting(None, "open_clip pretrained tag, only if already cached locally")
    image_size: int | None = setting(None, "input side in px for registered encoders (position grid resized); default: "
                                           "native")
    batch_size: int = setting(16, "images per forward pass (16 is fastest per image on 2 CPU cores)")
    device: str = setting("auto", '"auto" = CUDA when present, else CPU')
    patches: bool = setting(False, "also store patch tokens (float16) for GeM / VLAD")
    workers: int = setting(4, "decoding threads, one batch ahead of the model", flag="--embed-workers")
    ray: str | None = setting(None, 'embed on Ray: a cluster address ("auto", "ray://head:10001"), or none to start '
                                    'Ray here',
                              const="local")


@dataclass(frozen=True)
class GraphConfig:
    """`geoloc graph`: the grouped train/test split by location and the proximity graphs over the training sites."""
    kinds: tuple[str, ...] = setting(GRAPHS, "proximity graphs, comma-separated", choices=GRAPHS, flag="--graphs")
    test_frac: float = setting(0.2, "share of locations held out; graphs and regions see only the rest")
    split_seed: int = setting(0, "seed of the grouped train/test split")


@dataclass(frozen=True)
class RegionConfig:
    """`geoloc regions`: the Louvain cut of each graph, and where the region polygons may lie."""
    resolution: float = setting(1.0, "Louvain resolution: higher gives more, smaller regions")
    seed: int = setting(0, "Louvain's random node order")
    negative: str = setting("clip", 'negative cosine -> edge weight: "clip" (to 0) or "shift" ((1 + cos) / 2)',
                            choices=("clip", "shift"))
    clip: str = setting("land", 'where region polygons may lie: "land" (the sites\' hull on land: Natural Earth '
                                '1:110m, offline and coarse, a few km off at the coast), "country" (on the countries '
                                'holding 5 % or more of the photos) or "hull" (the sites\' hull, sea and neighbours '
                                'included)', choices=CLIPS)
    boundary: str | None = setting(None, "a boundary file (GeoPackage, GeoJSON, zipped Shapefile, KML): the regions "
                                         "tile it instead of the hull, and photos outside it are reported")
    site_buffer_km: float = setting(5.0, 'with clip "land" or "country": a disc of this radius around each site the '
                                         'coarse outline leaves out keeps a polygon around it')


# Region settings that only draw the polygons: the labels (and so every accuracy) do not depend on them.
POLYGON_SETTINGS = ("clip", "boundary", "site_buffer_km")


@dataclass(frozen=True)
class EvalConfig:
    """`geoloc evaluate`: the w/o linear probe's cross-validation."""
    seed: int | None = setting(None, "shuffles the locations into the 3 folds that choose the w/o linear probe's "
                               "strength C (unset: sklearn's GroupKFold, unshuffled)", flag="--eval-seed")


@dataclass(frozen=True)
class FinetuneConfig:
    """`geoloc finetune`: the graph whose regions are the classes, the rounds, and the training schedule."""
    graph: str = setting("dt", "proximity graph whose Louvain regions are the classes", choices=GRAPHS)
    rounds: int = setting(3, 'fine-tuning rounds: FT1 .. FTn (round 0, "w/o", is always run)')
    epochs: int = setting(4, "epochs per round")
    unfrozen_blocks: int = setting(2, "last k transformer blocks trained (with the final norm and a new head)")
    lr: float = setting(2e-4, "AdamW learning rate of the unfrozen blocks")
    head_lr: float = setting(2e-3, "learning rate of the (cosine) classification head")
    weight_decay: float = setting(0.05, "AdamW weight decay")
    batch_size: int = setting(32, "photos per training step")
    seed: int = setting(0, "batch order and head initialisation")
    device: str = setting("auto", '"auto" = CUDA (bf16 autocast) when present, else CPU')


@dataclass(frozen=True)
class LocatorConfig:
    """The learned locators (`locators.GpsVerifier`, `locators.LatLonRegressor`): sizes and training schedule."""
    dim: int = setting(128, "shared image / GPS embedding size")
    hidden: int = setting(256, "hidden width of the MLPs")
    n_freq: int = setting(64, "random Fourier features per scale")
    scales: tuple[float, ...] = setting((1.0, 8.0, 64.0, 512.0), "Fourier frequency scales, per radian of database "
                                                                 "extent")
    epochs: int = setting(100, "training epochs")
    max_steps: int = setting(5000, "caps the epochs on large databases")
    batch_size: int = setting(256, "photos per step")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    jitter: float = setting(0.01, "GPS noise during training, as a share of the extent (smooths the encoder)")
    seed: int = setting(0, "initialisation, batches and the calibration split")
    smooth: float = setting(0.0, "PIGEON's haversine label smoothing of the verifier: another photo of the batch is a "
                                 "soft positive with weight exp(-distance / (smooth x extent)); 0: only photos of one "
                                 "location are positives")


@dataclass(frozen=True)
class PredictorConfig:
    """What a saved predictor is built from besides the run's data: a change rebuilds it."""

    descriptor: str = setting("cls", "retrieval descriptor; gem / vlad need `embed --patches`", choices=DESCRIPTORS)
    k: int = setting(10, "database photos retrieved per query")
    verify: bool = setting(True, "choose among candidates with the GPS verifier (off: the neighbours' vote)",
                           flag="--verify")
    sources: tuple[str, ...] = setting(("top1", "clusters", "gallery"),
                                       "where candidate coordinates come from, comma-separated",
                                       choices=SOURCES)
    n_words: int = setting(32, "VLAD vocabulary size")
    ft_round: int = setting(0, "retrieve with fine-tuning round r's backbone (its re-embedded database, and the query "
                               "through its blocks in the same forward pass; that round's classifier names the "
                               "region): 0 = the pretrained one. Needs a finished round r over the region graph, and "
                               "the cls descriptor")
    retrieval: str = setting("image", 'retrieval space: "image" (the descriptor), "geo" (the GPS verifier\'s image '
                                      'codes: photos the verifier places close are close) or "both" (side by side, '
                                      'mean of the two cosines); geo and both need the verifier', choices=RETRIEVALS)
    propagate: float = setting(0.0, "share a of a database photo's vector taken from the mean of its "
                                    "Delaunay-neighbour sites' vectors, normalize((1 - a) v + a mean): the database "
                                    "carries its surroundings, queries stay plain")
    top_regions: int = setting(0, "hierarchy: classify the photo's region first (a linear probe on the database's "
                                  "embeddings and w/o regions), then retrieve and verify within its top regions only: "
                                  "0 = off")
    region_weight: float = setting(1.0, "hierarchy: add this times log p(candidate's region) (the probe's) to the "
                                        "verifier's logit of each candidate: 0 = off (the default until it was "
                                        "measured better, beyond the interval, on croatia-streetview and bgu-campus at "
                                        "the same p50 latency)")
    tta: str = setting("none", "test-time augmentations: none; flip (the photo and its mirror image through the "
                               "encoder in one batch, their embeddings averaged; the database likewise, from a mirror "
                               "pass over the run's photos made once); crops (the photo and its four overlapping "
                               "corner crops, each 3/4 of a side, likewise: 5 images); needs ft_round 0 and the cls "
                               "descriptor", choices=TTAS)
    method: str = setting("fixed", "fixed: these settings; auto: the database's own cross-validation (inner folds over "
                                   "its places) picks the locator and its main settings (the regression as a candidate "
                                   "or alone, the neighbours' vote, the region prior, 2k) by median km, recorded in "
                                   "the predictor; `geoloc compare --folds K --method auto` reports it on outer folds "
                                   "it never saw",
                          choices=("fixed", "auto"))
    locator: LocatorConfig = field(default_factory=LocatorConfig)  # the verifier's training


@dataclass(frozen=True)
class PredictConfig:
    """Locating photos: the predictor to build or load, and what each prediction reports."""

    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    coverage: float = setting(0.9, "share of calibration photos the uncertainty radius must hold")
    graph: str = setting("dt", "graph whose regions label the predictions (and whose fine-tuning --ft-round retrieves "
                               "with)",
                         choices=GRAPHS, flag="--region-graph")
    region_from: str = setting("classifier", "the latest fine-tuning round's classifier (where the run has one; with "
                                             "--ft-round, that round's) or the w/o region of the database photo "
                                             "nearest the prediction",
                               choices=("classifier", "nearest"))
    unfamiliar_below: float = setting(0.05, "flag a photo as unlike the run's photos when its best match is closer "
                                            "than fewer than this share of the database's own leave-location-out "
                                            "matches (the rate of false flags on places the database covers)")
    device: str = setting("auto", '"auto" = CUDA when present, else CPU')


@dataclass(frozen=True)
class TogetherConfig:
    """Which photos of a batch show one place, located together with one answer (together.py)."""

    how: str = setting("none", "none; all (the batch is one place); folder (each folder is one place); time (EXIF time "
                               "taken, in UTC where every photo records its zone: a new place wherever consecutive "
                               "photos are more than the gap apart)", choices=TOGETHER, flag="--together")
    gap_min: float = setting(10.0, "with time: the largest gap, in minutes, between consecutive photos of one place",
                             flag="--together-gap-min")


@dataclass(frozen=True)
class ExplainConfig:
    """Explaining a match: the patches two photos share (`geoloc explain`, the Predict page)."""

    max_matches: int = setting(40, "mutually nearest patch pairs drawn per neighbour, the most distinctive first")


@dataclass(frozen=True)
class CompareConfig:
    """`geoloc compare`: which retrieval rows, what counts as a retrieval hit, and the protocol."""

    descriptors: tuple[str, ...] = setting(DESCRIPTORS, "kNN rows, comma-separated; gem / vlad need `embed --patches`",
                                           choices=DESCRIPTORS)
    recall_radius_km: float = setting(0.025, "a Recall@K hit lies within this (VPR's 25 m)")


@dataclass(frozen=True)
class CrossValConfig:
    """The protocol of `geoloc compare` and `geoloc experiment`: the run's one split, or K folds over its locations."""

    folds: int = setting(1, "1: the run's own split, point figures; K > 1: grouped K-fold over all locations (each "
                            "held out once), every figure with a 95 % interval from a bootstrap over held-out "
                            "locations")
    fold_seed: int = setting(0, "seed of the assignment of locations to folds, and of the bootstrap")
    block_km: float = setting(0.0, "with --folds K: hold out by area, whole square blocks of this side (km, over the "
                                   "photos' projected coordinates) to each fold and to the bootstrap, not single "
                                   "places: how well a new neighbourhood is located, not a new spot near known ones; "
                                   "0: by place")


@dataclass(frozen=True)
class ServerConfig:
    """One geoloc server for a team: where photos may come from, who may start work, how many jobs run at once, and
    how large a file a visitor or a data folder may hand it (each limit is checked before the file is parsed).

    Read once by `server_config()`: each field from `GEOLOC_<FIELD>` (`GEOLOC_DATA_ROOTS`, `GEOLOC_MODE`, ...),
    else from the file `GEOLOC_CONFIG` (default `.streamlit/geoloc.toml` beside the app), else this default.
    """

    data_roots: tuple[str, ...] | None = setting(None, "folders new runs may read photos from (os.pathsep-separated in "
                                                       "the environment, a list in the file); unset: ../shared/data in "
                                                       "the app (never a home folder), and no check from the command "
                                                       "line")
    mode: str = setting("editor", "viewer: the app shows runs, regions, predictions and metrics, with no control that "
                                  "starts, stops or deletes work", choices=("editor", "viewer"))
    max_jobs: int = setting(0, "runs and fine-tuning jobs started from the app that run at once (the rest wait in the "
                               "queue); 0: one per two cores")
    logins: str | None = setting(None, "the editors' logins: a YAML file (streamlit-authenticator's format, bcrypt "
                                       "hashes only) outside the repository; `geoloc logins add NAME` writes it. Set: "
                                       "a visitor who has not logged in is a viewer. Unset: no logins, the sidebar's "
                                       "name field names an editor (one analyst's own machine)")
    cookie_key: str | None = setting(None, "the secret (32 characters or more) that signs the login cookie, so an "
                                           "editor stays logged in across reloads; unset: no cookie, an editor logs "
                                           "in again in each browser tab")
    session_hours: float = setting(8.0, "a login lasts this many hours from the moment it was made (the cookie "
                                        "too); after it the session is a viewer's again")
    login_attempts: int = setting(5, "wrong passwords for one username, or from one browser session, within "
                                     "login_window_min that refuse further attempts for login_cooldown_min")
    login_window_min: float = setting(15.0, "the window (minutes) wrong passwords are counted over")
    login_cooldown_min: float = setting(15.0, "minutes a username or a browser session is refused after too many "
                                              "wrong passwords (the right password included)")
    state_dir: str | None = setting(None, "the job queue's folder (one per server); default: RUNS/.queue")
    runs: str = setting("runs", "the folder the app lists runs from and builds new ones in")
    max_pixels: int = setting(100_000_000, "an image declaring more pixels (width x height) is refused before it is "
                                           "decoded; images decode at 8 bits per channel: about 7 bytes per pixel at "
                                           "the most (16-bit), 3 for a photo")
    max_boundary_mb: float = setting(20.0, "a boundary file (or the files a zipped Shapefile holds, unzipped) larger "
                                           "than this many MB is refused before it is opened")
    max_boundary_vertices: int = setting(1_000_000, "a boundary file that may hold more polygon vertices than this "
                                                    "(counted from its bytes before it is parsed) is refused")
    max_parse_mb: float = setting(1024.0, "resident memory (MB) the child process that reads an uploaded boundary may "
                                          "take; a file whose reading needs more is refused, and the app's process "
                                          "never holds it")
    max_manifest_mb: float = setting(50.0, "a manifest (CSV, TSV, XLSX) larger than this many MB is refused before it "
                                           "is read")
    max_manifest_cells: int = setting(10_000_000, "rows x columns a manifest may hold (an XLSX sheet's declared size "
                                                  "does not count, the cells read do); past it the manifest is refused")
    max_gpx_mb: float = setting(20.0, "a GPX file larger than this many MB is refused before it is parsed")


SERVER_CONFIG_FILE = PROJECT_DIR / ".streamlit" / "geoloc.toml"


@functools.cache
def server_config() -> ServerConfig:
    """The server's settings, read once per process (tests clear the cache: `server_config.cache_clear()`); every
    floor reads its limits here, so a job and the app that started it bound files alike."""
    return load_server_config()


def load_server_config(environ: dict[str, str] | None = None) -> ServerConfig:
    """`ServerConfig` from the environment over the config file over the defaults."""
    environ = os.environ if environ is None else environ
    path = Path(environ.get("GEOLOC_CONFIG") or SERVER_CONFIG_FILE)
    values: dict[str, Any] = {}
    if path.is_file():
        with open(path, "rb") as f:
            values = tomllib.load(f)
    for f in dataclasses.fields(ServerConfig):
        text = environ.get(f"GEOLOC_{f.name.upper()}")
        if text is None or (text == "" and f.name != "data_roots"):  # an empty GEOLOC_DATA_ROOTS: no folder is allowed
            continue
        if f.name == "data_roots":
            values[f.name] = [p for p in text.split(os.pathsep) if p]
        elif isinstance(f.default, (int, float)):
            values[f.name] = type(f.default)(text)
        else:
            values[f.name] = text
    cfg = from_dict(ServerConfig, values)
    if cfg.mode not in ("editor", "viewer"):
        raise ValueError(f"mode {cfg.mode!r}: editor or viewer")
    return cfg


def too_large(what: str, size: float, limit: float, unit: str, setting_name: str) -> str:
    """The message for a file past one of the server's limits: what, how much, the limit and the
    setting that sets it."""
    return (f"{what} is too large: {size:,.{0 if unit != 'MB' else 1}f} {unit}, the limit is {limit:,g} {unit} "
            f"(server setting {setting_name})")


@dataclass(frozen=True)
class CoverageConfig:
    """`geoloc coverage`: photo density and location error per hexagon."""

    hex_km: float = setting(0.0, "hexagon size, centre to corner, km; 0: about 25 cells across the photos' extent")
    errors: str = setting("loo", 'error per photo: "loo" (every photo located by the others, its location left out) or '
                                 '"compare" (the held-out answers `geoloc compare` wrote)', choices=("loo", "compare"))


@dataclass(frozen=True)
class ShareConfig:
    """What `geoloc map`, `geoloc export` and `geoloc report` write for an analyst to pass on."""

    format: str = setting("gpkg", "GIS file format: GeoPackage (a layer per graph x iteration), KML, zipped Shapefile "
                                  "or GeoJSON",
                          choices=GIS_FORMATS)
    boundary: str | None = setting(None, "clip the run's region polygons to this boundary file (areas recomputed; "
                                         "photos outside it reported)")
    tiles: bool = setting(True, "offer an online tile layer in maps (off until switched on: the offline Natural Earth "
                                "background is always there)")
    thumb_px: int = setting(64, "side of the photo thumbnails embedded in map popups, px (JPEG)")


@dataclass(frozen=True)
class PipelineConfig:
    """The settings of `geoloc run`, stage by stage, as a run records them (`config.json`)."""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Inverse of dataclasses.asdict; unknown keys are an error, missing ones take defaults."""
        return from_dict(cls, d)


def help_of(cls: type, name: str) -> str:
    """A setting's help text, for a page's widget."""
    return cls.__dataclass_fields__[name].metadata["help"]


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """A (nested) config dataclass from its asdict / JSON form; lists become tuples, missing keys take defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            value = from_dict(sub, value or {})
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings {sorted(unknown)}")
    return cls(**kwargs)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a setting: its own `flag`, or `--name-with-dashes`."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def config_argv(cfg: Any) -> list[str]:
    """The flags that rebuild config `cfg` through `add_settings` (for starting a job in its own process).

    Flags only: a nested config or a positional setting has no flag here, so a config that sets one is refused (a
    nested config at its default is left out: the command builds the same)."""
    argv = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and value == f.default_factory():
            continue
        if dataclasses.is_dataclass(value) or f.metadata.get("positional"):
            raise ValueError(f"{type(cfg).__name__}.{f.name} has no flag of its own; pass it to the command yourself")
        if isinstance(value, bool):
            argv.append(flag_of(f) if value else "--no-" + flag_of(f)[2:])
        elif value is not None:  # --flag=value: a value that starts with '-' stays a value
            argv.append(f"{flag_of(f)}={','.join(map(str, value)) if isinstance(value, tuple) else value}")
    return argv
