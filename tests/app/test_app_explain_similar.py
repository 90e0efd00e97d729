"""The Predict page's match explanations and the Similar places page, through streamlit.testing
(AppTest) over a tiny run."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import REPO
from geoloc_core.config import FinetuneConfig
from geoloc_core.learn.finetune import finetune_rounds


def page(path: str, run: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / path), default_timeout=120)
    at.session_state["run_dir"] = str(run)
    return at.run()


def captions(at: AppTest) -> list[str]:
    return [img.caption for image in at.get("image") for img in image.proto.imgs]


def test_predict_page_explains_each_neighbour_and_can_be_told_not_to(tiny_run):
    at = page("views/predict.py", tiny_run)
    at.multiselect[0].set_value(at.multiselect[0].options[:2]).run()
    assert not at.exception
    explained = [c for c in captions(at) if "mutual patch pairs" in c]
    assert len(explained) == 2 * 10  # every neighbour of both photos (k = 10)
    assert any("Neighbours' tokens: computed for these photos" in c.value for c in at.caption)
    [explain] = [t for t in at.sidebar.toggle if t.label == "Explain each match"]
    explain.set_value(False).run()
    assert not at.exception and not [c for c in captions(at) if "mutual patch pairs" in c]


def test_similar_page_scores_every_site_for_a_photo_and_a_region_in_the_fine_tuned_space(tiny_run):
    list(finetune_rounds(tiny_run, FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")))
    at = page("views/similar.py", tiny_run)
    assert not at.exception
    assert at.sidebar.selectbox[0].value.label.startswith("FT1 DT fine-tuned")
    assert any("Embeddings: **FT1 DT fine-tuned" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert (len(table) == 10 and table["similarity"].is_monotonic_decreasing and table["photo"]
            .str.startswith("data:image/jpeg").all())
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    assert [layer["@@type"] for layer in deck["layers"]][-2:] == ["ScatterplotLayer", "TextLayer"]
    at.radio[0].set_value("a region").run()
    assert not at.exception and [s.label for s in at.main.selectbox] == ["Graph", "Partition", "Region"]
    assert len(at.dataframe[0].value) == 10
    at.sidebar.selectbox[0].set_value(at.sidebar.selectbox[0].options[-1]).run()
    at.sidebar.radio[0].set_value("mean").run()
    assert not at.exception and any("Embeddings: **pretrained" in c.value for c in at.caption)
