"""Un systemd real y desechable para las pruebas: systemd-nspawn sobre el /usr del anfitrión.

El contenedor arranca con ``systemd-nspawn -D / --volatile=yes``: raíz tmpfs vacía, /usr del
anfitrión en solo lectura, red privada (solo su propio loopback), sin registro en machined (aquí
PID 1 no es systemd). Cada contenedor vive en su propio cgroup, que se borra al final; las órdenes
se ejecutan dentro con ``nsenter -t <PID 1 del contenedor> -a``. Los detalles medidos en esta
máquina están en shared/reference/systemd-nspawn.md.

Como solo /usr es compartido, el proyecto se monta en solo lectura bajo /opt y su venv se crea
dentro con /usr/bin/python3, sin red: ``build_wheelhouse`` reempaqueta como ruedas las
distribuciones ya instaladas en el venv de pruebas (las mismas versiones con las que pasa la suite)
y añade las dependencias de construcción (``build-system.requires``), que pip descarga una vez a
una caché desde el índice configurado.

Este archivo también es el servidor HTTP que corre DENTRO del contenedor
(``python3 nspawn.py serve PUERTO``): solo usa la biblioteca estándar en el nivel del módulo.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import http.server
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Container",
    "ContainerError",
    "build_wheelhouse",
    "nspawn_unavailable_reason",
    "pattern_bytes",
    "serve",
]

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ContainerError(AssertionError):
    """Algo falló dentro del contenedor; el mensaje incluye la salida y lo que se esperaba."""


# ---------------------------------------------------------------------------------------------
# Requisitos


def nspawn_unavailable_reason() -> str | None:
    """Por qué no se puede arrancar un systemd en un contenedor aquí, o ``None`` si se puede."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn boots a container and creates cgroups)"
    for tool in ("systemd-nspawn", "nsenter", "pgrep"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install systemd-container util-linux procps)"
    if not Path("/lib/systemd/systemd").exists() and not Path("/usr/lib/systemd/systemd").exists():
        return "no systemd binary under /usr to boot"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3 is missing: the container's venv is made with it"
    if shutil.which("make") is None:
        return "make is missing (make install runs inside the container)"
    if not _cgroup_hierarchies("probe"):
        return f"unknown cgroup layout under {CGROUP_ROOT}"
    return None


def _cgroup_hierarchies(name: str) -> list[Path]:
    """Los cgroups propios del contenedor: híbrido (v1 name=systemd + v2 unified) o v2 puro."""
    if (CGROUP_ROOT / "systemd").is_dir() and (CGROUP_ROOT / "unified").is_dir():
        return [CGROUP_ROOT / "systemd" / name, CGROUP_ROOT / "unified" / name]
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / name]
    if (CGROUP_ROOT / "systemd").is_dir():
        return [CGROUP_ROOT / "systemd" / name]
    return []


# ---------------------------------------------------------------------------------------------
# Ruedas sin red


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _wheel_name(name: str, version: str, tags: list[str]) -> str:
    """Nombre de archivo de una rueda con sus etiquetas comprimidas (PEP 425)."""
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for index, piece in enumerate(tag.split("-")):
            for value in piece.split("."):
                if value not in parts[index]:
                    parts[index].append(value)
    normalized = re.sub(r"[-_.]+", "_", name).lower()
    return f"{normalized}-{version}-{'.'.join(parts[0])}-{'.'.join(parts[1])}-{'.'.join(parts[2])}.whl"


