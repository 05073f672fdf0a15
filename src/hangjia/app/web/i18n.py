"""The web app's words in English and Chinese, and which of the two a request gets: `?lang=zh|en`, else the first of
them in Accept-Language, else English."""

from __future__ import annotations

from typing import Literal

from fastapi import Request

Language = Literal["en", "zh"]

LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "title": "Hangjia",
        "sign_in": "Sign in",
        "username": "Name",
        "password": "Password",
        "sign_out": "Sign out",
        "wrong": "Wrong name or password.",
        "too_many": "Too many failed attempts; try again in {minutes} minutes.",
        "signed_in_as": "Signed in as {name} ({role}).",
        "model": "Model",
        "ask": "Ask",
        "question": "Ask a question about your documents",
        "thinking": "Answering…",
        "sources": "Passages",
        "no_sources": "No passages were retrieved.",
        "cited": "cited",
        "page": "p. {page}",
        "score": "score",
        "helpful": "Helpful",
        "not_helpful": "Not helpful",
        "why": "Why?",
        "reason_wrong": "Wrong",
        "reason_not_in_documents": "Not in the documents",
        "reason_incomplete": "Incomplete",
        "reason_outdated": "Outdated",
        "reason_unsafe": "Unsafe",
        "send": "Send",
        "rate": "Rate 1–5",
        "correct": "Correct this answer",
        "submit_correction": "Submit the correction",
        "thanks": "Thanks, noted.",
        "failed": "Could not send: {message}",
        "no_record": "This server records no answers, so there is nothing to judge.",
        "you": "You",
        "answer": "Answer",
        "blocked": "The guard replaced the answer:",
        "review": "Review queue",
        "waiting": "Judgements waiting for review: {count}.",
        "other_language": "中文",
    },
    "zh": {
        "title": "行家",
        "sign_in": "登录",
        "username": "用户名",
        "password": "密码",
        "sign_out": "退出登录",
        "wrong": "用户名或密码错误。",
        "too_many": "失败次数过多，请 {minutes} 分钟后再试。",
        "signed_in_as": "已登录：{name}（{role}）。",
        "model": "模型",
        "ask": "提问",
        "question": "就您的文档提问",
        "thinking": "正在回答…",
        "sources": "引用段落",
        "no_sources": "没有检索到段落。",
        "cited": "已引用",
        "page": "第 {page} 页",
        "score": "得分",
        "helpful": "有帮助",
        "not_helpful": "没帮助",
        "why": "原因？",
        "reason_wrong": "错误",
        "reason_not_in_documents": "文档中没有",
        "reason_incomplete": "不完整",
        "reason_outdated": "过时",
        "reason_unsafe": "不安全",
        "send": "发送",
        "rate": "评分 1–5",
        "correct": "修改这个回答",
        "submit_correction": "提交修改",
        "thanks": "谢谢，已记录。",
        "failed": "发送失败：{message}",
        "no_record": "本服务器不记录回答，因此无法评价。",
        "you": "您",
        "answer": "回答",
        "blocked": "答案检查替换了回答：",
        "review": "审核队列",
        "waiting": "待审核的反馈：{count} 条。",
        "other_language": "English",
    },
}


def language(request: Request) -> Language:
    """`?lang=`, else the most preferred of en/zh in Accept-Language (q-values honoured), else en."""
    asked = request.query_params.get("lang")
    if asked in LABELS:
        return asked
    ranked = []
    for position, item in enumerate(request.headers.get("accept-language", "").split(",")):
        tag, _, params = item.strip().partition(";")
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        primary = tag.split("-")[0].lower()
        if primary in LABELS and q > 0:
            ranked.append((-q, position, primary))
    return min(ranked)[2] if ranked else "en"
