"""Comprobador de invariantes de un spool (``videonote-dl verify``), para pruebas y operadores.

Comprueba, con el daemon parado o en marcha:

- cada trabajo tiene exactamente un desenlace (done/, failed/ o rejected/);
- cada archivo publicado existe, tiene el tamaño y el sha256 de su registro (y, si se dan los
  esperados, los del servidor); no hay archivos parciales ni sin registro en la salida;
- con el daemon parado: active/ e incoming/ vacíos y ningún ``videonote_dl_*`` que no sea viejo
  para el recolector;
- cada línea del registro de eventos es JSON y los eventos de cada trabajo forman una
  secuencia válida del ciclo de vida (también a través de caídas y reinicios).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from daemon.config import Settings
from daemon.publish import STAGING_DIR
from daemon.publish_journal import journal_job_id
from daemon.sha import file_sha256

__all__ = ["VerifyReport", "check_event_sequences", "verify_spool"]

_RECORD_NAME = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,64})(?:\.(?P<n>\d+))?\.json$")

# Transiciones válidas del ciclo de vida por trabajo. "crashed" lo pone un daemon.starting.
_TRANSITIONS: dict[str, dict[str, str]] = {
    "none": {"job.received": "received", "job.rejected": "terminal", "job.requeued": "requeued",
             "job.recovered": "terminal"},
    "requeued": {"job.received": "received", "job.rejected": "terminal", "job.requeued": "requeued",
                 "job.recovered": "terminal"},
    "received": {"job.queued": "queued", "job.cancelled": "terminal", "job.rejected": "terminal",
                 "job.requeued": "requeued", "job.recorded": "recorded"},
    "queued": {"job.started": "running", "job.cancelled": "terminal", "job.requeued": "requeued",
               "job.recorded": "recorded"},
    "running": {"job.started": "running", "job.progress": "running", "job.retrying": "running",
                "job.publish_retrying": "running", "job.published": "published", "job.failed": "terminal",
                "job.cancelled": "terminal", "job.interrupted": "interrupted", "job.routed": "running",
                "job.postprocess_started": "running", "job.postprocess_finished": "running",
                "job.recorded": "recorded"},
    # Un fallo o una cancelación: el registro terminal (con fsync) va antes de su evento.
    "recorded": {"job.failed": "terminal", "job.cancelled": "terminal"},
    # Un registro que no se pudo escribir retira la publicación (job.unpublished) y se reintenta.
    "published": {"job.recorded": "published", "job.succeeded": "terminal", "job.published": "published",
                  "job.unpublished": "running"},
    "interrupted": {"job.requeued": "requeued"},
    "crashed": {"job.requeued": "requeued", "job.recovered": "terminal", "job.received": "received"},
    # Un duplicado de un id ya terminado se rechaza (con razón): el trabajo sigue terminado.
    "terminal": {"job.recorded": "terminal", "job.recovered": "terminal", "job.rejected": "terminal"},
}
_IGNORED = {"job.cancel_requested", "job.cancel_ignored", "job.cancel_too_late", "job.cancel_refused",
            "job.cancel_expired"}


@dataclass
class VerifyReport:
    """Problemas encontrados (vacío = todo bien) y cifras de lo revisado."""

    problems: list[str] = field(default_factory=list)
    jobs: int = 0
    published: int = 0
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _records(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = defaultdict(list)
    if folder.is_dir():
        for path in folder.iterdir():
            match = _RECORD_NAME.match(path.name)
            if match:
                found[match.group("id")].append(path)
    return found


def verify_spool(
    settings: Settings,
    expected: dict[str, str | None] | None = None,
    daemon_stopped: bool = True,
    check_events: bool = True,
    event_logs: Sequence[Path] = (),
) -> VerifyReport:
    """Revisa el spool, la salida, los temporales y el registro de ``settings``.

    ``expected``: id -> sha256 esperado (o None si se espera un fallo o no importa el contenido).
    ``event_logs``: los registros de todos los daemons del spool (uno por host); por defecto, el suyo.
    """
    report = VerifyReport()
    spool = settings.spool_dir
    done, failed = _records(spool / "done"), _records(spool / "failed")
    rejected_names = [p.name for p in (spool / "rejected").iterdir()
                      if not p.name.endswith(".reason")] if (spool / "rejected").is_dir() else []
    for job_id in sorted(set(done) | set(failed)):
        count = len(done.get(job_id, [])) + len(failed.get(job_id, []))
        if count != 1:
            report.problems.append(f"job {job_id} has {count} terminal records")
    report.jobs = len(set(done) | set(failed)) + len(rejected_names)
    if expected is not None:
        rejected_ids = {name.split(".", 1)[0] for name in rejected_names}
        for job_id, sha in expected.items():
            if job_id not in done and job_id not in failed and job_id not in rejected_ids:
                report.problems.append(f"job {job_id} has no terminal record (lost)")
            elif sha is not None and job_id not in done:
                report.problems.append(f"job {job_id} was expected to succeed but is not in done/")
    referenced: set[Path] = set()
    for job_id, paths in done.items():
        for path in paths:
            _check_published(path, job_id, expected, report, referenced)
    _check_output(settings.output_dir, referenced, report)
    if daemon_stopped:
        for folder in ("incoming", "active"):
            leftovers = [str(p.relative_to(spool)) for p in (spool / folder).rglob("*") if p.is_file()] \
                if (spool / folder).is_dir() else []
            if leftovers:
                report.problems.append(f"{folder}/ is not empty: {leftovers[:5]}")
    if check_events:
        report.problems.extend(check_event_sequences(list(event_logs) or settings.event_log, report,
                                                     final=daemon_stopped,
                                                     finished=set(done) | set(failed)))
    return report


def _check_published(record_path: Path, job_id: str, expected: dict[str, str | None] | None,
                     report: VerifyReport, referenced: set[Path]) -> None:
    try:
        record = orjson.loads(record_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        report.problems.append(f"record {record_path} is unreadable: {exc}")
        return
    path = Path(str(record.get("path", "")))
    referenced.add(path)
    if not path.is_file():
        report.problems.append(f"job {job_id}: published file {path} is missing")
        return
    report.published += 1
    if path.stat().st_size != record.get("size"):
        report.problems.append(
            f"job {job_id}: {path} has {path.stat().st_size} bytes, record says {record.get('size')}"
        )
        return
    actual = file_sha256(path)
    if actual != record.get("sha256"):
        report.problems.append(f"job {job_id}: sha256 of {path} does not match its record")
    want = (expected or {}).get(job_id)
    if want is not None and actual != want:
        report.problems.append(f"job {job_id}: sha256 of {path} does not match the source")


def _check_output(output: Path, referenced: set[Path], report: VerifyReport) -> None:
    if not output.is_dir():
        return
    for root, _dirs, files in os.walk(output):
        for name in files:
            path = Path(root) / name
            if STAGING_DIR in Path(root).parts and (job_id := journal_job_id(name)) is not None:
                report.problems.append(f"publication journal left in the output (job {job_id} was "
                                       f"publishing when its daemon stopped and has not been taken up again): {path}")
            elif name.startswith(".videonote-dl-") or name.endswith(".part") or STAGING_DIR in Path(root).parts:
                report.problems.append(f"partial file in the output: {path}")
            elif path not in referenced:
                report.problems.append(f"file in the output with no record (duplicate or orphan): {path}")


def check_event_sequences(
    event_log: Path | Sequence[Path], report: VerifyReport | None = None, final: bool = True,
    finished: set[str] | None = None,
) -> list[str]:
    """Cada línea es JSON y los eventos ``job.*`` de cada trabajo siguen el ciclo de vida.

    Con varios registros (un daemon por host sobre un spool compartido) se mezclan por ``ts``; un
    ``daemon.starting`` deja "crashed" los trabajos a medias de su propio registro, y un
    ``spool.peer_recovered`` los de la instancia muerta que nombra.
    """
    problems: list[str] = []
    states: dict[str, str] = defaultdict(lambda: "none")
    owner: dict[str, tuple[int, str]] = {}  # trabajo -> (registro, instancia) del último evento
    merged: list[tuple[str, int, Path, int, dict[str, Any]]] = []
    bases = [event_log] if isinstance(event_log, Path) else list(event_log)
    count = 0
    for index, base in enumerate(bases):
        for log in [*sorted(base.parent.glob(base.name + ".*"), reverse=True), base]:
            if not log.is_file():
                continue
            for number, line in enumerate(log.read_bytes().splitlines(), 1):
                count += 1
                try:
                    event: dict[str, Any] = orjson.loads(line)
                except orjson.JSONDecodeError:
                    problems.append(f"{log}:{number}: not JSON: {line[:80]!r}")
                    continue
                merged.append((str(event.get("ts", "")) if len(bases) > 1 else "", index, log, number, event))
    merged.sort(key=lambda item: item[0])  # estable: con un solo registro, el orden del archivo
    instance: dict[int, str] = {}
    for _ts, index, log, number, event in merged:
        name = str(event.get("event", ""))
        if name in ("daemon.starting", "spool.peer_recovered"):
            if name == "daemon.starting":
                instance[index] = str(event.get("instance", ""))
            for job_id, state in states.items():
                mine = owner.get(job_id, (index, ""))[0] == index if name == "daemon.starting" else (
                    owner.get(job_id, (-1, ""))[1] == str(event.get("instance")))
                if state != "terminal" and mine:
                    states[job_id] = "crashed"
            continue
        raw_id = event.get("correlation_id")
        if not name.startswith("job.") or raw_id is None or name in _IGNORED:
            continue
        job_id = str(raw_id)
        owner[job_id] = (index, instance.get(index, ""))
        state = states[job_id]
        nxt = _TRANSITIONS.get(state, {}).get(name)
        if nxt is None:
            problems.append(f"{log}:{number}: job {job_id}: {name} is not valid after state {state}")
            continue
        states[job_id] = nxt
    if report is not None:
        report.events = count
    if final:
        for job_id in sorted(finished or set()):
            if states.get(job_id) != "terminal":
                problems.append(f"job {job_id}: has a record but its events end in state {states.get(job_id)}")
    return problems