def repack_distribution(dist: Any, dest: Path) -> Path:
    """Vuelve a empaquetar como rueda una distribución instalada (sus archivos según RECORD).

    Se omiten los scripts de entry_points.txt (fuera de site-packages: pip los regenera), los
    .pyc y los archivos que solo describen la instalación (INSTALLER, REQUESTED, direct_url.json).
    Los demás archivos de ``bin/`` (el binario ``deno`` de la rueda deno) vuelven a
    ``<nombre>-<versión>.data/scripts/``, de donde pip los instala en el ``bin/`` del venv.
    """
    wheel_text = dist.read_text("WHEEL")
    files = dist.files
    if not wheel_text or files is None:
        raise RuntimeError(f"{dist.metadata['Name']} has no WHEEL/RECORD: cannot repack it")
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    target = dest / _wheel_name(dist.metadata["Name"], dist.version, tags)
    skipped_meta = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    records: list[tuple[str, str, str]] = []
    dist_info = None
    tmp = target.with_suffix(".partial")
    generated = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    data_scripts = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}.data/scripts"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in files:
            posix = entry.as_posix()
            if posix.startswith("../../../bin/") and entry.name not in generated:
                data = Path(dist.locate_file(entry)).read_bytes()
                info = zipfile.ZipInfo(f"{data_scripts}/{entry.name}", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o100755 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
                records.append((info.filename, _record_hash(data), str(len(data))))
                continue
            if posix.startswith("..") or "__pycache__" in entry.parts or posix.endswith(".pyc"):
                continue
            if entry.parent.name.endswith(".dist-info"):
                dist_info = entry.parent.as_posix()
                if entry.name in skipped_meta:
                    continue
            source = Path(dist.locate_file(entry))
            data = source.read_bytes()
            # Con su modo: pip respeta el bit de ejecución (el ffmpeg de imageio-ffmpeg lo necesita).
            info = zipfile.ZipInfo(posix, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | (source.stat().st_mode & 0o755)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
            records.append((posix, _record_hash(data), str(len(data))))
        if dist_info is None:
            raise RuntimeError(f"{dist.metadata['Name']}: no .dist-info in RECORD")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows(records)
        writer.writerow((f"{dist_info}/RECORD", "", ""))
        archive.writestr(f"{dist_info}/RECORD", buffer.getvalue())
    tmp.replace(target)
    return target


def _runtime_distributions(project: str) -> list[Any]:
    """El cierre de dependencias de ``project`` entre lo instalado en este entorno, siguiendo los
    extras que piden las dependencias (``yt-dlp[default]`` trae yt-dlp-ejs, brotli, websockets...)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, Any] = {}
    expanded: set[tuple[str, str]] = set()  # (distribución, extra) ya recorridos; "" = sin extra
    pending: list[tuple[str, frozenset[str]]] = [(text, frozenset()) for text in metadata.requires(project) or []]
    while pending:
        text, extras = pending.pop()
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            continue
        key = canonicalize_name(requirement.name)
        dist = seen.get(key) or metadata.distribution(requirement.name)
        seen[key] = dist
        new = [extra for extra in ("", *sorted(requirement.extras)) if (key, extra) not in expanded]
        if not new:
            continue
        expanded.update((key, extra) for extra in new)
        asked = frozenset(extra for extra in new if extra)
        pending.extend((child, asked) for child in dist.requires or [])
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def build_wheelhouse(project_dir: Path, cache_root: Path) -> Path:
    """Directorio de ruedas para instalar el proyecto sin red (``pip --no-index --find-links``).

    Contiene las dependencias de ejecución reempaquetadas desde este entorno y las de
    construcción del proyecto. Se guarda en ``cache_root`` bajo una clave con las versiones, así
    que solo la primera ejecución paga el coste (y, si faltan, la descarga de las de construcción).
    """
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]["name"]
    build_requires = sorted(pyproject.get("build-system", {}).get("requires", []))
    dists = _runtime_distributions(project)
    key_text = "\n".join(["format 4", *(f"{d.metadata['Name']}=={d.version}" for d in dists), *build_requires])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    wheelhouse = cache_root / f"wheelhouse-{key}"
    if (wheelhouse / ".complete").exists():
        return wheelhouse
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache_root))
    try:
        for dist in dists:
            repack_distribution(dist, staging)
        from importlib import metadata

        missing = []
        for text in build_requires:
            requirement = Requirement(text)
            try:
                installed = metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                missing.append(text)
                continue
            if requirement.specifier.contains(installed.version, prereleases=True):
                repack_distribution(installed, staging)
            else:
                missing.append(text)
        if missing:
            # Solo las herramientas de construcción (setuptools, wheel y lo que pidan): pip, con
            # su índice configurado.
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--only-binary=:all:", "--dest", str(staging), *missing],
                capture_output=True, text=True, timeout=300, check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"pip download {missing} failed:\n{result.stdout}{result.stderr}")
        (staging / ".complete").write_text(key_text + "\n", encoding="utf-8")
        try:
            staging.rename(wheelhouse)
        except OSError:
            # Otra ejecución la dejó lista a la vez: vale la suya.
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return wheelhouse


# ---------------------------------------------------------------------------------------------
# El contenedor


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """``wait_until`` que, si vence el plazo, lanza ContainerError (el plazo no mide la velocidad)."""
    # Importado aquí: este archivo también corre dentro del contenedor (``serve``), con el python del
    # sistema, que no tiene las dependencias de daemon_proc (orjson, yaml).
    from tests.support.daemon_proc import wait_until

    return wait_until(predicate, timeout, interval=interval, what=what, error=ContainerError)


class Container:
    """Un systemd 252 arrancado con systemd-nspawn; usar como gestor de contexto.

    ``binds``: pares (ruta del anfitrión, ruta en el contenedor) montados en solo lectura;
    ``rw_binds``, en lectura y escritura (un spool compartido entre contenedores, por ejemplo).

    Con /etc vacío, el primer arranque aplicaría los presets de Debian ("enable *") a todo lo
    instalado en /usr (nginx, postgresql, systemd-networkd-wait-online, que espera 2 minutos a
    una red que no hay...). Un preset ``disable *`` montado en /etc/systemd/system-preset deja un
    sistema mínimo: journald, dbus y logind, que son estáticos.
    """

    def __init__(self, binds: Sequence[tuple[Path, str]] = (), name_prefix: str = "vdltest",
                 rw_binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.binds = list(binds)
        self.rw_binds = list(rw_binds)
        self.name = f"{name_prefix}{os.getpid()}{time.monotonic_ns() % 100000}"
        self.cgroups = _cgroup_hierarchies(self.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None
        self.boot_state = ""
        self._log = tempfile.TemporaryFile(prefix="nspawn-")  # noqa: SIM115 (vive lo que el contenedor)
        self._preset_dir = tempfile.TemporaryDirectory(prefix="nspawn-preset-")
        preset = Path(self._preset_dir.name) / "00-videonote-dl-tests.preset"
        preset.write_text("disable *\n", encoding="utf-8")
        self.binds.append((preset, "/etc/systemd/system-preset/00-videonote-dl-tests.preset"))
        self.started_at = 0.0

    # -- ciclo de vida ------------------------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> None:
        """Arranca el contenedor y espera a que su systemd esté ``running``."""
        self.started_at = time.monotonic()
        for path in self.cgroups:
            path.mkdir()
        cgroups = [str(path / "cgroup.procs") for path in self.cgroups]

        def enter_own_cgroup() -> None:
            # En el hijo, antes de exec: nspawn --keep-unit crea payload/ y supervisor/ bajo el
            # cgroup de quien lo lanza, así que cada contenedor necesita uno propio.
            for procs in cgroups:
                with open(procs, "w") as handle:
                    handle.write(str(os.getpid()))

        command = [
            "systemd-nspawn", "-q", "-D", "/", "--volatile=yes", "--private-network",
            "--register=no", "--keep-unit", "-M", self.name,
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds),
            *(f"--bind={host}:{inside}" for host, inside in self.rw_binds),
            "--console=read-only", "--boot", "systemd.firstboot=off",
        ]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=enter_own_cgroup, start_new_session=True,
        )

        def find_init() -> int | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.boot_log()}")
            found = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True, text=True, check=False
            )
            return int(found.stdout.split()[0]) if found.stdout.strip() else None

        self.init_pid = _wait(find_init, timeout, "the container's PID 1")
        _wait(lambda: self.run("test", "-S", "/run/systemd/private", check=False).returncode == 0,
              timeout, "systemd's private bus socket")
        self.boot_state = self.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()

    def stop(self) -> None:
        """Apaga el contenedor (poweroff, luego señales) y borra su cgroup. Idempotente."""
        if self.proc is not None and self.proc.poll() is None:
            if self.init_pid is not None:
                self.run("systemctl", "poweroff", check=False, timeout=30)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        for root in self.cgroups:
            if root.exists():
                for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda item: -len(item[0])):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)
        self._preset_dir.cleanup()

    def kill(self) -> None:
        """Mata el contenedor de golpe (SIGKILL a su PID 1: el núcleo mata todo su espacio de PID),
        como un host que se apaga sin avisar."""
        if self.init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def gone(self) -> list[str]:
        """Lo que queda del contenedor (vacío si no queda nada): procesos y cgroups."""
        left = []
        if self.proc is not None and self.proc.poll() is None:
            left.append(f"systemd-nspawn pid {self.proc.pid} still running")
        if self.init_pid is not None and Path(f"/proc/{self.init_pid}").exists():
            try:
                comm = Path(f"/proc/{self.init_pid}/comm").read_text().strip()
            except OSError:
                comm = ""
            if comm == "systemd":
                left.append(f"container init pid {self.init_pid} still alive")
        left.extend(f"cgroup {path} still exists" for path in self.cgroups if path.exists())
        return left

    def boot_log(self) -> str:
        """La salida de systemd-nspawn (consola del contenedor en solo lectura)."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-6000:]

    # -- órdenes dentro -----------------------------------------------------------------------

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Ejecuta una orden dentro del contenedor (como root) y devuelve su resultado en texto."""
        if self.init_pid is None:
            raise ContainerError("the container is not running")
        environment = {
            "PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0", "TERM": "dumb", **(env or {}),
        }
        data = input.encode() if isinstance(input, str) else input
        completed = subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-a", *args],
            input=data, capture_output=True, timeout=timeout, env=environment, check=False,
        )
        result = subprocess.CompletedProcess(
            completed.args, completed.returncode,
            completed.stdout.decode("utf-8", "replace"), completed.stderr.decode("utf-8", "replace"),
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"{' '.join(args)!r} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
                f"\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Un guion de /bin/sh dentro del contenedor (con ``set -e``)."""
        return self.run("/bin/sh", "-ec", script, **kwargs)

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        """Crea o reemplaza un archivo del contenedor."""
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, input=content)

    def read_file(self, path: str) -> str:
        return self.run("cat", path).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` como diccionario."""
        output = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        return _wait(predicate, timeout, what, interval=0.1)

    def journal(self, unit: str, lines: int = 200) -> str:
        result = self.run("journalctl", "-u", unit, "--no-pager", "-o", "short-monotonic",
                          "-n", str(lines), check=False)
        return result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# El servidor HTTP que corre dentro del contenedor


def pattern_bytes(size: int, seed: str = "videonote") -> bytes:
    """Contenido determinista de ``size`` bytes (para comprobar sumas sin transportar datos)."""
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB
    repeats = size // len(block) + 1
    return (block * repeats)[:size]


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/fast/N[/nombre]``: N bytes de golpe. ``/slow/N[/nombre]``: 1,5 MiB y luego 32 KiB/s.

    Ambas rutas dan un ETag fuerte y aceptan ``Range`` (con ``If-Range``); una petición con
    ``Range`` se sirve siempre rápido, así que una descarga lenta interrumpida y reanudada termina
    en cuanto se reanuda. Cada petición se anota en stderr (el journal de la unidad) con su Range.
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        match = re.fullmatch(r"/(fast|slow)/(\d+)(?:/[^/]*)?", self.path)
        if match is None:
            self.send_error(404)
            return
        kind, size = match.group(1), int(match.group(2))
        body = pattern_bytes(size)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        range_header = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", range_header)
        if ranged and (if_range is None or if_range == etag) and int(ranged.group(1)) < size:
            start = int(ranged.group(1))
        sys.stderr.write(f"http GET {self.path} range={range_header or '-'} start={start}\n")
        sys.stderr.flush()
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        try:
            if kind == "fast" or start:
                self.wfile.write(body[start:])
                return
            # Lo primero de golpe (el descargador escribe a disco por bloques de hasta 1 MiB, así
            # la prueba ve pronto datos parciales); el resto, a 32 KiB/s.
            head = min(size, 1536 * 1024)
            self.wfile.write(body[:head])
            for offset in range(head, size, 8192):
                self.wfile.flush()
                time.sleep(0.25)
                self.wfile.write(body[offset:offset + 8192])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Sin registro por petición de la clase base (do_GET ya anota lo útil)."""


def serve(port: int) -> None:
    """Sirve en 127.0.0.1:PUERTO y avisa a systemd (READY=1) cuando ya acepta conexiones."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address:
        target = "\0" + address[1:] if address.startswith("@") else address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.sendto(b"READY=1", target)
    server.serve_forever()


def _main(argv: Iterable[str]) -> int:
    args = list(argv)
    if len(args) == 2 and args[0] == "serve":
        serve(int(args[1]))
        return 0
    sys.stderr.write("usage: nspawn.py serve PORT\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
