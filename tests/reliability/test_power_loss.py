"""Cortes de luz: spool, temporales, salida y registro de eventos sobre powerfs.

Un corte descarta todo lo que no se hizo durable (datos sin fsync, nombres sin fsync del
directorio padre). Se corta en cada k-ésima frontera (fsync, rename, link, create...) y en
momentos al azar de una tanda de trabajos (tamaños mezclados, uno lento, uno cancelado, uno con
reintento); después se "reinicia": el daemon muere con SIGKILL en el instante del corte, se
vuelve a montar sólo lo durable y se arranca otro daemon. Se comprueba:

- cada envío durable (``videonote-dl submit`` devolvió su id antes del corte) acaba con
  exactamente un registro (y nunca, además, en rejected/);
- cada registro de done/ apunta a un archivo completo con el sha256 del servidor;
- ningún archivo de la salida sin registro; ningún directorio temporal tras una pasada del
  recolector;
- el registro de eventos puede perder su cola, pero no tiene líneas rotas, ni desenlaces
  duplicados, ni transiciones fuera de orden; un ``job.succeeded`` implica un registro en done/.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.cli import main as cli_main
from daemon.config import load_settings
from daemon.reaper import reap_temp_root
from daemon.spool import SPOOL_SUBDIRS
from daemon.verify import check_event_sequences, verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.support.powerfs import PowerFS, powerfs_unavailable

pytestmark = pytest.mark.skipif(powerfs_unavailable() is not None, reason=str(powerfs_unavailable()))

# Fronteras que cruza la tanda después de arrancar el daemon (medido: ~120); se corta en 1, 1+K, ...
BATCH_BOUNDARIES = 130
K = 9


@dataclass
class Job:
    id: str
    data: bytes
    behavior: Behavior
    cancel: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _batch(seed: int) -> list[Job]:
    """Tamaños mezclados, uno lento, uno con reintento (503 y luego 200) y uno que se cancela."""
    rng = random.Random(seed)
    jobs = [
        Job("tiny", rng.randbytes(2_000), Behavior()),
        Job("small", rng.randbytes(150_000), Behavior()),
        Job("big", rng.randbytes(1_500_000), Behavior()),
        Job("slow", rng.randbytes(600_000), Behavior(rate=1_500_000, chunk=64 * 1024)),
        Job("retry", rng.randbytes(40_000), Behavior(fail_statuses=[503])),
        Job("cancelme", rng.randbytes(900_000), Behavior(rate=300_000, chunk=32 * 1024), cancel=True),
    ]
    for job in jobs:
        job.behavior.data = job.data
    return jobs


@dataclass
class Machine:
    """Un "ordenador" cuyo disco es powerfs: daemon, corte, reinicio."""

    base: Path
    server: TestServer
    seed: int = 0
    fs: PowerFS = field(init=False)
    daemon: DaemonProcess = field(init=False)

    def __post_init__(self) -> None:
        self.backing, self.mnt = self.base / "disk", self.base / "mnt"
        # La instalación (tmpfiles.d) ya creó las carpetas: son durables antes del primer arranque.
        for name in SPOOL_SUBDIRS:
            (self.backing / "spool" / name).mkdir(parents=True, exist_ok=True)
        for name in ("tmp", "out", "log"):
            (self.backing / name).mkdir(exist_ok=True)
        self.fs = PowerFS(self.backing, self.mnt, seed=self.seed, writeback="prefix").mount()
        self.daemon = self._new_daemon()

    def _new_daemon(self) -> DaemonProcess:
        m = self.mnt
        return DaemonProcess(self.base, spool_dir=str(m / "spool"), temp_dir=str(m / "tmp"), output_dir=str(m / "out"),
                             event_log=str(m / "log/events.jsonl"), max_concurrent=3, rescan_interval="300ms",
                             download={"backoff": "50ms", "retries": 3})

    def start(self) -> None:
        self.daemon.start()
        self.fs.kill_on_cut(self.daemon.pid)

    def submit(self, job: Job) -> bool:
        """``videonote-dl submit``: True si devolvió el id (envío durable, confirmado al productor)."""
        url = self.server.url(f"/{job.id}.bin")
        try:
            return cli_main(["submit", url, "--id", job.id, "--config", str(self.daemon.config_path)]) == 0
        except OSError:
            return False  # el corte llegó a mitad del envío: nunca se confirmó

    def cancel(self, job_id: str) -> None:
        with contextlib.suppress(OSError):
            cli_main(["cancel", job_id, "--config", str(self.daemon.config_path)])

    def reboot(self) -> None:
        """El daemon ya murió en el corte; se monta lo durable y arranca otro daemon."""
        proc = self.daemon.proc
        assert proc is not None
        proc.wait(20)
        self.daemon._stderr.close()
        self.fs.unmount()
        self.fs = PowerFS(self.backing, self.mnt, seed=self.seed + 1, writeback="prefix").mount()
        self.daemon = self._new_daemon()
        self.start()

    def records(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for folder in ("done", "failed"):
            for path in (self.mnt / "spool" / folder).glob("*.json"):
                record = orjson.loads(path.read_bytes())
                found.setdefault(str(record["id"]), []).append((folder, record))
        return found

    def close(self) -> None:
        if self.daemon.proc is not None and self.daemon.proc.poll() is None:
            self.daemon.proc.kill()
            self.daemon.proc.wait(10)
        self.fs.unmount()


@pytest.fixture
def machine(tmp_path: Path, test_server: TestServer, request: pytest.FixtureRequest) -> Iterator[Machine]:
    seed = int(getattr(request, "param", 0))
    m = Machine(tmp_path, test_server, seed=seed)
    try:
        yield m
    finally:
        m.close()


def _incoming_empty(machine: Machine) -> bool:
    try:
        return not any((machine.mnt / "spool" / "incoming").iterdir())
    except OSError:
        return False


def _all_recorded(machine: Machine, ids: list[str]) -> bool:
    try:
        records = machine.records()
    except OSError:  # el corte llegó: el montaje ya sólo da EIO
        return False
    return all(job_id in records for job_id in ids)


def _cut_or_finished(machine: Machine, ids: list[str]) -> bool:
    return machine.fs.cut_reason is not None or _all_recorded(machine, ids)


def _run_batch(machine: Machine, jobs: list[Job], arm_after_start: int | None, cut_after_s: float | None,
               ) -> tuple[list[str], str | None]:
    """Envía la tanda con un corte armado; devuelve (envíos confirmados, motivo del corte o None)."""
    for job in jobs:
        machine.server.add(f"/{job.id}.bin", job.behavior)
    machine.start()
    if arm_after_start is not None:
        machine.fs.arm(machine.fs.stats()["boundaries"] + arm_after_start)
    started = time.monotonic()
    acknowledged: list[str] = []
    for job in jobs:
        if machine.submit(job):
            acknowledged.append(job.id)
    for job in jobs:
        if job.cancel and job.id in acknowledged:
            time.sleep(0.2)
            machine.cancel(job.id)
    if cut_after_s is not None:
        time.sleep(max(0.0, cut_after_s - (time.monotonic() - started)))
        machine.fs.cut()
    wait_until(lambda: _cut_or_finished(machine, acknowledged), 60, interval=0.05, what="the cut or the batch")
    return acknowledged, machine.fs.cut_reason


def _check_after_recovery(machine: Machine, jobs: list[Job], acknowledged: list[str], where: str) -> None:
    """Reinicia, deja terminar, para, y comprueba la promesa."""
    machine.reboot()
    # También lo que sobrevivió en incoming/ sin confirmarse al productor (el corte cayó entre su
    # rename y el fsync de la carpeta): es un trabajo como otro, y el daemon debe tomarlo.
    wait_until(lambda: _all_recorded(machine, acknowledged) and _incoming_empty(machine), 40, interval=0.1,
               what=f"records of every durable submission, and incoming/ taken, after a cut {where}")
    assert machine.daemon.stop() == 0, machine.daemon.stderr_text()
    settings = load_settings(machine.daemon.config_path)
    report = reap_temp_root(settings.temp_dir, max_age=0)
    assert report.errors == 0, where
    assert not machine.daemon.temp_dirs(), (where, machine.daemon.temp_dirs())
    by_id = {job.id: job for job in jobs}
    expected = {job_id: (None if by_id[job_id].cancel else by_id[job_id].sha256) for job_id in acknowledged}
    result = verify_spool(settings, expected=expected, daemon_stopped=True, check_events=False)
    assert result.ok, f"cut {where}:\n" + "\n".join(result.problems[:20])
    records = machine.records()
    rejected = {p.name.split(".", 1)[0] for p in (machine.mnt / "spool/rejected").iterdir()}
    for job_id, entries in records.items():
        assert len(entries) == 1, f"cut {where}: {job_id} has {len(entries)} records"
        assert job_id not in rejected, f"cut {where}: {job_id} has a record and was also rejected"
        folder, record = entries[0]
        if folder == "done":
            path = Path(record["path"])
            assert hashlib.sha256(path.read_bytes()).hexdigest() == by_id[job_id].sha256, (where, job_id)
    _check_event_log(settings.event_log, records, where)


def _check_event_log(log: Path, records: dict[str, list[tuple[str, dict[str, Any]]]], where: str) -> None:
    """Puede faltar la cola, pero nada roto, duplicado o fuera de orden; succeeded => done/."""
    raw = log.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"cut {where}: the event log ends in a torn line: {raw[-120:]!r}"
    succeeded: dict[str, int] = {}
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"cut {where}: torn event line {number}: {line[:120]!r}") from None
        if event.get("event") == "job.succeeded":
            succeeded[event["correlation_id"]] = succeeded.get(event["correlation_id"], 0) + 1
    problems = check_event_sequences(log, final=False)
    assert not problems, f"cut {where}:\n" + "\n".join(problems[:20])
    for job_id, count in succeeded.items():
        assert count == 1, f"cut {where}: {job_id} succeeded {count} times in the event log"
        assert records.get(job_id, [("", {})])[0][0] == "done", f"cut {where}: job.succeeded for {job_id} " \
                                                                 "but no record in done/"


def _power_cut_run(machine: Machine, arm: int | None = None, after_s: float | None = None) -> None:
    jobs = _batch(seed=machine.seed)
    acknowledged, reason = _run_batch(machine, jobs, arm, after_s)
    if reason is None:
        pytest.skip(f"the batch finished before boundary {arm}; lower BATCH_BOUNDARIES")
    _check_after_recovery(machine, jobs, acknowledged, reason)


@pytest.mark.parametrize("boundary", range(1, BATCH_BOUNDARIES, K))
def test_power_cut_at_every_kth_boundary(machine: Machine, boundary: int) -> None:
    _power_cut_run(machine, arm=boundary)


@pytest.mark.parametrize("machine", range(101, 107), indirect=True)
def test_power_cut_at_random_moments(machine: Machine) -> None:
    _power_cut_run(machine, after_s=random.Random(machine.seed).uniform(0.05, 2.5))


@pytest.mark.slow
@pytest.mark.parametrize("boundary", [b for b in range(1, BATCH_BOUNDARIES) if (b - 1) % K])
def test_power_cut_at_every_boundary(machine: Machine, boundary: int) -> None:
    _power_cut_run(machine, arm=boundary)


# Cada paso durable de un trabajo, en orden: (fsync que lo hace durable, patrón de su frontera).
# test_power_cut_before_each_durability_step corta justo antes de cada uno (y al final).
ONE_JOB_STEPS = [
    # Los temporales del spool tienen nombres imposibles de adivinar: el primero es el del productor,
    # el último el del registro.
    ("submit-data", r"fsync /spool/tmp/\.videonote-dl-[0-9a-f]+\.tmp$"),
    ("submit-name", r"fsyncdir /spool/incoming$"),
    ("temp-dir", r"fsyncdir /tmp$"),
    ("download-data", r"fsync /tmp/videonote_dl_one/download\.part$"),
    ("download-name", r"fsyncdir /tmp/videonote_dl_one$"),
    ("publish", r"fsyncdir /out$"),
    ("claim", r"fsyncdir /spool/active/[^/]+$"),
    ("record-data", r"fsync /spool/tmp/\.videonote-dl-[0-9a-f]+\.tmp$"),
    ("record-name", r"fsyncdir /spool/done$"),
]


def _one_job(seed: int) -> list[Job]:
    data = random.Random(seed).randbytes(300_000)
    return [Job("one", data, Behavior(data=data))]


@pytest.fixture(scope="module")
def one_job_trace(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Las fronteras de un trabajo sin corte (contadas desde que el daemon está listo)."""
    with TestServer() as server:
        m = Machine(tmp_path_factory.mktemp("dry"), server)
        try:
            jobs = _one_job(0)
            for job in jobs:
                server.add(f"/{job.id}.bin", job.behavior)
            m.start()
            start = m.fs.stats()["boundaries"]
            assert m.submit(jobs[0])
            wait_until(lambda: _all_recorded(m, ["one"]) and not m.daemon.temp_dirs(), 30, what="the dry run")
            time.sleep(0.3)
            return [line.split(" ", 1)[1] for line in m.fs.trace()[start:]]
        finally:
            m.close()


