#!/usr/bin/env bash
# The main job: install, build a run over the photos (croatia-streetview by default, or the folder /
# manifest given), print its figures, then open the app on it. A finished run is not built again, and
# showing its figures changes nothing in it (`geoloc show` reads what the run recorded).
#
# The app is served on this machine only (127.0.0.1). To serve it to a network, write a server config first
# (.streamlit/geoloc.toml, or the file GEOLOC_CONFIG names: data roots, mode, and logins for an editor server) and set
# GEOLOC_ADDRESS (e.g. 0.0.0.0):
# docs/team-server.md says how, in order. Without a server config the app may read photos from the data folder this
# run was built from and ../shared/data, never a home folder.
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
ADDRESS=${GEOLOC_ADDRESS:-127.0.0.1}
CONFIG=${GEOLOC_CONFIG:-.streamlit/geoloc.toml}
LOCAL=$([ "$ADDRESS" = 127.0.0.1 ] || [ "$ADDRESS" = localhost ] && echo 1 || true)
if [ ! -f "$CONFIG" ]; then
  if [ -z "$LOCAL" ]; then
    echo "main: serving to a network ($ADDRESS) needs a server config ($CONFIG); see docs/team-server.md" >&2
    exit 2
  fi
  if [ -z "${GEOLOC_DATA_ROOTS+set}" ]; then  # the run's own data folder and ../shared/data
    SOURCE=${DATA:-../shared/data}
    [ -d "$SOURCE" ] || SOURCE=$(dirname "$SOURCE")
    export GEOLOC_DATA_ROOTS="$(cd "$SOURCE" && pwd):$(cd .. && pwd)/shared/data"
  fi
fi
if [ -z "$LOCAL" ]; then
  # an editor server open to a network needs logins (else any visitor starts and deletes work under any name); a
  # logins file with a plaintext password, or a cookie key too short, is refused here too
  .venv/bin/geoloc logins check --network || { echo "main: not serving to $ADDRESS; see docs/team-server.md" >&2; exit 2; }
else
  .venv/bin/geoloc logins check >/dev/null || exit 2
fi
GEOLOC_RUN=$RUN exec .venv/bin/streamlit run app.py --server.address "$ADDRESS"
