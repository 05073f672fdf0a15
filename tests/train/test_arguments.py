"""The trainer arguments SFT, continued pretraining, DPO and the reward model share, built in one place."""

import pytest
from transformers import TrainingArguments
from trl import DPOConfig, RewardConfig, SFTConfig

from hangjia.core.config import PreferenceConfig, PretrainConfig, TrainConfig
from hangjia.train.arguments import trainer_arguments


@pytest.mark.parametrize(
    "section", [TrainConfig(), PretrainConfig(), PreferenceConfig()], ids=lambda s: type(s).__name__
)
def test_the_schedule_comes_from_the_section(section, tmp_path):
    args = trainer_arguments(tmp_path, section)
    assert args["output_dir"] == str(tmp_path / "checkpoints")
    assert (args["num_train_epochs"], args["max_steps"], args["learning_rate"]) == (
        section.epochs,
        section.max_steps,
        section.learning_rate,
    )
    assert args["per_device_train_batch_size"] == args["per_device_eval_batch_size"] == section.batch_size
    assert args["warmup_steps"] == section.warmup_ratio  # below 1: a share of the steps
    assert args["seed"] == args["data_seed"] == section.seed
    assert (args["save_strategy"], args["eval_strategy"], args["report_to"], args["bf16"]) == (
        "no",
        "no",
        "none",
        False,
    )


def test_a_trainer_adds_and_overrides_its_own_and_may_keep_the_default_eval_batch(tmp_path):
    cfg = PretrainConfig(batch_size=3)
    assert "per_device_eval_batch_size" not in trainer_arguments(tmp_path, cfg, evaluates=False)
    assert TrainingArguments(**trainer_arguments(tmp_path, cfg, evaluates=False)).per_device_eval_batch_size == 8
    own = trainer_arguments(tmp_path, cfg, bf16=True, save_strategy="steps", beta=0.5)
    assert (own["bf16"], own["save_strategy"], own["beta"], own["seed"]) == (True, "steps", 0.5, 0)


def test_every_trainer_config_takes_them(tmp_path):
    train, preference = TrainConfig(), PreferenceConfig()
    configs = [
        SFTConfig(**trainer_arguments(tmp_path, train, max_length=train.max_length)),
        TrainingArguments(**trainer_arguments(tmp_path, PretrainConfig(), evaluates=False)),
        DPOConfig(**trainer_arguments(tmp_path, preference, max_length=preference.max_length, beta=preference.beta)),
        RewardConfig(**trainer_arguments(tmp_path, preference, center_rewards_coefficient=preference.center_rewards)),
    ]
    for config in configs:
        # TRL's configs default to bf16 and activation checkpointing; every Hangjia trainer turns both off.
        assert not config.bf16 and not config.activation_checkpointing and config.logging_steps == 1
        assert config.lr_scheduler_type == "cosine" and config.disable_tqdm
