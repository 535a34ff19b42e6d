"""Entregar al spool como un productor: escribir en tmp/ y renombrar (la entrega es el rename)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from daemon.cli_errors import CliError, UsageError
from daemon.config import CONFIG_ENV_VAR, Settings, config_label
from daemon.durable import fsync_dir_via
from daemon.exit_codes import EXIT_NOT_FOUND, EXIT_PERMISSION
from daemon.permissions import permission_message

__all__ = ["Submission", "incoming_name", "own_outcome", "submit_job", "write_into_spool"]


def _spool_missing(settings: Settings, folder: Path) -> CliError:
    return CliError(
        f"spool folder {folder} does not exist ({config_label(settings)}). If this is the right config, the "
        "daemon has not run with it yet: start it (`make run` in a checkout; `sudo systemctl start videonote-dl` "
        f"when installed). Otherwise pass --config, set ${CONFIG_ENV_VAR}, or run from the folder that holds "
        "config.yaml", EXIT_NOT_FOUND)


def write_into_spool(settings: Settings, folder: str, name: str, data: bytes) -> Path:
    """Escribe en spool/tmp/ y entrega con rename() (la entrega es el rename)."""
    tmp_dir = settings.spool_dir / "tmp"
    target_dir = settings.spool_dir / folder
    try:
        present = target_dir.is_dir() and tmp_dir.is_dir()
    except PermissionError:
        present = True  # existe pero no se puede examinar: lo dirá el open() de abajo
    if not present:
        raise _spool_missing(settings, target_dir if not target_dir.is_dir() else tmp_dir)
    tmp = tmp_dir / f".videonote-dl-{secrets.token_hex(16)}.tmp"  # imposible de adivinar; nunca se sigue
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except PermissionError:
        raise CliError(permission_message(tmp_dir, "write into", config_label(settings), write=True),
                       EXIT_PERMISSION) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o640)  # legible por el daemon (grupo) aunque el umask del productor sea 077
        handle.write(data)
        handle.flush()
        os.fsync(fd)
        target = target_dir / name
        if os.path.lexists(target):
            tmp.unlink()
            raise UsageError(f"{target} already exists; choose another --id")
        try:
            os.rename(tmp, target)
        except PermissionError:
            tmp.unlink()
            raise CliError(permission_message(target_dir, "write into", config_label(settings), write=True),
                           EXIT_PERMISSION) from None
        # La entrega es durable (sobrevive a un corte de luz) con el fsync de la carpeta destino; un
        # productor no puede abrirla (incoming/ no es listable): entonces syncfs con el propio archivo.
        fsync_dir_via(target_dir, fd)
    return target


@dataclass(frozen=True, slots=True)
class Submission:
    """Lo que se entregó: el id, el nombre del archivo en incoming/ y el sha256 de sus bytes (el
    registro del daemon lo repite en ``job_file_sha256``: así se reconoce el propio trabajo)."""

    job_id: str
    name: str
    sha256: str


def incoming_name(job_id: str, suffix: str = ".yaml") -> str:
    """Nombre imposible de adivinar para un archivo de trabajo (incoming/ no es listable)."""
    return f"{job_id}.{secrets.token_hex(16)}{suffix}"


def submit_job(settings: Settings, job: dict[str, Any]) -> Submission:
    """Valida el trabajo como lo haría el daemon y lo deja en incoming/."""
    from daemon.jobs import JobLimits, JobRejected, parse_job

    job_id = str(job["id"])
    data = yaml.safe_dump(job, sort_keys=False).encode("utf-8")
    d = settings.download
    try:
        parse_job(data, f"{job_id}.yaml", JobLimits(d.allowed_schemes, d.max_bytes, settings.ytdlp.enabled))
    except JobRejected as exc:
        raise UsageError(f"the job would be rejected: {exc.reason}") from None
    from daemon.progress_view import find_outcome

    if find_outcome(settings.spool_dir, job_id) is not None:
        raise UsageError(f"id {job_id!r} already finished (`videonote-dl show {job_id}`); choose another --id")
    name = incoming_name(job_id)
    write_into_spool(settings, "incoming", name, data)
    return Submission(job_id, name, hashlib.sha256(data).hexdigest())


def own_outcome(spool: Path, submission: Submission) -> tuple[str, dict[str, Any]] | None:
    """El desenlace de ESTE envío: un registro con su ``job_file_sha256`` (nunca el de otro
    trabajo con el mismo id), o su rechazo (``rejected/<nombre>.reason``)."""
    for folder in ("done", "failed"):
        candidates = [spool / folder / f"{submission.job_id}.json"]
        with contextlib.suppress(OSError):
            candidates += sorted((spool / folder).glob(f"{submission.job_id}.*.json"))
        for path in candidates:
            try:
                data = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("job_file_sha256") == submission.sha256:
                return folder, data
    try:
        reason = (spool / "rejected" / f"{submission.name}.reason").read_text(errors="replace")
    except OSError:
        return None
    return "rejected", {"reason": reason.split("\n\nfile:", 1)[0].strip()}
