from pathlib import Path

import pytest
import yaml

from hangjia.core.config import ProjectConfig, config_template, load_config
from hangjia.core.errors import HangjiaError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_file():
    cfg = load_config(None)
    assert cfg.train.base_model == "embedded"
    assert cfg.docs is None and cfg.eval.questions is None


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_points_at_real_files(path):
    cfg = load_config(path)
    assert cfg.docs is not None and cfg.docs.is_dir()
    assert cfg.eval.questions is None or cfg.eval.questions.is_file()


def test_unknown_key_is_named_with_its_line(tmp_path):
    cfg = tmp_path / "hangjia.yaml"
    cfg.write_text("docs: docs\ntrain:\n  lora_r: 8\n  lora_rnak: 4\n")
    with pytest.raises(HangjiaError) as err:
        load_config(cfg)
    assert "train.lora_rnak" in err.value.message
    assert f"{cfg}:4" in err.value.message


def test_wrong_type_is_named(tmp_path):
    cfg = tmp_path / "hangjia.yaml"
    cfg.write_text("train:\n  epochs: many\n")
    with pytest.raises(HangjiaError, match=r"train\.epochs"):
        load_config(cfg)


def test_unknown_section_and_bad_yaml(tmp_path):
    cfg = tmp_path / "hangjia.yaml"
    cfg.write_text("trian:\n  epochs: 1\n")
    with pytest.raises(HangjiaError, match="unknown key 'trian'"):
        load_config(cfg)
    cfg.write_text("train: [unclosed\n")
    with pytest.raises(HangjiaError, match="not valid YAML"):
        load_config(cfg)
    with pytest.raises(HangjiaError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "docs").mkdir()
    cfg = tmp_path / "sub.yaml"
    cfg.write_text("docs: docs\neval:\n  questions: q.jsonl\n")
    loaded = load_config(cfg)
    assert loaded.docs == (tmp_path / "docs").resolve()
    assert loaded.eval.questions == (tmp_path / "q.jsonl").resolve()


def test_template_documents_every_field_and_round_trips(tmp_path):
    text = config_template()
    assert "# LoRA rank." in text
    path = tmp_path / "hangjia.yaml"
    path.write_text(text)
    assert load_config(path).model_dump() == ProjectConfig().model_dump()
    assert set(yaml.safe_load(text)) == set(ProjectConfig.model_fields)
