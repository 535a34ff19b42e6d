"""videonote-dl: daemon supervisor de descargas guiado por un spool.

API pública del plan: ``TempManager`` (aquí, en ``daemon``); ``IsolatedDownload``,
``DownloadLifecycle`` y ``cleanup_download`` (en ``daemon.downloaders``); ``DownloadManager``
(en ``daemon.downloaders.download_manager``: ``daemon.downloaders`` no lo exporta), que con
``file_io=FileIo(...)`` (aquí; ``choose_file_io`` lo elige como el daemon) cierra los trabajos
pequeños en el bucle en vez de en un hilo.
"""

from daemon.config import ConfigError, Settings, load_settings
from daemon.error_kinds import ERROR_KINDS, ErrorKind
from daemon.file_io import FileIo, choose_file_io
from daemon.ids import InvalidCorrelationId, new_correlation_id, validate_correlation_id
from daemon.temp_manager import TempManager

__version__ = "0.1.0"

__all__ = [
    "ERROR_KINDS",
    "ConfigError",
    "ErrorKind",
    "FileIo",
    "InvalidCorrelationId",
    "Settings",
    "TempManager",
    "__version__",
    "choose_file_io",
    "load_settings",
    "new_correlation_id",
    "validate_correlation_id",
]
