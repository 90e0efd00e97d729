"""geoloc's Streamlit app: navigation and the shared run picker, nothing else.

    .venv/bin/streamlit run app.py

The pages live in `views/`, not `pages/`: Streamlit would take a `pages/` folder for a legacy
multipage app and serve it, helper modules and all, to a visitor whose first request is a deep link.
"""

import streamlit as st

from views.common import choose_run

st.set_page_config(page_title="geoloc", layout="wide")
choose_run()
st.navigation([
    st.Page("views/predict.py", title="Predict", icon="📍", default=True),
    st.Page("views/regions.py", title="Regions", icon="🗺️"),
    st.Page("views/train.py", title="Train", icon="🏋️"),
    st.Page("views/evaluate.py", title="Evaluate", icon="📊"),
    st.Page("views/similar.py", title="Similar places", icon="🔎"),
    st.Page("views/data.py", title="Data", icon="🗂️"),
]).run()
