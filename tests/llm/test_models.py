import json

import numpy as np
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.llm.models import _package_dir, embedded_base_dir, load_embedder, resolve_base


def test_missing_package_names_the_fix():
    with pytest.raises(HangjiaError) as err:
        _package_dir("hangjia_no_such_package", "llm-nonexistent", no_deps=True)
    assert "pip install --no-deps llm-nonexistent" in err.value.message


def test_a_base_that_is_not_a_model_folder_is_refused(tmp_path):
    with pytest.raises(HangjiaError, match="never downloads"):
        resolve_base("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(HangjiaError, match="config.json"):
        resolve_base(str(tmp_path))


def test_a_local_model_folder_is_a_base(tiny_model_dir):
    assert resolve_base(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_embedder_gives_meaningful_384d_vectors():
    model = load_embedder()
    vecs = model.encode(
        ["The drain pump is blocked.", "Drain pump blockage", "Opening hours of the Brennvik centre"],
        normalize_embeddings=True,
    )
    assert vecs.shape == (3, 384)
    assert float(np.dot(vecs[0], vecs[1])) > float(np.dot(vecs[0], vecs[2])) + 0.2


@pytest.mark.slow
def test_embedded_base_is_converted_once_to_plain_safetensors():
    path = resolve_base("embedded")
    assert path == embedded_base_dir()
    assert (path / "model.safetensors").is_file()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    stamp = (path / "model.safetensors").stat().st_mtime
    assert resolve_base("embedded") == path and (path / "model.safetensors").stat().st_mtime == stamp