@pytest.mark.parametrize("step", [name for name, _ in ONE_JOB_STEPS] + ["end"])
def test_power_cut_before_each_durability_step(machine: Machine, one_job_trace: list[str], step: str) -> None:
    """Corta justo antes del fsync de cada paso de un trabajo (o tras el último): nada confirmado se pierde."""
    arm: tuple[str, int] | None = None
    if step != "end":
        pattern = dict(ONE_JOB_STEPS)[step]
        found = [n for n, line in enumerate(one_job_trace, 1) if re.search(pattern, line)]
        assert found, f"no boundary matches {pattern!r} in a job's trace:\n" + "\n".join(one_job_trace)
        # Por patrón y ocurrencia, no por número de frontera: una escritura de fondo del daemon
        # (estado, barridos) que caiga antes en esta vida y no en la de la traza no mueve el corte.
        arm = (pattern, len(found) if step == "record-data" else 1)
    jobs = _one_job(0)
    for job in jobs:
        machine.server.add(f"/{job.id}.bin", job.behavior)
    machine.start()
    if arm is not None:
        machine.fs.arm_match(*arm)
    acknowledged = ["one"] if machine.submit(jobs[0]) else []
    # El productor sólo recibe el id cuando su entrega es durable (fsync de incoming/).
    assert bool(acknowledged) == (step not in ("submit-data", "submit-name")), step
    wait_until(lambda: _cut_or_finished(machine, acknowledged) and (arm is not None or not machine.daemon.temp_dirs()),
               30, what=f"the cut before {step}")
    if arm is None:
        machine.fs.cut()
    assert machine.fs.cut_reason is not None
    _check_after_recovery(machine, jobs, acknowledged, f"before {step}: {machine.fs.cut_reason}")
    if acknowledged:
        assert machine.records()["one"][0][0] == "done"


def test_power_cut_after_the_record_keeps_a_file_published_into_a_new_output_subfolder(machine: Machine) -> None:
    data = random.Random(7).randbytes(50_000)
    machine.server.add("/nested.bin", Behavior(data=data))
    machine.start()
    url = machine.server.url("/nested.bin")
    assert cli_main(["submit", url, "--id", "nested", "--output-dir", "a/b",
                     "--config", str(machine.daemon.config_path)]) == 0
    wait_until(lambda: _all_recorded(machine, ["nested"]), 30, what="the record of nested")
    machine.fs.cut()  # el registro ya es durable: su archivo también debe serlo
    machine.reboot()
    assert machine.daemon.stop() == 0
    [(folder, record)] = machine.records()["nested"]
    assert folder == "done"
    assert hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
