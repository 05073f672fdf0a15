from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.core.errors import HangjiaError
from hangjia.eval.mcq import (
    MCQ,
    dev_file_for,
    evaluate_mcq,
    load_mcq_csv,
    load_mcq_jsonl,
    loglikelihoods,
    prompt,
    score_choices,
    shots_for,
)
from tests.paths import KESTREL, SHARED


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


def test_load_mcq_csv_both_mmlu_layouts(tmp_path):
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
        items = load_mcq_csv(path, "anatomy")
        assert [(i.question, i.choices, i.answer, i.subject) for i in items] == [
            ("Which bone,\nif any?", ["Hyoid", "Femur", "Tibia", "Ulna"], 0, "anatomy"),
            ("Second?", ["w", "x", "y", "z"], 3, "anatomy"),
        ]


def test_load_mcq_csv_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('"multi\nline",a,b,c,d,B\nshort,a,b,c\n', encoding="utf-8")
    with pytest.raises(HangjiaError, match=r"bad.csv:3 .*4 columns"):
        load_mcq_csv(path, "x")


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


BENCHMARKS = SHARED / "benchmarks"
MMLU = BENCHMARKS / "mmlu"


@pytest.mark.skipif(not MMLU.is_dir(), reason="shared MMLU copy not present")
def test_load_the_shared_mmlu_copy():
    assert len(load_mcq_csv(MMLU / "test/anatomy_test.csv", "anatomy")) == 135
    dev = load_mcq_csv(MMLU / "dev/anatomy_dev.csv", "anatomy")
    assert len(dev) == 5 and dev[0].answer == 3 and dev[0].question.startswith("What is the embryological")


def test_cmmlu_and_ceval_rows_are_prompted_as_lm_eval_does(tmp_path):
    """lm-eval's cmmlu / ceval tasks: a Chinese description naming the subject, "答案：" as the cue, the letters as
    continuations (the same " A".." D" as MMLU's)."""
    cmmlu = tmp_path / "cmmlu" / "test" / "anatomy.csv"
    ceval = tmp_path / "ceval" / "val" / "physician_val.csv"
    cmmlu.parent.mkdir(parents=True), ceval.parent.mkdir(parents=True)
    cmmlu.write_text(",Question,A,B,C,D,Answer\n0, 女性生殖腺是 ,卵巢,前庭大腺,前庭球,乳腺,A\n", encoding="utf-8")
    ceval.write_text(
        'id,question,A,B,C,D,answer,explanation\n0,核心问题是____,甲,乙,丙,丁,B,"1. 因为\n乙"\n', encoding="utf-8"
    )
    (item,) = load_mcq_csv(cmmlu)
    assert (item.id, item.subject, item.choices, item.answer) == (
        "anatomy/test/0",
        "anatomy",
        ["卵巢", "前庭大腺", "前庭球", "乳腺"],
        0,
    )
    assert prompt(item) == (
        "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
        "女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺\n答案："
    )
    (item,) = load_mcq_csv(ceval)
    assert (item.id, item.subject, item.answer) == ("physician/val/0", "physician", 1)
    assert prompt(item, [item]) == (
        "以下是中国关于医师资格考试的单项选择题，请选出其中的正确答案。\n\n"
        "核心问题是____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案： B\n\n"
        "核心问题是____\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案："
    )


def test_an_unlabelled_row_is_named(tmp_path):
    path = tmp_path / "physician_test.csv"  # C-Eval's test split carries no answers
    path.write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,\n", encoding="utf-8")
    with pytest.raises(HangjiaError, match=r"physician_test.csv:2 .*no answer"):
        load_mcq_csv(path)


@pytest.mark.parametrize(
    ("test", "dev"),
    [
        ("mmlu/test/anatomy_test.csv", "mmlu/dev/anatomy_dev.csv"),
        ("cmmlu/test/anatomy.csv", "cmmlu/dev/anatomy.csv"),
        ("ceval/val/anatomy_val.csv", "ceval/dev/anatomy_dev.csv"),
    ],
)
def test_the_dev_file_beside_each_layout_and_ids_that_never_collide(tmp_path, test, dev):
    for name in (test, dev):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("q,a,b,c,d,A\n", encoding="utf-8")
    assert dev_file_for(tmp_path / test) == tmp_path / dev
    (item,), (shot,) = load_mcq_csv(tmp_path / test), load_mcq_csv(tmp_path / dev)
    assert item.id != shot.id and shots_for(item, 1, [shot]) == [shot]
    (tmp_path / dev).unlink()
    with pytest.raises(HangjiaError, match="needs its dev file"):
        dev_file_for(tmp_path / test)


@pytest.mark.skipif(not (BENCHMARKS / "cmmlu").is_dir(), reason="shared CMMLU / C-Eval copies not present")
def test_load_the_shared_cmmlu_and_ceval_copies():
    dev = load_mcq_csv(BENCHMARKS / "cmmlu/dev/agronomy.csv")
    assert len(dev) == 5 and dev[0].question == "肉牛屠宰后，胴体的哪个部位肉质较好" and dev[0].answer == 2
    assert len(load_mcq_csv(BENCHMARKS / "cmmlu/test/anatomy.csv")) == 148
    # C-Eval: 52 subjects, 5 dev rows each and 1,346 val rows in all (the sizes its SOURCE.md states).
    paths = sorted((BENCHMARKS / "ceval/val").glob("*_val.csv"))
    assert len(paths) == 52 and sum(len(load_mcq_csv(path)) for path in paths) == 1346
    assert {len(load_mcq_csv(dev_file_for(path))) for path in paths} == {5}
