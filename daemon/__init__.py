"""videonote-dl: daemon supervisor de descargas guiado por un spool.

API pública del plan: ``TempManager`` (aquí, en ``daemon``); ``IsolatedDownload``,
``DownloadLifecycle`` y ``cleanup_download`` (en ``daemon.downloaders``); ``DownloadManager``
(en ``daemon.downloaders.download_manager``: ``daemon.downloaders`` no lo exporta).
"""

from daemon.config import ConfigError, Settings, load_settings
from daemon.error_kinds import ERROR_KINDS, ErrorKind
from daemon.ids import InvalidCorrelationId, new_correlation_id, validate_correlation_id
from daemon.temp_manager import TempManager

__version__ = "0.1.0"

__all__ = [
    "ERROR_KINDS",
    "ConfigError",
    "ErrorKind",
    "InvalidCorrelationId",
    "Settings",
    "TempManager",
    "__version__",
    "load_settings",
    "new_correlation_id",
    "validate_correlation_id",
]
