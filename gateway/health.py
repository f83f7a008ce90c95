"""Liveness, readiness and the model list."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.services import Services

READY_TIMEOUT_S = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _check(name: str, probe: object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, READY_TIMEOUT_S)  # type: ignore[arg-type]
    except Exception as exc:  # any failure means "not ready"; the message says which dependency
        return name, f"unavailable: {type(exc).__name__}: {exc}"[:300]
    return name, "ok"


async def readyz(request: Request) -> JSONResponse:
    """Ready only when the store, the embedder and the queue answer; the body says which one does not."""
    services: Services = request.state.services
    checks = [_check("store", services.core.store.ping()), _check("embedder", _embed_probe(services))]
    if services.queue is not None:
        checks.append(_check("queue", services.queue.ping()))
    else:
        checks.append(_check("queue", _missing_queue()))
    results = dict(await asyncio.gather(*checks))
    ready = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "degraded", "checks": results}, status_code=200 if ready else 503
    )


async def _embed_probe(services: Services) -> None:
    await services.core.embedder.probe()


async def _missing_queue() -> None:
    raise RuntimeError("no queue connection")


async def list_models(request: Request) -> JSONResponse:
    services: Services = request.state.services
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "mnemo"} for name in services.models.public_models()
    ]
    return JSONResponse({"object": "list", "data": data})
