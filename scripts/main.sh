#!/usr/bin/env bash
# The main job: install, build a run over the photos (croatia-streetview by default, or the folder /
# manifest given), print its figures, then open the app on it. A finished run is not built again, and
# showing its figures changes nothing in it (`geoloc show` reads what the run recorded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

DATA=${1:-}
RUN=runs/${DATA:+$(basename "${DATA%.csv}")}
RUN=${RUN%/}
[ "$RUN" = runs ] && RUN=runs/default
state=$(.venv/bin/python -c "import sys; from geoloc_core.runs.folders import Run; print(Run(sys.argv[1]).state())" "$RUN")
if [ "$state" != done ]; then
  .venv/bin/geoloc run ${DATA:+"$DATA"} --run "$RUN"
else
  echo "main: $RUN is already built (delete it to rebuild); its figures:"
  .venv/bin/geoloc show --run "$RUN"
fi
GEOLOC_RUN=$RUN exec .venv/bin/streamlit run app.py
