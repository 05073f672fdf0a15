"""Typed dependencies of the routes, FastAPI-template style: what `create_app` put on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from hangjia.app.admission import Admissions
from hangjia.app.cache import ResponseCache
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.metrics import Metrics
from hangjia.app.versions import Versions
from hangjia.core.config import ServeConfig
from hangjia.llm.generation import Engine


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_serve_config(request: Request) -> ServeConfig:
    return request.app.state.serve_config


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_admission(request: Request) -> Admissions:
    return request.app.state.admissions


def get_versions(request: Request) -> Versions:
    return request.app.state.versions


def get_cache(request: Request) -> ResponseCache:
    return request.app.state.cache


def get_store(request: Request) -> ExchangeStore | None:
    """The exchange and feedback store; None when the server records nothing (serve.record false, or no database)."""
    return request.app.state.store


EngineDep = Annotated[Engine, Depends(get_engine)]
ServeConfigDep = Annotated[ServeConfig, Depends(get_serve_config)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdmissionDep = Annotated[Admissions, Depends(get_admission)]
VersionsDep = Annotated[Versions, Depends(get_versions)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
StoreDep = Annotated[ExchangeStore | None, Depends(get_store)]
