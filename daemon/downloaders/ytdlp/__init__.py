"""Descargador yt-dlp: páginas de vídeo (y medios directos) a través de yt-dlp, aislado y cancelable.

Cada trabajo corre yt-dlp en un proceso propio, en su propio grupo de procesos (``setsid``), con
stdin cerrado y sólo las opciones que fija ``argv``: ``--ignore-config``, rutas dentro del
directorio aislado del trabajo (temporales y fragmentos incluidos), progreso en JSON por stdout,
``--print after_move:...`` para conocer el archivo final. De un trabajo sólo llegan a yt-dlp la
URL, ``format``, ``playlist``, ``max_bytes`` y las cabeceras de ``forward_headers``; nada más
puede añadir opciones. La URL y las cabeceras van en archivos 0600 del directorio aislado
(``inputs``), nunca en argv. La cancelación y el ``timeout`` terminan el grupo entero (TERM, KILL tras
``kill_grace``) y esperan al proceso: no quedan zombis ni huérfanos.

Dos formas de lanzar el proceso, con el mismo argv y la misma lectura de stdout/stderr:

- ``subprocess`` (etapa 1): ``python -m yt_dlp ...`` por trabajo (~0,6-0,8 s de CPU cada uno).
- ``zygote`` (etapa 2): un proceso auxiliar de larga vida (``zygote_server.py serve``) con yt-dlp
  ya importado y precalentado hace ``fork()`` por trabajo; el hijo hace ``setsid()`` y ejecuta
  ``yt_dlp.main(argv)``. Si el zigoto no está disponible se vuelve a la etapa 1.

Un módulo por concepto:

- ``errors``: errores propios y clasificación de la salida de yt-dlp (``classify_failure``);
- ``extractors``: versión instalada, extractores y ``pick_downloader`` (``downloader: auto``);
- ``argv``: la línea de órdenes (``build_argv``, ``ytdlp_command``) y el entorno del hijo;
- ``inputs``: la URL y las cabeceras en archivos 0600 (``write_inputs``), fuera de argv;
- ``preflight``: la URL y el primer salto de red, antes de lanzar nada;
- ``process``: un yt-dlp en marcha (grupo de procesos, tuberías, terminar y recoger);
- ``output``: progreso JSON, archivos terminados y colas de stderr;
- ``zygote_client`` / ``zygote_server``: el proceso auxiliar, del lado del daemon y el suyo;
- ``downloader``: ``YtdlpDownloader``, que junta todo para un trabajo.

Importar este paquete no importa yt_dlp.
"""

from daemon.downloaders.ytdlp.argv import build_argv, ytdlp_command
from daemon.downloaders.ytdlp.downloader import YtdlpDownloader
from daemon.downloaders.ytdlp.errors import (
    FormatUnavailable,
    MediaUnavailable,
    YtdlpCrashed,
    YtdlpFailed,
    classify_failure,
)
from daemon.downloaders.ytdlp.extractors import (
    claiming_extractor,
    pick_downloader,
    preload_extractors,
    ytdlp_version,
)
from daemon.downloaders.ytdlp.inputs import forwarded_headers, withheld_headers, write_inputs
from daemon.downloaders.ytdlp.names import published_name
from daemon.downloaders.ytdlp.tools import ToolInfo, describe_tools, find_deno, find_ffmpeg

__all__ = [
    "FormatUnavailable",
    "MediaUnavailable",
    "ToolInfo",
    "YtdlpCrashed",
    "YtdlpDownloader",
    "YtdlpFailed",
    "build_argv",
    "claiming_extractor",
    "classify_failure",
    "describe_tools",
    "find_deno",
    "find_ffmpeg",
    "forwarded_headers",
    "pick_downloader",
    "preload_extractors",
    "published_name",
    "withheld_headers",
    "write_inputs",
    "ytdlp_command",
    "ytdlp_version",
]
