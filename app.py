"""The IDRiD studio app: ``make run`` (or ``streamlit run app.py``; the server settings are in .streamlit/config.toml).

This file is the frame around every page: page config, navigation over ``pages/``, the sidebar's run and dataset
pickers, and the first start (synthetic demo data and the demo's evaluation, generated once when missing).
"""

import streamlit as st

import app_support as ui

st.set_page_config(page_title="IDRiD studio", page_icon=":material/visibility:", layout="wide")

DASHBOARD = st.Page("pages/dashboard.py", title="Dashboard", icon=":material/monitoring:", url_path="dashboard")


def home() -> None:
    """The root address opens the Dashboard at its own address. Streamlit serves its default page at "/" only, so
    were the Dashboard the default, a shared link to /dashboard?run=idrid would say "Page not found"."""
    st.switch_page(DASHBOARD, query_params=st.query_params.to_dict())


PAGES = [  # page files hold UI only; app_support.py is the glue, core/ does the work
    st.Page(home, title="Home", url_path="home", default=True, visibility="hidden"),
    DASHBOARD,
    st.Page("pages/gallery.py", title="Gallery", icon=":material/grid_view:", url_path="gallery"),
    st.Page("pages/predict.py", title="Predict", icon=":material/center_focus_strong:", url_path="predict"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
]

page = st.navigation(PAGES)
st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 2.5rem}</style>")  # less empty space on top
dataset, run = ui.sidebar()
ui.first_start(run)
with ui.guard("this page"):  # the last safety net: the pages guard each action themselves
    page.run()
ui.warm_up()  # after the page: it is drawn first, the model stack imports behind it
