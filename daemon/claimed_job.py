"""ClaimedJob: un trabajo reclamado del spool y aceptado, mientras el daemon lo tiene entre manos."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.jobs import JobSpec

__all__ = ["ClaimedJob", "LiveJobs"]


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """El trabajo validado, el nombre de su archivo en ``active/<instancia>/`` y cuándo se recibió.

    ``submitter`` es el uid del dueño del archivo (``fstat`` al leerlo; -1 si no se sabe) y
    ``cancelled_by`` el del dueño del marcador ``cancel/<id>`` que se atendió."""

    job: JobSpec
    name: str
    received: float
    submitter: int = -1
    cancelled_by: int | None = None

    @property
    def id(self) -> str:
        return self.job.id


# Los trabajos vivos de este daemon (en cola o en curso), por id.
LiveJobs = dict[str, ClaimedJob]
