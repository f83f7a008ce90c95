"""A small in-process metrics registry rendered in Prometheus' text format."""

from __future__ import annotations

from collections import defaultdict

from starlette.requests import Request
from starlette.responses import PlainTextResponse

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._counters[name][tuple(sorted(labels.items()))] += amount

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines = []
        for name in sorted(self._counters):
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(self._counters[name].items()):
                rendered = ",".join(f'{key}="{val}"' for key, val in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


async def metrics_endpoint(request: Request) -> PlainTextResponse:
    metrics: Metrics = request.state.services.metrics
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")
