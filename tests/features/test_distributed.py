import numpy as np
import pytest

from conftest import TINY
from geoloc_core.cli import main

pytestmark = pytest.mark.slow  # minutes: real processes, kill loops, many sessions

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_embedding_equals_the_single_process_path(manifest_folder, tiny_checkpoint, isolated_cache, tmp_path,
                                                      local_ray):
    common = ["--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--patches",
              "--batch-size", "4"]
    for name in ("local", "ray"):
        assert main(["ingest", str(manifest_folder), "--run", str(tmp_path / name)]) == 0
    (manifest_folder / "images" / "l03_1.jpg").write_bytes(b"\xff\xd8\xff broken after ingest")
    for name, extra in (("local", []), ("ray", ["--ray"])):
        assert main(["embed", "--run", str(tmp_path / name), *common, *extra]) == 0
        assert "images/l03_1.jpg" in (tmp_path / name / "rejected.csv").read_text()
    local, distributed = (np.load(tmp_path / name / "embeddings.npy") for name in ("local", "ray"))
    assert local.shape == distributed.shape and len(local) == 39
    assert np.allclose(local, distributed, atol=1e-5)
    assert np.allclose(np.load(tmp_path / "local" / "patches.npy").astype(np.float32),
                       np.load(tmp_path / "ray" / "patches.npy").astype(np.float32), atol=2e-3)
    assert list((tmp_path / "ray" / "shards").rglob("*.parquet"))  # the shards stay for the index build
