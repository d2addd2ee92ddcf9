"""benchmarks/lambda_soak.py's answer comparison: the package may ship another runtime release than the test process
(Amazon Linux 2 gets ai-edge-litert 1.4.0), so a probability may differ in its last printed digit, nothing else."""

from __future__ import annotations

from benchmarks.lambda_soak import same_answer

ANSWER = {"statusCode": 200, "body": {"model": "cnn", "predictions": [
    {"label": "5", "probability": 0.918559, "top": [{"label": "5", "probability": 0.918559}]}]}}


def test_the_last_printed_digit_may_differ() -> None:
    got = {"statusCode": 200, "body": {"model": "cnn", "predictions": [
        {"label": "5", "probability": 0.91856, "top": [{"label": "5", "probability": 0.91856}]}]}}
    assert same_answer(ANSWER, got)


def test_anything_else_is_a_different_answer() -> None:
    assert not same_answer(ANSWER, {**ANSWER, "statusCode": 400})
    assert not same_answer({"p": 0.918559}, {"p": 0.9186})
    assert not same_answer({"label": "5"}, {"label": "3"})
    assert not same_answer({"a": 1}, {"a": 1, "b": 2})
    assert not same_answer([1, 2], [1, 2, 3])
    assert not same_answer({"ok": True}, {"ok": 1})
    assert not same_answer({"p": None}, {"p": 0.0})
