"""Why an ingest accepted no photo at all, said as what to do next (the commonest first mistakes of a new user)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from geoloc_core.base.errors import UserError
from geoloc_core.ingest.photos import IngestReport

_ROW = re.compile(r"row \d+: ")


def nothing_accepted(report: IngestReport, source: Path, manifest: Path | None, gpx: bool) -> UserError:
    """The cause shared by every rejection of an ingest that kept no photo, and the step that gets past it."""
    reasons = Counter(_ROW.sub("", r.reason, count=1).split(";")[0] for r in report.rejected)
    untagged, missing = len(report.to_locate), reasons["file not found"]  # photos without a location: to locate
    photos = untagged + sum(n for reason, n in reasons.items() if not reason.startswith("not an image file type"))
    if untagged and untagged == photos and not gpx:
        return UserError(f"none of the {untagged} photos in {source} carries GPS, so they cannot build a run's "
                         "database", "To locate them, build a run from geotagged photos of the area (`geoloc run "
                         f"FOLDER --run runs/NAME`), then `geoloc predict {source} --run runs/NAME`; or place them on "
                         "a GPS track you recorded with --gpx TRACK.gpx")
    if untagged and untagged == photos:
        return UserError(f"none of the {untagged} photos in {source} carries GPS, and none could be placed on the "
                         "GPX track", "Check that the track covers the times the photos were taken, and the "
                         "camera's clock offset (--time-offset, e.g. +02:00); each photo's reason is listed above")
    if manifest is not None and missing == photos:
        return UserError(f"all {missing} rows of {manifest} point at files that do not exist under "
                         f"{Path(manifest).parent}", "A manifest's paths are read relative to the manifest's own "
                         "folder (absolute paths as written): move the manifest beside the photos, or write its "
                         "paths from its folder")
    if photos == 0:
        return UserError(f"{source} holds no photos ({report.n_candidates} other files)",
                         "Give the folder that holds the photos (JPEG, PNG, TIFF, WebP, HEIC ...)")
    causes = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(3))
    return UserError(f"none of the {report.n_candidates} files in {manifest or source} was accepted ({causes})",
                     "Fix what each file's reason above says, or give another folder")
