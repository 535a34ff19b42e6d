"""Lo secreto de un trabajo yt-dlp llega en archivos 0600 del directorio aislado, nunca en argv.

El argv de un proceso lo ve cualquiera (``ps``, ``/proc/<pid>/cmdline``), y la URL puede llevar
un token en la consulta. Por eso la URL va en un archivo de lotes (``--batch-file``) y las
cabeceras en un archivo de configuración de yt-dlp (``--config-locations``), ambos dentro del
directorio aislado del trabajo (0700, del daemon), creados con ``O_EXCL|O_NOFOLLOW`` y modo 0600.

Cabeceras: yt-dlp envía ``--add-headers`` a *todos* los hosts que visita (la página, el CDN de
los fragmentos, lo que un extractor pida) y conserva ``Authorization`` tras una redirección a
otro origen. El contrato de ``headers`` (sólo al origen de ``url``) no se puede cumplir ahí, así
que sólo llegan a yt-dlp las cabeceras nombradas en ``forward_headers`` (las que el productor
permitió enviar a cualquier origen); las demás se retienen y ``ytdlp.started`` dice cuáles.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from daemon.downloaders.base import DownloadOptions

__all__ = ["CONFIG_FILE", "URL_FILE", "forwarded_headers", "withheld_headers", "write_inputs"]

# Nombres fijos dentro del directorio aislado (sólo el daemon puede escribir ahí); empiezan por
# punto y no encajan con las plantillas de salida de yt-dlp (``media.*``, ``item-*``).
URL_FILE = ".vndl-url"
CONFIG_FILE = ".vndl-ytdlp.conf"


def forwarded_headers(options: DownloadOptions) -> list[tuple[str, str]]:
    """Las cabeceras que pueden llegar a yt-dlp: las nombradas en ``forward_headers``."""
    allowed = {name.lower() for name in options.forward_headers}
    return [(name, value) for name, value in options.headers.items() if name.lower() in allowed]


def withheld_headers(options: DownloadOptions) -> list[str]:
    """Nombres de las cabeceras del trabajo que yt-dlp no recibe (sólo irían al origen de ``url``)."""
    allowed = {name.lower() for name in options.forward_headers}
    return sorted(name for name in options.headers if name.lower() not in allowed)


def write_inputs(options: DownloadOptions) -> tuple[Path, Path | None]:
    """Escribe el archivo de la URL y, si hay cabeceras que pasar, el de configuración.

    Devuelve sus rutas (la segunda, None si no hace falta). Un archivo anterior con el mismo nombre
    (un intento previo) se sustituye: se borra y se crea de nuevo, sin seguir nunca un enlace.
    """
    if options.output_path is None:
        raise ValueError("options.output_path is not set; run the download through DownloadLifecycle")
    folder = Path(options.output_path)
    url_file = folder / URL_FILE
    # La URL ya está validada (sin espacios ni caracteres de control): una línea, un trabajo.
    _write_private(url_file, options.url + "\n")
    headers = forwarded_headers(options)
    config_file = folder / CONFIG_FILE
    if not headers:
        with contextlib.suppress(FileNotFoundError):
            config_file.unlink()
        return url_file, None
    # yt-dlp lee su configuración con shlex: cada opción, un elemento citado.
    lines = [f"--add-headers={shlex.quote(f'{name}:{value}')}" for name, value in headers]
    _write_private(config_file, "\n".join(lines) + "\n")
    return url_file, config_file


def _write_private(path: Path, text: str) -> None:
    """Crea ``path`` (0600) con ``text``, sustituyendo lo que hubiera sin seguir enlaces."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
