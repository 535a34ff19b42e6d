"""La línea de órdenes de yt-dlp: argumentos de un trabajo, intérprete y entorno del hijo.

Sólo llegan a yt-dlp la URL, ``format``, ``playlist``, ``max_bytes`` y las cabeceras de
``forward_headers`` de un trabajo. ``format`` y ``max_bytes`` van como un único elemento de argv
(``--opción=valor``): nada de un trabajo puede leerse como otra opción. La URL y las cabeceras no
van en argv (lo ve cualquiera con ``ps``): van en archivos 0600 del directorio aislado
(``inputs``), que argv sólo nombra. Todo lo demás lo fija este módulo.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.ytdlp.inputs import write_inputs
from daemon.downloaders.ytdlp.names import ITEM_TEMPLATE, SINGLE_TEMPLATE

__all__ = [
    "FILE_MARK",
    "INFO_MARK",
    "OUTPUT_TEMPLATE",
    "PROGRESS_MARK",
    "TEMP_SUBDIR",
    "ZYGOTE_SCRIPT",
    "build_argv",
    "child_env",
    "ytdlp_command",
]

# Marcas de las líneas que yt-dlp escribe por stdout para nosotros (plantillas de --print y de
# --progress-template). El resto de stdout son mensajes de pantalla ("[download] ...").
PROGRESS_MARK = "vndl:progress "
INFO_MARK = "vndl:info "
FILE_MARK = "vndl:file "

OUTPUT_TEMPLATE = SINGLE_TEMPLATE  # compatibilidad: el nombre fijo de un trabajo de un solo archivo
TEMP_SUBDIR = ".ytdlp"
# El proceso auxiliar (guarda de red y zigoto) se ejecuta por ruta, sin importar el paquete daemon.
ZYGOTE_SCRIPT = Path(__file__).with_name("zygote_server.py")


def build_argv(
    options: DownloadOptions,
    *,
    socket_timeout: float = 30.0,
    progress_delta: float = 0.25,
    fragment_retries: int = 3,
    ffmpeg: str | None = None,
    deno: str | None = None,
    concurrent_fragments: int = 1,
) -> list[str]:
    """Argumentos de yt-dlp para un trabajo (sin el intérprete).

    Escribe antes los archivos de la URL y de las cabeceras en el directorio aislado
    (``inputs.write_inputs``): argv sólo los nombra (``--batch-file``, ``--config-locations``).
    Cada otro valor que viene del trabajo es un único elemento de argv en la forma
    ``--opción=valor``, así que nunca puede leerse como otra opción. ``ffmpeg`` y ``deno`` son las
    rutas de ``tools`` (None: yt-dlp busca por su cuenta); el nombre de salida es fijo (``names``).
    """
    if options.output_path is None:
        raise ValueError("options.output_path is not set; run the download through DownloadLifecycle")
    home = str(options.output_path)
    temp = str(options.output_path / TEMP_SUBDIR)
    socket_timeout = max(1.0, min(float(socket_timeout), float(options.timeout)))
    argv = [
        "--ignore-config",
        "--no-plugin-dirs",
        "--no-cache-dir",
        "--yes-playlist" if options.playlist else "--no-playlist",
        # Lista: un elemento que falla hace fallar el trabajo entero (nada se publica a medias).
        "--abort-on-error" if options.playlist else "--no-abort-on-error",
        f"--paths=home:{home}",
        f"--paths=temp:{temp}",
        f"--output={ITEM_TEMPLATE if options.playlist else SINGLE_TEMPLATE}",
        # --print implica --quiet: --no-quiet deja los mensajes de pantalla en stdout (p. ej. el
        # aviso de --max-filesize, que no es un error) y --progress mantiene el progreso.
        "--no-quiet",
        "--progress",
        "--newline",
        "--color=never",
        f"--progress-delta={progress_delta:g}",
        f"--progress-template=download:{PROGRESS_MARK}"
        "%(progress.{status,downloaded_bytes,total_bytes,total_bytes_estimate,filename})j",
        f"--print=before_dl:{INFO_MARK}%(.{{extractor_key,extractor,id,ext,format_id}})j",
        f"--print=after_move:{FILE_MARK}%(.{{filepath,extractor_key,extractor,id,title,ext,playlist_index}})j",
        "--no-mtime",
        f"--socket-timeout={socket_timeout:g}",
        # Los reintentos de intentos completos son del gestor; dentro de un intento sólo se
        # reintentan fragmentos sueltos, y un fragmento perdido aborta (no un archivo corrupto).
        "--retries=0",
        "--extractor-retries=0",
        f"--fragment-retries={int(fragment_retries)}",
        "--abort-on-unavailable-fragments",
        f"--max-filesize={int(options.max_bytes)}",
        f"--concurrent-fragments={max(1, int(concurrent_fragments))}",
        # Sin componentes remotos: los scripts EJS vienen de la rueda yt-dlp-ejs, nunca de la red.
        "--no-remote-components",
    ]
    if ffmpeg:
        argv.append(f"--ffmpeg-location={ffmpeg}")
    if deno:
        argv.append(f"--js-runtimes=deno:{deno}")
    if options.format:
        argv.append(f"--format={options.format}")
    url_file, config_file = write_inputs(options)
    if config_file is not None:
        # Con --ignore-config, yt-dlp sólo carga los archivos que nombra --config-locations.
        argv.append(f"--config-locations={config_file}")
    argv.append(f"--batch-file={url_file}")
    return argv


def ytdlp_command(args: Sequence[str], *, guard: bool, python: str | None = None) -> list[str]:
    """Línea de órdenes de la etapa 1: ``python -P -m yt_dlp ARGS`` o, con guarda de red,
    ``python -P zygote_server.py run ARGS`` (el mismo ``yt_dlp.main`` con ``connect()`` vigilado).
    ``-P`` evita que el directorio actual (el del trabajo) entre en ``sys.path``."""
    interpreter = python or sys.executable
    if guard:
        return [interpreter, "-P", str(ZYGOTE_SCRIPT), "run", *args]
    return [interpreter, "-P", "-m", "yt_dlp", *args]


def child_env() -> dict[str, str]:
    """Entorno de yt-dlp y del zigoto: el del daemon, en UTF-8 y sin ganchos de arranque."""
    env = dict(os.environ)
    env.update(PYTHONUTF8="1", PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    for key in ("PYTHONSTARTUP", "PYTHONINSPECT", "YTDLP_NO_LAZY_EXTRACTORS"):
        env.pop(key, None)
    return env
