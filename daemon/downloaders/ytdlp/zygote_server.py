"""Proceso auxiliar de yt-dlp: ejecución en proceso con la guarda de red y servidor de fork ("zigoto").

Este módulo sólo usa la biblioteca estándar (más ``yt_dlp``, importado cuando hace falta, y
``netguard.py``, cargado por ruta) para poder ejecutarse por ruta con
``python -P ruta/zygote_server.py ...`` sin importar el paquete ``daemon`` (más rápido y con menos
memoria en cada proceso; ``-P`` evita que el directorio del script entre en ``sys.path``).

Dos subórdenes:

``run ARGS...``
    Instala la guarda de red (``netguard.install_network_guard``: rechaza conexiones a
    direcciones no públicas) y ejecuta ``yt_dlp.main(ARGS)`` en este mismo proceso. Es la
    etapa 1 (un subproceso por trabajo) cuando el trabajo no admite redes privadas.

``serve FD``
    El zigoto: importa ``yt_dlp`` una sola vez, precompila las expresiones de todos los
    extractores, congela el GC y queda a la espera en el socket ``FD`` (``SOCK_SEQPACKET``).
    Cada petición es un JSON ``{"argv": [...], "cwd": "...", "guard": bool}`` con tres
    descriptores adjuntos (``SCM_RIGHTS``): stdout, stderr y un socket de estado. Por cada una
    hace ``fork()``; el hijo llama a ``setsid()`` (su propio grupo de procesos), escribe
    ``{"pid": N}`` en el socket de estado, redirige stdout/stderr y ejecuta ``yt_dlp.main(argv)``:
    las mismas opciones que la etapa 1, sin pagar el arranque del intérprete ni la importación.
    Cuando el hijo termina, el zigoto mata lo que quede en su grupo (con el líder aún zombi, así
    el pgid no puede reutilizarse), lo recoge con ``wait4`` y escribe
    ``{"returncode": N, "cpu_s": X, "maxrss_kb": M}`` en el socket de estado.
    Si el socket de control se cierra (el daemon terminó), termina los trabajos vivos y sale.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib.util
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["main", "run_ytdlp", "serve"]

_MAX_REQUEST = 1 << 20
_SHUTDOWN_GRACE = 3.0


def _load_netguard() -> ModuleType:
    """``daemon/downloaders/netguard.py``, la única guarda de direcciones.

    Importado como parte del paquete, se importa como siempre; ejecutado por ruta, se carga
    desde su archivo sin importar el paquete ``daemon`` (que costaría ~0,1 s por proceso).
    netguard sólo usa la biblioteca estándar, así que carga igual en los dos casos.
    """
    if __package__:
        return importlib.import_module("daemon.downloaders.netguard")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netguard.py")
    spec = importlib.util.spec_from_file_location("videonote_dl_netguard", path)
    if spec is None or spec.loader is None:  # pragma: no cover - el archivo es parte del paquete
        raise ImportError(f"cannot load the network guard from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_netguard = _load_netguard()


def run_ytdlp(argv: Sequence[str]) -> int:
    """Ejecuta ``yt_dlp.main(argv)`` en este proceso y devuelve su código de salida."""
    import yt_dlp  # type: ignore[import-untyped]

    try:
        yt_dlp.main(list(argv))
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return 1
    return 0


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


# --- zigoto --------------------------------------------------------------------------------
_WARM_UP_PAGE = """<!DOCTYPE html><html><head><title>warm-up</title>
<meta property="og:title" content="warm-up"></head><body>
<video controls><source src="/warm-up.mp4" type="video/mp4"></video>
</body></html>"""


class _NoNetwork:
    """Durante el precalentamiento, cualquier ``connect()`` falla: no sale ni un paquete."""

    def __enter__(self) -> None:
        cls = socket.socket
        self._saved = (cls.connect, cls.connect_ex)

        def refuse(_sock: socket.socket, address: Any) -> Any:
            raise PermissionError(errno.EACCES, f"no network during warm-up ({address!r})")

        cls.connect = refuse  # type: ignore[method-assign,assignment]
        cls.connect_ex = refuse  # type: ignore[method-assign,assignment]

    def __exit__(self, *_exc: object) -> None:
        socket.socket.connect, socket.socket.connect_ex = self._saved  # type: ignore[method-assign]


def _warm_up() -> str:
    """Importa y precalienta yt-dlp para que los hijos no paguen ese coste; devuelve la versión.

    Lo que se hace aquí una vez lo heredan todos los hijos por ``fork()``:

    - importar yt-dlp, el extractor genérico, descargadores, postprocesadores y ``ctypes``;
    - compilar el ``_VALID_URL`` de cada extractor (yt-dlp los recorre todos por trabajo);
    - pasar el extractor genérico por una página sin red, lo que importa los módulos reales de
      todos los extractores y compila sus expresiones de incrustación (~0,6 s por página HTML
      si no); la caché de ``re`` se agranda para que quepan todas;
    - memorizar el contexto SSL por parámetros (cargar los certificados cuesta ~25 ms); cada
      hijo recibe su propia copia del objeto, así que nada se comparte entre trabajos.

    Cualquier fallo aquí sólo hace más lentos a los hijos: nunca impide arrancar.
    """
    import ctypes  # noqa: F401 - setproctitle de yt-dlp lo importa en cada hijo
    import functools
    import re

    if getattr(re, "_MAXCACHE", 0) < 8192:
        re._MAXCACHE = 8192  # type: ignore[attr-defined]

    import yt_dlp
    import yt_dlp.downloader.http  # type: ignore[import-untyped]
    import yt_dlp.extractor.generic  # type: ignore[import-untyped]
    import yt_dlp.networking  # type: ignore[import-untyped]
    import yt_dlp.networking.common  # type: ignore[import-untyped]
    import yt_dlp.postprocessor  # type: ignore[import-untyped]
    from yt_dlp.extractor import gen_extractor_classes
    from yt_dlp.version import __version__  # type: ignore[import-untyped]

    with contextlib.suppress(Exception):
        original = yt_dlp.networking.common.make_ssl_context
        yt_dlp.networking.common.make_ssl_context = functools.lru_cache(maxsize=8)(original)

    for klass in gen_extractor_classes():
        with contextlib.suppress(Exception):
            klass.suitable("http://127.0.0.1/")
    with _NoNetwork(), contextlib.suppress(Exception):
        _parser, _opts, _urls, ydl_opts = yt_dlp.parse_options([
            "--ignore-config", "--no-plugin-dirs", "--no-cache-dir", "--quiet", "--no-warnings",
            "--simulate", "--no-progress", "--output=%(title).150B [%(id).60B].%(ext)s",
            "--print=before_dl:warm-up %(.{extractor_key,id,ext})j", "--max-filesize=1000",
        ])
        with yt_dlp.YoutubeDL(ydl_opts) as ydl:
            generic = ydl.get_info_extractor("Generic")
            with contextlib.suppress(Exception):
                list(generic._extract_embeds("http://127.0.0.1/warm-up", _WARM_UP_PAGE))
            # Selección de formato, plantillas y --print sobre un resultado sintético, sin red.
            with contextlib.suppress(Exception):
                media = "http://127.0.0.1/warm-up.mp4"
                ydl.process_ie_result({
                    "id": "warm-up", "title": "warm-up", "extractor": "generic", "extractor_key": "Generic",
                    "webpage_url": media, "formats": [{"url": media, "ext": "mp4", "format_id": "mp4"}],
                }, download=False)
            # Un contexto SSL por defecto, ya memorizado para los hijos.
            with contextlib.suppress(Exception):
                ydl._request_director.handlers  # noqa: B018
                for handler in ydl._request_director.handlers.values():
                    handler._make_sslcontext()
    return str(__version__)


class _Zygote:
    """Bucle del zigoto: peticiones por el socket de control, SIGCHLD por un pipe de aviso."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.jobs: dict[int, int] = {}  # pid del hijo -> fd del socket de estado
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self, version: str) -> int:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.control.setblocking(True)
        self._send_control({"ready": True, "pid": os.getpid(), "ytdlp_version": version})
        self.selector.register(self.control, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _events in self.selector.select():
                if key.fileobj is self.control:
                    if not self._handle_request():
                        self._shutdown()
                        return 0
                else:
                    self._drain_wakeup()
            self._reap()

    def _send_control(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_request(self) -> bool:
        """Atiende una petición; False si el socket de control se cerró (el daemon se fue)."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.control, _MAX_REQUEST, 3)
        except ConnectionResetError:
            return False
        if not data and not fds:
            return False
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return True
        out_fd, err_fd, status_fd = fds
        try:
            request = json.loads(data)
            argv = [str(a) for a in request["argv"]]
            cwd = str(request["cwd"])
            guard = bool(request.get("guard", True))
        except (ValueError, KeyError, TypeError) as exc:
            _write_status(status_fd, {"error": f"bad request: {exc}"})
            for fd in fds:
                os.close(fd)
            return True
        try:
            pid = os.fork()
        except OSError as exc:
            _write_status(status_fd, {"error": f"fork failed: {exc.strerror or exc}"})
            for fd in fds:
                os.close(fd)
            return True
        if pid == 0:  # pragma: no cover - corre en el hijo, que nunca vuelve
            _child_main(argv, cwd, guard, out_fd, err_fd, status_fd)
        os.close(out_fd)
        os.close(err_fd)
        self.jobs[pid] = status_fd
        return True

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            # El líder sigue siendo zombi: su pgid no puede haberse reutilizado. Se mata lo que
            # quede en el grupo (p. ej. un ffmpeg) antes de recogerlo.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            _pid, status, usage = os.wait4(pid, 0)
            status_fd = self.jobs.pop(pid, None)
            if status_fd is not None:
                _write_status(status_fd, {
                    "returncode": os.waitstatus_to_exitcode(status),
                    "cpu_s": round(usage.ru_utime + usage.ru_stime, 6),
                    "maxrss_kb": usage.ru_maxrss,
                })
                os.close(status_fd)

    def _shutdown(self) -> None:
        """El daemon se fue: TERM a cada grupo vivo, KILL tras una espera, recoger y salir."""
        for pid in list(self.jobs):
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + _SHUTDOWN_GRACE
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.jobs):
            _signal_group(pid, signal.SIGKILL)
        while self.jobs:
            self._reap()
            if self.jobs:
                time.sleep(0.01)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _write_status(fd: int, message: dict[str, Any]) -> None:
    # Si el daemon ya cerró su extremo, nadie espera el estado.
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode() + b"\n")


def _child_main(argv: list[str], cwd: str, guard: bool, out_fd: int, err_fd: int,
                status_fd: int) -> None:  # pragma: no cover - corre en el hijo
    """Cuerpo del hijo del zigoto: grupo propio, descriptores, yt-dlp y ``os._exit``."""
    code = 70  # EX_SOFTWARE si algo falla antes de llegar a yt-dlp
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # El pid se anuncia después de setsid(): cuando el daemon lo conoce, el grupo ya existe.
        _write_status(status_fd, {"pid": os.getpid()})
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, _max_fd())  # control, estado y descriptores de otros trabajos
        os.chdir(cwd)
        if guard:
            _netguard.install_network_guard()
        code = run_ytdlp(argv)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        _flush_std()
        os._exit(code)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 20)
    except (ValueError, OSError):
        return 4096


def serve(control_fd: int) -> int:
    """Arranca el zigoto sobre el socket de control heredado ``control_fd``."""
    control = socket.socket(fileno=control_fd)
    version = _warm_up()
    gc.collect()
    gc.freeze()  # los hijos no recorren (ni copian) los objetos del zigoto en cada GC
    return _Zygote(control).run(version)


def main(argv: Sequence[str] | None = None) -> int:
    """Punto de entrada: ``run ARGS...`` o ``serve FD``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        _netguard.install_network_guard()
        code = run_ytdlp(args[1:])
        _flush_std()
        return code
    if len(args) == 2 and args[0] == "serve" and args[1].isdigit():
        return serve(int(args[1]))
    sys.stderr.write("usage: zygote_server.py run YT-DLP-ARGS... | serve FD\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
