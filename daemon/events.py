"""Registro de eventos: loggers de structlog con una cadena propia.

Cada evento es un objeto JSON en una línea del registro de eventos, escrito con un único
write(2) sobre un descriptor abierto con O_APPEND, de modo que escritores concurrentes (hilos o
procesos) nunca intercalan líneas. Además se escribe una línea legible en stderr (para el journal).
El archivo se reabre a demanda (SIGHUP, logrotate).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
import structlog

from daemon.durable import fsync_dir
from daemon.redaction import redact, scrub_secrets, set_redacted_query_params
from daemon.text import printable
from daemon.units import utc_timestamp

__all__ = [
    "EventLogFile",
    "EventLogger",
    "EventObserver",
    "add_event_observer",
    "bind_correlation_id",
    "configure_events",
    "event_log_write_errors",
    "get_logger",
    "redact",
    "remove_event_observer",
    "reopen_event_log",
    "set_log_level",
    "set_redacted_query_params",
]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_threshold = _LEVELS["info"]


class EventLogFile:
    """Archivo de eventos en modo append, reabrible, que nunca hace caer al daemon.

    ``write`` hace un único write(2) por evento. Si el disco se llena o falla la escritura,
    el evento se descarta y se avisa por stderr (como mucho una vez cada 10 s).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._last_error_report = float("-inf")  # el primer fallo se avisa siempre
        self.dropped = 0
        self.reopen()

    def reopen(self) -> None:
        """Cierra y vuelve a abrir el archivo (tras logrotate)."""
        with self._lock:
            old, self._fd = self._fd, None
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
                if created:  # el nombre del registro nuevo sobrevive a un corte de luz
                    with contextlib.suppress(OSError):
                        fsync_dir(self.path.parent)
                else:
                    _repair_torn_tail(self.path, self._fd)
            if old is not None:
                os.close(old)

    def write(self, data: bytes) -> None:
        try:
            # Bajo el cerrojo: ``reopen`` no puede cerrar el descriptor entre leerlo y escribir
            # (su número podría reutilizarse para otro archivo y el evento acabaría allí).
            # structlog ya serializa las escrituras de este objeto, así que no añade espera.
            with self._lock:
                fd = self._fd
                if fd is None:
                    return
                written = os.write(fd, data)
                if written != len(data):  # escritura parcial (disco casi lleno): no dejar una línea rota
                    _drop_partial_line(fd, written)
                    raise OSError(28, "short write to event log")
        except OSError as exc:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_error_report > 10:
                self._last_error_report = now
                sys.stderr.write(
                    f"videonote-dl: cannot write event log {self.path}: {exc.strerror or exc}; "
                    f"{self.dropped} event(s) dropped so far, downloads continue\n"
                )

    def flush(self) -> None:
        """Nada que vaciar: cada evento ya fue un write(2)."""

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _drop_partial_line(fd: int, written: int) -> None:
    """Quita del final del archivo los ``written`` bytes de una línea a medias.

    Sin esto, el siguiente evento (cuando vuelva a haber sitio) se pegaría al trozo y la línea
    resultante no sería JSON. Sólo se recorta si el trozo sigue siendo lo último del archivo (con
    O_APPEND, la posición tras write(2) es el final de lo escrito): otro proceso pudo añadir detrás.
    """
    with contextlib.suppress(OSError):  # no es un archivo normal (tubería, /dev/full): nada que recortar
        end = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - written)


_TAIL_SCAN = 1 << 20


def _repair_torn_tail(path: Path, fd: int) -> None:
    """Quita una última línea sin ``\\n`` (cortada por un corte de luz a mitad de volcado).

    Nunca se confirmó (el evento no llegó entero al disco): se descarta para que el siguiente
    evento no se pegue a ella y forme una línea que no es JSON. Se busca el último ``\\n`` en el
    último MiB; si no lo hay y el archivo es más largo, no se toca nada.
    """
    with contextlib.suppress(OSError):
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(path, "rb") as reader:
            start = max(0, size - _TAIL_SCAN)
            reader.seek(start)
            tail = reader.read(size - start)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and start > 0:
            return
        # Otro proceso que comparte el registro puede estar a mitad de un write(2) (un lector ve la
        # línea a medias): sólo es una cola rota si sigue igual un instante después. Nunca se corta
        # lo que otro escritor está añadiendo.
        time.sleep(_TORN_RECHECK)
        if os.fstat(fd).st_size != size:
            return
        keep = start + cut + 1
        os.ftruncate(fd, keep)
        sys.stderr.write(f"videonote-dl: dropped a torn last line ({size - keep} bytes) from the event log {path}; "
                         "it was cut by a crash or power loss\n")


