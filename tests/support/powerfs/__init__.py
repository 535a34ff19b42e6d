"""powerfs para las pruebas: un FUSE que pierde lo no durable en un corte de luz.

``PowerFS(backing, mountpoint)`` arranca ``server.py`` bajo ``/usr/bin/python3`` (pyfuse3 de
Debian), monta, y ofrece el control: ``arm(n)``, ``cut()``, ``kill_on_cut(pid)``, ``stats()``,
``trace()`` y ``unmount()``. ``powerfs_unavailable()`` dice por qué no se puede usar (o None).
"""

from tests.support.powerfs.client import SYSTEM_PYTHON, PowerFS, powerfs_unavailable

__all__ = ["SYSTEM_PYTHON", "PowerFS", "powerfs_unavailable"]
