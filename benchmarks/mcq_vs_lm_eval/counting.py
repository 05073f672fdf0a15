"""Forward-pass counters both sides of mcq_vs_lm_eval register on their model (imported from either venv).

`count(model)` returns a dict that its hooks keep up to date:
  rows  input rows of the model's forward calls (batch dimension);
  macs  multiply-adds of every `torch.nn.Linear` call (input positions x in_features x out_features): the
        projections, the MLPs and the LM head, i.e. nearly all of a small decoder's arithmetic. Attention scores
        and softmax are not counted (~2% of it at these lengths).
On a CPU where the GEMMs run near the cores' peak, the scoring-time ratio cannot exceed the ratio of these counts.
"""

from __future__ import annotations


def count(model) -> dict[str, int]:
    import torch

    counts = {"rows": 0, "macs": 0}

    def on_forward(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        counts["rows"] += ids.shape[0]

    def on_linear(module, args, output):
        counts["macs"] += args[0].numel() // module.in_features * module.in_features * module.out_features

    model.register_forward_pre_hook(on_forward, with_kwargs=True)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(on_linear)
    return counts
