"""Run a worker as a child process: used by the demo, the integration tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from streams.cli import query_worker
from streams.settings import Settings
from streams.supervisor import process_settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerProcess:
    """`attribution worker` with the given settings, its log in `log_path`.

    `module` runs instead of `streams.cli worker` (a test's worker with a fault injected);
    `processes` > 1 runs it as a supervised service of that many stage processes and a sink
    (streams/supervisor.py), whose sink answers on the settings' web port."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        module: str = "streams.cli",
        extra_env: dict[str, str] | None = None,
        processes: int = 1,
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.log_path = log_path
        self.module = module
        self.extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, ready_timeout: float = 90.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The log is appended to across restarts: only what this start writes counts.
        written_before = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.settings.as_env(), **self.extra_env}
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, "worker", "--processes", str(self.processes)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}")
            if b"Worker]: Ready" in self.log_path.read_bytes()[written_before:]:
                try:
                    if self.settings.role == "stages":  # no ClickHouse behind this one
                        self.endpoint("/health")
                    else:
                        query_worker(self.settings, "SELECT 1", timeout=5)
                    return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {ready_timeout} s; see {self.log_path}")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def sql(self, statement: str) -> list[list[object]]:
        result = query_worker(self.settings, statement, timeout=30)
        if "error" in result:
            raise RuntimeError(str(result["error"]))
        rows: list[list[object]] = list(result["rows"])  # type: ignore[call-overload]
        return rows

    def metrics(self, port: int | None = None) -> Samples:
        """The worker's Prometheus samples: (name, sorted labels) -> value; of a supervised
        service's sink, or of the process answering on `port`."""
        url = f"http://{self.settings.web_host}:{port or self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metrics_of_every_process(self) -> list[Samples]:
        """The samples of each process of the service: the sink's (or the single worker's)
        first, then each stage process's, on the ports the supervisor gives them."""
        if self.processes == 1:
            return [self.metrics()]
        layout = process_settings(self.settings, self.processes)
        return [self.metrics(each.web_port) for each in layout]

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the worker has not reported it yet."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def endpoint(self, path: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of one of the worker's endpoints."""
        url = f"http://{self.settings.web_host}:{self.settings.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_for_catalog(self, version: int, timeout: float = 30.0) -> None:
        """Block until the worker has loaded catalog `version` (it polls Redis)."""
        url = f"http://{self.settings.web_host}:{self.settings.web_port}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if json.loads(response.read()).get("catalog_version", -1) >= version:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass  # a process of a service still starting (or started again)
            time.sleep(0.1)
        raise TimeoutError(f"worker did not load catalog version {version}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; SIGKILL only if it does not exit in time."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            self._process.send_signal(signal.SIGCONT)  # a paused worker handles it too
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
        code = self._process.returncode
        self._process = None
        return code

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (no heartbeat, no flush) until `resume`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused process carries on where it was frozen."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