_TORN_RECHECK = 0.05
_log_file: EventLogFile | None = None
_stderr_enabled = True

# Observadores del flujo de eventos (las métricas): reciben (nombre, campos) de cada evento, antes
# del filtro de nivel, así que ``log_level: warning`` no les quita nada. Nunca rompen un evento.
EventObserver = Callable[[str, Mapping[str, Any]], None]
_observers: tuple[EventObserver, ...] = ()


def add_event_observer(observer: EventObserver) -> None:
    """Llama a ``observer(nombre, campos)`` por cada evento que se emita desde ahora."""
    global _observers
    _observers = (*_observers, observer)


def remove_event_observer(observer: EventObserver) -> None:
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


def event_log_write_errors() -> int:
    """Eventos descartados porque el registro no se pudo escribir (disco lleno, E/S) desde el arranque."""
    return _log_file.dropped if _log_file is not None else 0


def _notify_observers(event_dict: Mapping[str, Any]) -> None:
    fields = event_dict
    if "correlation_id" not in event_dict:
        bound = _correlation_id.get()
        if bound is not None:
            fields = {**event_dict, "correlation_id": bound}
    name = str(event_dict.get("event"))
    for observer in _observers:
        with contextlib.suppress(Exception):  # una métrica rota no puede perder un evento
            observer(name, fields)


# Métodos del logger que son alias de un nivel: ``exception`` es ``error`` con la traza adjunta.
_METHOD_LEVELS = {"warn": "warning", "exception": "error", "err": "error", "fatal": "critical", "msg": "info",
                  "log": "info", "failure": "error"}

# El id de correlación de la tarea (o hilo) actual. Es una ContextVar propia: ``asyncio.to_thread``
# y las tareas nuevas la heredan, y no depende de la configuración global de structlog.
_correlation_id: ContextVar[str | None] = ContextVar("videonote_dl_correlation_id", default=None)


