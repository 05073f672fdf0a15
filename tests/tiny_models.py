"""Tiny random Llama models for unit tests: seconds to build and train, not minutes."""

from __future__ import annotations

from pathlib import Path

# SmolLM2's ChatML template, so tiny models format prompts exactly as the embedded one does.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(out: Path, corpus: list[str], seed: int = 0) -> Path:
    """A 2-layer, 32-wide random Llama with a byte-level BPE tokenizer trained on `corpus`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_train_config(**overrides):
    """The train section the SFT unit tests share: a small LoRA on q/v, no dropout or warmup (so runs compare
    exactly), a high learning rate (a tiny model learns in a few steps), packing off unless a test turns it on."""
    from hangjia.core.config import TrainConfig

    settings = dict(
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        learning_rate=5e-2,
        epochs=1,
        max_steps=-1,
        batch_size=4,
        warmup_ratio=0.0,
        max_length=256,
        seed=0,
        packing=False,
    )
    return TrainConfig(**{**settings, **overrides})


def build_tiny_smollm(out: Path, rope: dict | None = None) -> Path:
    """64 wide, 2 layers, 4 query heads sharing 2 kv heads (GQA), SmolLM2's 49,152-token tokenizer.

    Random weights make greedy decoding a coin toss at near-ties (top-2 gaps of 0.0004 logits
    against f16's ~0.01 error), so lm_head sends each token's embedding to a fixed random successor:
    greedy output is a bigram chain with top-1 margins of 2+ logits, while the 0.1-std attention and
    MLP weights still move every logit by several units.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hangjia.llm.models import embedded_base_dir, load_tokenizer

    tokenizer = load_tokenizer(embedded_base_dir())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 100000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embeddings = torch.randn(config.vocab_size, config.hidden_size)
        model.model.embed_tokens.weight.copy_(embeddings)
        model.lm_head.weight.copy_(embeddings[torch.randperm(config.vocab_size)] / 2)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def random_lora(base_dir: Path, out: Path, seed: int = 1, scale: float = 0.1) -> Path:
    """A LoRA adapter on every linear layer with random (non-zero) B, so it changes the model (merged or not).

    PEFT's random B moves logits by ~20 on the tiny SmolLM2-tokenizer Llama, which changes its greedy answers; the
    default tenth moves them by ~2.5 and keeps its bigram margins (greedy answers mostly unchanged)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from hangjia.llm.models import load_causal_lm, load_tokenizer

    torch.manual_seed(seed)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(load_causal_lm(base_dir), lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    model.save_pretrained(out)
    load_tokenizer(base_dir).save_pretrained(out)
    return out
