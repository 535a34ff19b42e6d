"""config.yaml -> ajustes tipados, inmutables y validados, con los valores por defecto embebidos.

Cada clave se declara una sola vez en ``SCHEMA`` (tipo, valor por defecto, si se aplica en
caliente con SIGHUP y una línea de ayuda); de ahí salen la validación, los valores por defecto
y la referencia de docs/config.md, así que no pueden divergir.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from daemon import config_values as cv
from daemon.file_io import FILE_IO_MODES
from daemon.postprocess import PostprocessSettings, ffmpeg_setting, parse_profiles
from daemon.producer_settings import PRODUCER_SETTINGS, ProducerSettings
from daemon.units import parse_duration

__all__ = [
    "CONFIG_ENV_VAR",
    "SCHEMA",
    "SYSTEM_CONFIG",
    "ConfigError",
    "DownloadSettings",
    "MetricsSettings",
    "ProducerSettings",
    "ReaperSettings",
    "SettingSpec",
    "Settings",
    "YtdlpSettings",
    "config_label",
    "default_settings",
    "find_config",
    "load_settings",
    "restart_required_changes",
    "settings_diff",
    "shown_value",
]

CONFIG_ENV_VAR = "VIDEONOTE_DL_CONFIG"
SYSTEM_CONFIG = Path("/etc/videonote-dl/config.yaml")
LOCAL_CONFIG = Path("config.yaml")


class ConfigError(Exception):
    """Configuración inválida: el mensaje nombra archivo, clave y lo que se admite."""


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    """Ajustes de descarga (sección ``download``)."""

    timeout: float = 600.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0
    max_bytes: int = 10 * 1024**3
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()
    max_redirects: int = 10
    progress_interval: float = 1.0
    ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True)
class ReaperSettings:
    """Ajustes del recolector de directorios temporales (sección ``reaper``)."""

    interval: float = 600.0
    max_age: float = 3600.0


@dataclass(frozen=True, slots=True)
class YtdlpSettings:
    """Ajustes del descargador yt-dlp (sección ``ytdlp``)."""

    enabled: bool = True
    kill_grace: float = 5.0
    socket_timeout: float = 30.0
    zygote: bool = True
    ffmpeg: str = "auto"
    concurrent_fragments: int = 8


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Exposición de métricas Prometheus (sección ``metrics``); ``listen`` None: apagada."""

    listen: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Todos los ajustes del daemon. Las rutas ya están resueltas y son absolutas."""

    spool_dir: Path = Path("var/spool")
    temp_dir: Path = Path("var/tmp")
    output_dir: Path = Path("var/downloads")
    event_log: Path = Path("var/log/events.jsonl")
    status_file: Path = Path("var/run/status.json")
    max_concurrent: int = 4
    max_queued: int = 20000
    lookahead: int = 0
    max_running_per_submitter: int = 0
    watch: str = "auto"
    file_io: str = "auto"
    rescan_interval: float = 5.0
    shutdown_grace: float = 30.0
    log_level: str = "info"
    download: DownloadSettings = field(default_factory=DownloadSettings)
    reaper: ReaperSettings = field(default_factory=ReaperSettings)
    ytdlp: YtdlpSettings = field(default_factory=YtdlpSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    producers: ProducerSettings = field(default_factory=ProducerSettings)
    source: Path | None = None
    # Valores tal como se escribieron en el archivo (``10m``, no ``600.0``), por clave con punto.
    written: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """Descripción de una clave: tipo legible, conversor, valor por defecto y si es recargable."""

    key: str
    kind: str
    default: str
    live: bool
    help: str
    convert: Callable[[Any], Any] = field(repr=False, compare=False, default=lambda v: v)


SCHEMA: tuple[SettingSpec, ...] = (
    SettingSpec("spool_dir", "path", "var/spool", False, "spool root: tmp/ incoming/ active/ done/ ...", cv.path),
    SettingSpec("temp_dir", "path", "var/tmp", False, "root of the videonote_dl_* temp dirs", cv.path),
    SettingSpec("output_dir", "path", "var/downloads", False, "where finished files are published", cv.path),
    SettingSpec("event_log", "path", "var/log/events.jsonl", False, "JSON-lines event log", cv.path),
    SettingSpec("status_file", "path", "var/run/status.json", False, "live status, rewritten atomically", cv.path),
    SettingSpec("max_concurrent", "integer 1-1024", "4", True, "downloads running at once", cv.int_between(1, 1024)),
    SettingSpec("max_queued", "integer 1-1000000", "20000", True,
                "most jobs claimed and waiting in memory (lookahead claims fewer); the rest wait in incoming/",
                cv.int_between(1, 1_000_000)),
    SettingSpec("lookahead", "integer 0-10000", "0", True, "jobs claimed beyond free slots; 0: the highest "
                "priority starts next across a fleet (docs/operations.md)", cv.int_between(0, 10_000)),
    SettingSpec("max_running_per_submitter", "integer 0-1024", "0", True, "downloads one submitter (job file "
                "owner) may run at once; 0: no cap (equal priorities go round-robin anyway)", cv.int_between(0, 1024)),
    SettingSpec("watch", "auto|inotify|poll", "auto", False, "poll: periodic rescans only (NFS, CIFS, CephFS); "
                "auto picks poll on those", cv.choice("auto", "inotify", "poll")),
    SettingSpec("file_io", "auto|thread|inline", "auto", False, "where a small job's last file-system calls "
                "(fsync, publish, record) run: thread, so a slow disk never stalls the daemon; inline, on the "
                "event loop (~1 ms less CPU per job); auto: inline only if spool, temp and output are on tmpfs/ramfs",
                cv.choice(*FILE_IO_MODES)),
    SettingSpec("rescan_interval", "duration", "5s", True, "periodic rescan of incoming/ and sweep of active/ "
                "for a dead daemon's claims", cv.positive_duration),
    SettingSpec("shutdown_grace", "duration", "30s", True,
                "on stop, how long running downloads may finish", parse_duration),
    SettingSpec("log_level", "debug|info|warning|error", "info", True, "lowest level written", cv.log_level),
    SettingSpec("download.timeout", "duration", "10m", True, "limit for one attempt", cv.positive_duration),
    SettingSpec("download.retries", "integer 0-100", "3", True, "retries after transient errors",
                cv.int_between(0, 100)),
    SettingSpec("download.backoff", "duration", "1s", True, "base of the exponential backoff", parse_duration),
    SettingSpec("download.max_backoff", "duration", "5m", True, "cap of one backoff wait", parse_duration),
    SettingSpec("download.max_bytes", "size", "10GiB", True, "largest file accepted (jobs may lower it)",
                cv.positive_size),
    SettingSpec("download.allowed_schemes", "list of http, https", "[http, https]", True,
                "URL schemes a job may use", cv.schemes),
    SettingSpec("download.allow_private_networks", "boolean", "false", True,
                "allow loopback/private/link-local targets", cv.boolean),
    SettingSpec("download.allowed_networks", "list of CIDR networks", "[]", True,
                "private networks allowed even with allow_private_networks: false (e.g. [10.1.2.0/24]); "
                "checked on every redirect hop", cv.networks),
    SettingSpec("download.max_redirects", "integer 0-50", "10", True, "redirect hops followed",
                cv.int_between(0, 50)),
    SettingSpec("download.progress_interval", "duration", "1s", True, "least time between job.progress events",
                cv.positive_duration),
    SettingSpec("download.ca_bundle", "path or empty", "\"\"", False,
                "PEM file of extra CA certificates trusted for https:// (on top of the system's), e.g. your "
                "own CA; checked at start-up", cv.optional_path),
    SettingSpec("reaper.interval", "duration", "10m", True, "time between reaper passes", cv.positive_duration),
    SettingSpec("reaper.max_age", "duration", "1h", True, "age after which an unlocked temp dir is stale",
                parse_duration),
    SettingSpec("ytdlp.enabled", "boolean", "true", False, "allow the yt-dlp downloader", cv.boolean),
    SettingSpec("ytdlp.kill_grace", "duration", "5s", False, "TERM-to-KILL wait for a yt-dlp process",
                parse_duration),
    SettingSpec("ytdlp.socket_timeout", "duration", "30s", False,
                "yt-dlp --socket-timeout (capped by the job's timeout)", cv.positive_duration),
    SettingSpec("ytdlp.zygote", "boolean", "true", False,
                "fork each yt-dlp job from a warm helper process (~0.1 s CPU per job instead of ~0.6 s)",
                cv.boolean),
    SettingSpec("ytdlp.ffmpeg", "auto or absolute path", "auto", False, "ffmpeg for yt-dlp and post-processing; "
                "auto: ffmpeg on PATH, else the static build of the imageio-ffmpeg wheel", ffmpeg_setting),
    SettingSpec("ytdlp.concurrent_fragments", "integer 1-64", "8", False,
                "HLS/DASH fragments fetched at once per job (yt-dlp -N)", cv.int_between(1, 64)),
    SettingSpec("postprocess.profiles", "mapping", "{}", False, "post-processing programs a job picks by name "
                "(`postprocess: NAME`): NAME: {command: [argv with {input} and {output}], timeout, extension}; "
                "docs/ytdlp.md", parse_profiles),
    SettingSpec("metrics.listen", "host:port or socket path", "null", False,
                "serve Prometheus /metrics on this TCP address (e.g. 127.0.0.1:9464) or unix socket "
                "(a relative path resolves against the config's folder); null: off (docs/operations.md)",
                cv.listen),
    *(SettingSpec(*row) for row in PRODUCER_SETTINGS),
)
_SPECS = {spec.key: spec for spec in SCHEMA}
_SECTIONS = {"download": DownloadSettings, "reaper": ReaperSettings, "ytdlp": YtdlpSettings,
             "metrics": MetricsSettings, "postprocess": PostprocessSettings,
             "producers": ProducerSettings}


def default_settings(base_dir: Path | None = None) -> Settings:
    """Ajustes por defecto con las rutas resueltas contra ``base_dir`` (por defecto, el cwd)."""
    return _resolve_paths(Settings(), base_dir or Path.cwd())


def _resolve_paths(settings: Settings, base_dir: Path) -> Settings:
    host = socket.gethostname().replace("/", "_") or "localhost"  # ``{host}``: uno por máquina
    resolved: dict[str, Any] = {
        spec.key: (base_dir / str(getattr(settings, spec.key)).replace("{host}", host)).resolve()
        for spec in SCHEMA
        if spec.kind == "path"
    }
    if settings.download.ca_bundle is not None:
        resolved["download"] = replace(settings.download, ca_bundle=(base_dir / settings.download.ca_bundle).resolve())
    listen = settings.metrics.listen
    if listen is not None and "/" in listen:  # socket unix: relativo a la carpeta del config, como las rutas
        resolved["metrics"] = replace(settings.metrics, listen=str((base_dir / listen).resolve()))
    return replace(settings, **resolved)


def find_config(explicit: Path | str | None = None) -> tuple[Path | None, str]:
    """Qué archivo usar y por qué: ``--config``, si no ``$VIDEONOTE_DL_CONFIG``, si no ``./config.yaml``
    si existe, si no ``/etc/videonote-dl/config.yaml`` si existe; si no, (None, valores por defecto)."""
    if explicit is not None:
        return Path(explicit).absolute(), "--config"
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env).absolute(), f"${CONFIG_ENV_VAR}"
    if LOCAL_CONFIG.is_file():
        return LOCAL_CONFIG.absolute(), "./config.yaml"
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG, "system config"
    return None, "built-in defaults"


def config_label(settings: Settings) -> str:
    """Cómo nombrar la configuración en uso en un mensaje de error."""
    if settings.source is not None:
        return f"config {settings.source}"
    return (f"built-in defaults (no --config, no ${CONFIG_ENV_VAR}, no ./config.yaml, no {SYSTEM_CONFIG}; "
            f"paths relative to {Path.cwd()})")


def load_settings(path: Path | str | None = None) -> Settings:
    """Lee y valida la configuración que elige ``find_config(path)``; sin archivo, los valores por defecto."""
    found, _origin = find_config(path)
    if found is None:
        return default_settings()
    path = found
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass an existing file with --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys like max_concurrent: 4")
    written: dict[str, Any] = {}
    settings = _apply(document, path, written)
    settings = replace(_resolve_paths(settings, path.parent), source=path, written=written)
    _check_ca_bundle(settings, path)
    return settings


def _check_ca_bundle(settings: Settings, path: Path) -> None:
    """``download.ca_bundle`` debe poder cargarse ya: mejor un error al arrancar que en cada descarga."""
    from daemon.downloaders.netguard import tls_context

    bundle = settings.download.ca_bundle
    if bundle is None:
        return
    try:
        tls_context(bundle)
    except (OSError, ValueError) as exc:  # ssl.SSLError es un OSError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{path}: bad value for 'download.ca_bundle': cannot load {bundle} as PEM CA certificates "
            f"({reason}); give a PEM file with one or more -----BEGIN CERTIFICATE----- blocks"
        ) from None


def shown_value(settings: Settings, key: str) -> str:
    """El valor de ``key`` para mostrarlo a una persona: duraciones y tamaños tal como se escribieron
    (``10m``, ``10GiB``; los por defecto, como se documentan), el resto con su valor efectivo."""
    spec = _SPECS[key]
    if spec.kind in ("duration", "size"):
        raw = settings.written.get(key, spec.default)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return f"{raw}s" if spec.kind == "duration" else f"{raw}B"
        return str(raw)
    value = _lookup(settings, key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (off)"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _apply(document: Mapping[str, Any], path: Path, written: dict[str, Any] | None = None) -> Settings:
    written = {} if written is None else written
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in document.items():
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: key '{key}' must be a mapping of its sub-keys")
            for sub_key, sub_value in value.items():
                sections[key][sub_key] = _convert(f"{key}.{sub_key}", sub_value, path)
                written[f"{key}.{sub_key}"] = sub_value
        elif "." in str(key) and str(key).split(".", 1)[0] in _SECTIONS:
            # ``download.timeout: 5s`` en la raíz: se rechaza con un mensaje que dice cómo anidarla.
            section, sub_key = str(key).split(".", 1)
            raise ConfigError(
                f"{path}: unknown key '{key}' at the top level; nest it instead: "
                f"'{section}:' and, indented on the next line, '{sub_key}: ...'"
            )
        else:
            top[key] = _convert(str(key), value, path)
            written[str(key)] = value
    built = {name: cls(**sections[name]) for name, cls in _SECTIONS.items()}
    return Settings(**top, **built)


def _convert(key: str, value: Any, path: Path) -> Any:
    spec = _SPECS.get(key)
    if spec is None:
        allowed = ", ".join(s.key for s in SCHEMA)
        raise ConfigError(f"{path}: unknown key '{key}'; allowed keys: {allowed}")
    try:
        return spec.convert(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: bad value for '{key}': {exc} (expected {spec.kind})") from None


def settings_diff(old: Settings, new: Settings) -> list[str]:
    """Claves (con punto) cuyo valor cambió entre dos ajustes."""
    changed = []
    for spec in SCHEMA:
        if _lookup(old, spec.key) != _lookup(new, spec.key):
            changed.append(spec.key)
    return changed


def restart_required_changes(old: Settings, new: Settings) -> list[str]:
    """Claves cambiadas que no se pueden aplicar en caliente (hace falta reiniciar)."""
    return [key for key in settings_diff(old, new) if not _SPECS[key].live]


def _lookup(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_schema_matches_dataclasses() -> None:
    # Garantía interna: cada campo de los dataclasses tiene su clave en SCHEMA y viceversa.
    keys = {f.name for f in fields(Settings) if f.name not in _SECTIONS and f.name not in ("source", "written")}
    for name, cls in _SECTIONS.items():
        keys |= {f"{name}.{f.name}" for f in fields(cls)}
    if keys != set(_SPECS):
        raise RuntimeError(f"config SCHEMA and dataclasses disagree: {sorted(keys ^ set(_SPECS))}")


_check_schema_matches_dataclasses()
