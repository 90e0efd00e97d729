"""geoloc's Streamlit app: navigation and the shared run picker, nothing else.

    .venv/bin/streamlit run app.py
"""

import streamlit as st

from pages.common import choose_run

st.set_page_config(page_title="geoloc", layout="wide")
choose_run()
st.navigation([
    st.Page("pages/predict.py", title="Predict", icon="📍", default=True),
    st.Page("pages/regions.py", title="Regions", icon="🗺️"),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/evaluate.py", title="Evaluate", icon="📊"),
    st.Page("pages/data.py", title="Data", icon="🗂️"),
]).run()
