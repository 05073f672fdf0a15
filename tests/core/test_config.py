import re

import pytest
import yaml
from pydantic import BaseModel

from hangjia.core.config import LLAMA_LINEAR, ProjectConfig, config_template, load_config
from hangjia.core.errors import HangjiaError
from tests.paths import REPO


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


SECTIONS = {name: f.annotation for name, f in ProjectConfig.model_fields.items() if isinstance(f.annotation, type)}


@pytest.mark.parametrize("section", sorted(n for n, t in SECTIONS.items() if issubclass(t, BaseModel)))
def test_every_setting_has_one_docstring_and_the_template_prints_it(section):
    text = config_template()
    for name, field in SECTIONS[section].model_fields.items():
        assert field.description, f"{section}.{name} has no docstring"
        assert f"  # {' '.join(field.description.split())}\n  {name}:" in text, f"{section}.{name}"


def test_training_sections_hold_every_setting_their_trainers_read():
    cfg = ProjectConfig()
    # Continued pretraining's LoRA, DPO's warmup and the reward model's centring are settings like the others.
    assert (cfg.pretrain.lora_dropout, cfg.pretrain.target_modules) == (0.05, list(LLAMA_LINEAR))
    assert (cfg.preference.warmup_ratio, cfg.preference.center_rewards) == (0.1, 0.01)
    # The train section is what stage fingerprints hash: it has exactly the settings it had.
    assert list(cfg.train.model_dump()) == [
        "base_model",
        "method",
        "num_virtual_tokens",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "learning_rate",
        "epochs",
        "max_steps",
        "batch_size",
        "warmup_ratio",
        "max_length",
        "seed",
        "packing",
        "share_prefix",
        "save_steps",
        "eval_steps",
        "early_stopping_patience",
        "gradient_checkpointing",
        "bf16",
        "nproc",
        "accelerate_config",
    ]


def test_the_config_imports_nothing_above_core():
    source = (REPO / "src" / "hangjia" / "core" / "config.py").read_text(encoding="utf-8")
    imported = re.findall(r"^\s*(?:from|import) (hangjia\.\w+)", source, flags=re.MULTILINE)
    assert imported and set(imported) == {"hangjia.core"}


def test_the_defaults_are_the_demo_settings_that_were_measured():
    """A new user's `hangjia build --docs D` selects, trains and retrieves as `make demo` does; configs/kestrel.yaml
    adds only what is kestrel's own (documents, questions, generators, no test split since its questions are the
    test) and spells the rest out with the measurements behind it."""
    demo, default = load_config(REPO / "configs" / "kestrel.yaml"), ProjectConfig()
    assert demo.train == default.train and demo.rag == default.rag
    assert demo.select.model_copy(update={"splits": default.select.splits}) == default.select