def _render(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    """Toda la cadena de un evento en un solo procesador, en este orden.

    Observadores (antes del filtro de nivel), nivel, traza de la excepción, id de correlación (la
    clave explícita manda, aunque sea None), ``ts``, secretos fuera, claves en orden, eco en stderr
    y la línea JSON con su ``\\n``. Un procesador en vez de nueve: cada evento cuesta menos (el
    daemon emite ocho por trabajo) y la línea que sale es la misma, byte a byte.
    """
    if _observers:
        _notify_observers(event_dict)
    level = _METHOD_LEVELS.get(method, method)
    if _LEVELS.get(level, 20) < _threshold:
        raise structlog.DropEvent
    if method == "exception":
        event_dict.setdefault("exc_info", True)
    event_dict["level"] = level
    if "exc_info" in event_dict:
        event_dict = _format_exc_info(logger, method, event_dict)  # exc_info -> "exception" (la traza)
    if "correlation_id" not in event_dict:
        bound = _correlation_id.get()
        if bound is not None:
            event_dict["correlation_id"] = bound
    event_dict["ts"] = utc_timestamp(time.time())
    ordered = _order_keys(scrub_secrets(logger, method, event_dict))
    if _stderr_enabled:
        _echo_to_stderr(ordered)
    return _serialize(ordered) + b"\n"


_format_exc_info = structlog.processors.format_exc_info


def _order_keys(event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    ordered: dict[str, Any] = {"ts": event_dict.pop("ts"), "level": event_dict.pop("level"),
                               "event": event_dict.pop("event")}
    cid = event_dict.pop("correlation_id", None)
    if cid is not None:
        ordered["correlation_id"] = cid
    ordered.update(event_dict)
    return ordered


def _echo_to_stderr(event_dict: Mapping[str, Any]) -> None:
    cid = event_dict.get("correlation_id")
    # ``_order_keys`` dejó delante ts, level, event y (si lo hay) correlation_id: el resto, en
    # su orden, son las claves propias del evento.
    extras = " ".join([f"{k}={v}" for k, v in islice(event_dict.items(), 3 if cid is None else 4, None)])
    prefix = f"[{cid}] " if cid else ""
    line = f"{event_dict['level'].upper():7} {event_dict['event']} {prefix}{extras}".rstrip()
    with contextlib.suppress(OSError, ValueError):  # stderr cerrado: el archivo JSON manda
        sys.stderr.write(printable(line) + "\n")


def _serialize(event_dict: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(event_dict, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # Texto que no es UTF-8 válido (p. ej. un nombre de archivo con bytes sueltos): escaparlo.
        return orjson.dumps(_escape_strings(event_dict), default=str, option=orjson.OPT_NON_STR_KEYS)


def _escape_strings(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _escape_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_strings(v) for v in value]
    return value


class _EventSink:
    """El destino de los loggers: la línea ya hecha va al registro de eventos actual.

    Se lee ``_log_file`` en cada evento, así que los loggers creados al importar un módulo (antes de
    ``configure_events``) escriben en el archivo que se configure después. Sin archivo, sólo queda
    el eco en stderr.
    """

    def msg(self, line: bytes) -> None:
        log_file = _log_file
        if log_file is not None:
            log_file.write(line)

    debug = info = warning = warn = error = err = exception = critical = fatal = log = failure = msg


_SINK = _EventSink()


class _EventBoundLogger(structlog.BoundLoggerBase):
    """Un logger de structlog con los métodos de nivel y un único procesador, ``_render``."""

    def debug(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("debug", event, **keys)

    def info(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("info", event, **keys)

    def warning(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("warning", event, **keys)

    def error(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("error", event, **keys)

    def exception(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("exception", event, **keys)

    def critical(self, event: str, **keys: Any) -> Any:
        return self._proxy_to_logger("critical", event, **keys)

    warn = warning
    fatal = critical


def configure_events(event_log: Path | None, level: str = "info", stderr: bool = True) -> EventLogFile:
    """Abre el registro de eventos del proceso (llamadas siguientes cambian el archivo).

    No toca la configuración global de structlog: los loggers del daemon llevan su propia cadena,
    y una aplicación que importe el paquete conserva la suya.
    """
    global _log_file, _stderr_enabled
    set_log_level(level)
    _stderr_enabled = stderr
    if _log_file is not None:
        # Se le cambia la ruta y se reabre el mismo objeto: quien lo tenga (``videonote-dl run``)
        # sigue viendo el archivo en uso.
        _log_file.path = event_log
        _log_file.reopen()
        return _log_file
    _log_file = EventLogFile(event_log)
    return _log_file


def set_log_level(level: str) -> None:
    """Cambia el nivel mínimo en caliente (SIGHUP)."""
    global _threshold
    _threshold = _LEVELS[level.lower()]


def reopen_event_log() -> None:
    """Reabre el registro de eventos (logrotate movió el archivo)."""
    if _log_file is not None:
        _log_file.reopen()


class EventLogger(Protocol):
    """Lo que el daemon usa de un logger: un nombre de evento (``area.what``) y claves."""

    def debug(self, event: str, **keys: Any) -> Any: ...
    def info(self, event: str, **keys: Any) -> Any: ...
    def warning(self, event: str, **keys: Any) -> Any: ...
    def error(self, event: str, **keys: Any) -> Any: ...
    def exception(self, event: str, **keys: Any) -> Any: ...


def get_logger(**initial: Any) -> EventLogger:
    """Devuelve un logger de eventos; ``initial`` se enlaza a cada evento que emita."""
    logger = structlog.wrap_logger(_SINK, processors=[_render], wrapper_class=_EventBoundLogger)
    return cast(EventLogger, logger.bind(**initial))


def bind_correlation_id(correlation_id: str | None) -> None:
    """Enlaza el id de correlación al contexto de la tarea (o hilo) actual."""
    _correlation_id.set(correlation_id)
