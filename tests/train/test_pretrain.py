import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hangjia.core.config import PretrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.models import load_tokenizer
from hangjia.train.pretrain import (
    group_texts,
    mix_replay,
    split_holdout,
    tokenize_documents,
    train_cpt,
)

# Repetitive domain text: a small model can learn its patterns in a few dozen steps, and the held-out
# documents follow the same patterns with other numbers.
DOMAIN = [
    " ".join(
        f"Fault E{i}{j} on the DW4500 means the drain pump is blocked. Clean the filter and restart the cycle."
        for j in range(4)
    )
    for i in range(10)
]
REPLAY = [f"The heat pump manual has {n} pages and a table of contents." for n in range(30)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine the threads spin and
    these tests ran 5x slower (110 s instead of 21 s for the two preference and pretrain files)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with 8x larger (tied) embeddings. At init its logits span about ±0.5, so an adapter on the
    body can barely move them; a trained model's logits span whole nats, which the scaling mimics."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    out = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(out)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out


def _args(**over):
    base = dict(block_size=32, learning_rate=2e-2, epochs=2, batch_size=8, warmup_ratio=0.1, lora_r=8, lora_alpha=16)
    return PretrainConfig(**{"target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"], **base, **over})


def test_group_texts_makes_equal_blocks_with_eos_at_document_ends(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    docs = tokenize_documents(tok, ["alpha beta gamma", "", "delta epsilon"])
    assert len(docs) == 2 and all(d[-1] == tok.eos_token_id for d in docs)
    stream = docs[0] + docs[1]
    blocks = group_texts(docs, 4)
    assert all(len(b) == 4 for b in blocks)
    assert [t for b in blocks for t in b] == stream[: len(stream) - len(stream) % 4]


def test_replay_ratio_is_respected_in_the_block_mix():
    domain = [[1] * 4 for _ in range(80)]
    replay = [[2] * 4 for _ in range(100)]
    blocks, n = mix_replay(domain, replay, 0.2, seed=0)
    assert n == sum(b[0] == 2 for b in blocks) == 20  # 20 of 100 blocks
    assert sum(b[0] == 1 for b in blocks) == 80  # every domain block kept
    assert blocks[-20:] != [[2] * 4] * 20  # shuffled in, not appended
    # Too little replay text: it is repeated to reach the ratio.
    blocks, n = mix_replay(domain, replay[:3], 0.5, seed=0)
    assert n == sum(b[0] == 2 for b in blocks) == 80
    assert mix_replay(domain, [], 0.2, seed=0)[1] == 0
    assert mix_replay(domain, replay, 0.0, seed=0)[1] == 0
    with pytest.raises(HangjiaError):
        mix_replay(domain, replay, 1.0, seed=0)


def test_split_holdout_keeps_documents_whole():
    docs = [f"document {i} text" for i in range(10)]
    train, val = split_holdout(docs + ["  "], 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == sorted(docs)
    assert split_holdout(docs, 0.2, seed=0) == (train, val)  # stable for a seed
    train, val = split_holdout(["one two three four five six seven eight nine ten"], 0.2, seed=0)
    assert train == ["one two three four five six seven eight"] and val == [" nine ten"]


def test_lora_cpt_lowers_held_out_perplexity_and_mixes_replay(lm_dir, tmp_path):
    steps = []
    metrics = train_cpt(
        lm_dir, DOMAIN, tmp_path, _args(replay_ratio=0.25), REPLAY, on_step=lambda s, n, logs: steps.append(s)
    )
    assert metrics["val_perplexity_after"] < 0.5 * metrics["val_perplexity_before"], metrics
    assert metrics["replay_blocks"] == round(metrics["domain_blocks"] / 3) > 0  # 25% of the mix
    assert metrics["val_documents"] == 1  # 10% of 10 documents
    assert metrics["final_train_loss"] < metrics["first_train_loss"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == steps == list(range(1, metrics["steps"] + 1))
    # Warmup then cosine decay.
    lrs = [r["learning_rate"] for r in log]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) // 2 and lrs[-1] < 0.1 * max(lrs)


def test_full_cpt_trains_every_weight_and_saves_a_model(lm_dir, tmp_path):
    metrics = train_cpt(lm_dir, DOMAIN, tmp_path, _args(full=True, learning_rate=3e-3, max_steps=8))
    assert metrics["val_perplexity_after"] < metrics["val_perplexity_before"], metrics
    assert metrics["replay_blocks"] == 0  # no replay text given
    base = load_file(lm_dir / "model.safetensors")
    tuned = load_file(tmp_path / "model" / "model.safetensors")
    assert tuned.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert len(changed) == len(base), sorted(set(base) - set(changed))
    AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # a plain model folder, loadable as is


def test_cpt_explains_too_little_text(tiny_model_dir, tmp_path):
    with pytest.raises(HangjiaError, match="less than one block"):
        train_cpt(tiny_model_dir, ["short text"], tmp_path, _args(block_size=512))
