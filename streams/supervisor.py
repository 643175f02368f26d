"""`attribution worker --processes N`: every core of one machine, as one service.

A Faust worker runs its agents on one event loop, so one process uses one core. With N > 1 the
command starts N worker processes of role `stages` (one consumer group, as separate stage
workers are) and one of role `sink` (which reads the rows in a group of its own), and supervises
them: the stages share the partitions (each restores its own share of the tables), the sink
alone writes ClickHouse. This is the way to scale up before scaling out: more machines run the
same command, and their processes join the same groups.

- The sink answers on the configured web port (SQL, health, metrics, as a single worker does);
  stage process i (from 1) answers on the web port + i, for its metrics and health.
- Each process has its own data dir under the configured one (`sink`, `stages-1`, ...); the
  embedded ClickHouse stays where a single-process worker keeps it.
- A process that exits while the service runs is started again after a pause that doubles from
  one second up to a minute, and resets once it ran for a minute: its partitions go to the
  others meanwhile and come back at the next rebalance, as with any worker that stops. One that
  refuses to start (exit code 78, EX_CONFIG: settings that do not fit the stored history) stops
  the service with the same code, as starting it again cannot help.
- SIGTERM, SIGINT or SIGHUP stops the service: every process gets SIGTERM (a sink stores what
  it holds, stages save theirs, offsets are committed), and one that is still running after the
  grace period is killed. A process is also sent SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from streams.settings import Settings

log = logging.getLogger(__name__)

# A worker's exit code when it refuses to start (settings that do not fit the stored history):
# starting it again cannot help, so the service stops with it. EX_CONFIG, which neither Python
# nor Faust's option parsing (2) uses.
REFUSED_TO_START = os.EX_CONFIG
FIRST_RESTART_PAUSE = 1.0
LONGEST_RESTART_PAUSE = 60.0
STOP_GRACE_SECONDS = 50.0  # under docker-compose's stop_grace_period of 60 s
POLL_SECONDS = 0.5


def default_stage_processes(settings: Settings) -> int:
    """One stage process a core this process may run on, and no more than there are
    partitions to share."""
    return max(1, min(len(os.sched_getaffinity(0)), settings.partitions))


def process_settings(settings: Settings, stage_processes: int) -> list[Settings]:
    """The sink's settings, then each stage process's. The sink keeps the service's ClickHouse
    (by default the embedded engine under the service's data dir, where a single-process
    worker keeps it too)."""
    sink = settings.model_copy(
        update={
            "role": "sink",
            "data_dir": settings.data_dir / "sink",
            "clickhouse_dsn": settings.clickhouse,
        }
    )
    stages = [
        settings.model_copy(
            update={
                "role": "stages",
                "data_dir": settings.data_dir / f"stages-{index}",
                "web_port": settings.web_port + index,
            }
        )
        for index in range(1, stage_processes + 1)
    ]
    return [sink, *stages]


@dataclass
class Supervised:
    """One worker process of the service, started again whenever it exits."""

    name: str
    settings: Settings
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    pause: float = FIRST_RESTART_PAUSE
    due_at: float = 0.0  # when it may start again

    def start(self) -> None:
        env = {**os.environ, **self.settings.as_env()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--processes", "1"],
            env=env,
            preexec_fn=_stop_with_parent,
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def check(self, now: float) -> bool:
        """Start it again if it exited and its pause is over; False if it refused to start."""
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                if now - self.started_at >= LONGEST_RESTART_PAUSE:
                    self.pause = FIRST_RESTART_PAUSE
                return True
            if code == REFUSED_TO_START:
                log.error("%s refused to start (its reason above); stopping the service", self.name)
                return False
            log.warning(
                "%s exited with %d; starting it again in %.0f s", self.name, code, self.pause
            )
            self.process = None
            self.due_at = now + self.pause
            self.pause = min(self.pause * 2, LONGEST_RESTART_PAUSE)
        elif now >= self.due_at:
            self.start()
        return True

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s still running after the grace period; killing it", self.name)
            self.process.kill()
            self.process.wait()


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so that no worker outlives the service."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def supervise(settings: Settings, processes: int) -> int:
    """Run one sink and `processes` stage processes until SIGTERM or SIGINT."""
    if settings.role != "all":
        raise SystemExit(
            f"--processes {processes} runs the sink and the stages itself; "
            f"ATTRIBUTION_ROLE must be all, not {settings.role}"
        )
    logging.basicConfig(level=settings.log_level.upper(), format="[%(asctime)s] %(message)s")
    children = [
        Supervised("sink" if child.role == "sink" else f"stages-{index}", child)
        for index, child in enumerate(process_settings(settings, processes))
    ]
    stopping = refused = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        for child in children:
            child.start()
        while not stopping:
            now = time.monotonic()
            if not all(child.check(now) for child in children):
                refused = True
                break
            time.sleep(POLL_SECONDS)
    finally:
        log.info("stopping %d processes", len(children))
        for child in children:
            child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            child.wait_or_kill(deadline)
    return REFUSED_TO_START if refused else 0
