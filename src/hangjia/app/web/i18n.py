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
        "chat_soon": "The chat opens here.",
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
        "chat_soon": "对话页面将在这里打开。",
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
