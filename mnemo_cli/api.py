"""The operator CLI's client for a running Mnemo's REST API (sync httpx: one call per command).

Every failure becomes an :class:`ApiError` with one readable line: an unreachable server names
the URL, an API error carries the server's own message, status and code.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8900"
API_KEY_HEADER = "X-Mnemo-Api-Key"


class ApiError(Exception):
    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status  # None: no answer from Mnemo
        self.code = code
        self.retry_after = retry_after


def default_url() -> str:
    return os.environ.get("MNEMO_URL") or DEFAULT_URL


def default_api_key() -> str | None:
    return os.environ.get("MNEMO_API_KEY") or None


class MnemoApi:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, trust_env=False)

    def __enter__(self) -> MnemoApi:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._client.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if kwargs.get("params"):
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot connect to Mnemo at {self.url} ({reason(exc)}); is it running? (--url, MNEMO_URL)"
            ) from None
        except httpx.TimeoutException:
            raise ApiError(f"Mnemo at {self.url} did not answer {method} {path} in time") from None
        except httpx.HTTPError as exc:
            raise ApiError(f"request to Mnemo at {self.url} failed: {reason(exc)}") from None
        if response.status_code >= 400:
            raise ApiError(error_message(response), response.status_code, error_code(response), retry_after(response))
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{method} {path}: Mnemo answered {response.status_code} with a non-JSON body") from None


def reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def error_message(response: httpx.Response) -> str:
    """The API's own error (OpenAI shape), with the status and code; the raw body otherwise."""
    try:
        error = response.json()["error"]
        message, code, param = error["message"], error.get("code"), error.get("param")
    except (ValueError, KeyError, TypeError):
        body = " ".join(response.text.split())[:200]
        return f"HTTP {response.status_code}: {body or response.reason_phrase}"
    details = ", ".join(part for part in (code and f"code {code}", param and f"param {param}") if part)
    return f"HTTP {response.status_code}: {message}" + (f" ({details})" if details else "")
