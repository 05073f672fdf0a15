from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.errors import HangjiaError
from hangjia.eval.mcq import MCQ, evaluate_mcq, load_mcq_jsonl, load_mmlu_csv, loglikelihoods, prompt, score_choices

KESTREL = Path(__file__).parents[2] / "examples/kestrel"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def reference_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """One forward pass over context + continuation, summed over exactly the continuation's positions."""
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_enc), len(whole)))


CONTEXT = "The drain pump of the dishwasher is blocked.\nA. E21\nB. E24\nC. E25\nD. E31\nAnswer:"
CONTINUATIONS = [" A", " B", " C", " D", " E24 drain pump blocked", " the warranty is 24 months"]


def test_score_choices_matches_a_hand_computed_loglikelihood(tiny):
    model, tokenizer = tiny
    scores = score_choices(model, tokenizer, CONTEXT, CONTINUATIONS)
    for (ll, nbytes), continuation in zip(scores, CONTINUATIONS, strict=True):
        assert ll == pytest.approx(reference_loglikelihood(model, tokenizer, CONTEXT, continuation), abs=1e-4)
        assert ll < 0
        assert nbytes == len(continuation.encode("utf-8"))


def test_batched_scores_equal_one_at_a_time(tiny):
    model, tokenizer = tiny
    # Different contexts give different lengths, so the batch really pads.
    requests = [(CONTEXT, c) for c in CONTINUATIONS] + [("Warranty:", " 24 months"), ("E24", " means a blocked pump")]
    batched = loglikelihoods(model, tokenizer, requests, batch_size=8)
    single = [loglikelihoods(model, tokenizer, [r], batch_size=1)[0] for r in requests]
    assert batched == pytest.approx(single, abs=1e-5)


def test_trailing_space_in_context_moves_to_the_continuation(tiny):
    model, tokenizer = tiny
    [(with_space, _)] = score_choices(model, tokenizer, "Answer: ", ["B"])
    [(without, _)] = score_choices(model, tokenizer, "Answer:", [" B"])
    assert with_space == pytest.approx(without, abs=1e-6)


def test_load_kestrel_mcq():
    items = load_mcq_jsonl(KESTREL / "mcq.jsonl")
    assert len(items) == 30
    assert Counter("ABCD"[i.answer] for i in items) == {"A": 8, "B": 8, "C": 7, "D": 7}
    assert items[0].id == "km001" and items[0].answer == 1 and items[0].choices[1] == "E24"


def test_load_mcq_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "mcq.jsonl"
    path.write_text(
        '{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "A"}\n'
        '{"question": "q", "choices": ["a", "b", "c", "d"], "answer": "E"}\n'
    )
    with pytest.raises(HangjiaError, match=r"mcq.jsonl:2 "):
        load_mcq_jsonl(path)


def test_load_mmlu_csv_both_layouts(tmp_path):
    # Original release: no header, answer letter; a quoted field with a comma and a line break.
    original = tmp_path / "anatomy_test.csv"
    original.write_text('"Which bone,\nif any?",Hyoid,Femur,Tibia,Ulna,A\nSecond?,w,x,y,z,D\n', encoding="utf-8")
    # The shared copy: header row, 0-based answer index.
    shared = tmp_path / "anatomy_shared.csv"
    shared.write_text(
        'question,choice0,choice1,choice2,choice3,answer\n"Which bone,\nif any?",Hyoid,Femur,Tibia,Ulna,0\n'
        "Second?,w,x,y,z,3\n",
        encoding="utf-8",
    )
    for path in (original, shared):
        items = load_mmlu_csv(path, "anatomy")
        assert [(i.question, i.choices, i.answer, i.subject) for i in items] == [
            ("Which bone,\nif any?", ["Hyoid", "Femur", "Tibia", "Ulna"], 0, "anatomy"),
            ("Second?", ["w", "x", "y", "z"], 3, "anatomy"),
        ]


def test_load_mmlu_csv_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('"multi\nline",a,b,c,d,B\nshort,a,b,c\n', encoding="utf-8")
    with pytest.raises(HangjiaError, match=r"bad.csv:3 .*4 columns"):
        load_mmlu_csv(path, "x")


def test_prompt_is_the_lm_eval_mmlu_format():
    shot = MCQ("d1", "What is 1+1?", ["1", "2", "3", "4"], 1, "elementary_mathematics")
    item = MCQ("t1", " What is 2+2? ", ["2", "3", "4", "5"], 2, "elementary_mathematics")
    assert prompt(item, [shot]) == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "What is 2+2?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer:"
    )
    assert prompt(MCQ("x", "Q?", ["a", "b", "c", "d"], 0)) == "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def test_evaluate_mcq_agrees_with_score_choices(tiny):
    model, tokenizer = tiny
    items = load_mcq_jsonl(KESTREL / "mcq.jsonl")
    dev, test = items[:2], items[2:7]
    result = evaluate_mcq(model, tokenizer, test, shots=1, dev_items=dev, batch_size=3)
    assert result["n"] == 5
    assert 0 <= result["acc"] <= 1 and 0 <= result["acc_norm"] <= 1
    for item, row in zip(test, result["per_item"], strict=True):
        context = prompt(item, dev[:1])
        letters = score_choices(model, tokenizer, context, [" A", " B", " C", " D"])
        assert row["pred"] == "ABCD"[max(range(4), key=lambda k: letters[k][0])]
        texts = score_choices(model, tokenizer, context, [f" {c}" for c in item.choices])
        normed = [ll / len(c.encode()) for (ll, _), c in zip(texts, item.choices, strict=True)]
        assert row["pred_norm"] == "ABCD"[max(range(4), key=normed.__getitem__)]
        assert row["correct"] == (row["pred"] == row["answer"])


def test_evaluate_mcq_needs_enough_dev_items(tiny):
    model, tokenizer = tiny
    items = load_mcq_jsonl(KESTREL / "mcq.jsonl")
    with pytest.raises(HangjiaError, match="5-shot"):
        evaluate_mcq(model, tokenizer, items[:1], shots=5, dev_items=items[1:3])


MMLU = Path("/work/shared/benchmarks/mmlu")


@pytest.mark.skipif(not MMLU.is_dir(), reason="shared MMLU copy not present")
def test_load_the_shared_mmlu_copy():
    assert len(load_mmlu_csv(MMLU / "test/anatomy_test.csv", "anatomy")) == 135
    dev = load_mmlu_csv(MMLU / "dev/anatomy_dev.csv", "anatomy")
    assert len(dev) == 5 and dev[0].answer == 3 and dev[0].question.startswith("What is the embryological")
