"""La cola de espera del gestor: prioridad primero y, a igual prioridad, turnos entre remitentes.

Cada tarea lleva un remitente (``owner``: el uid dueño del archivo del trabajo, o None si no se
sabe). A igual prioridad, los huecos se reparten por turnos entre remitentes (una cola justa de
"tiempo virtual de inicio", por prioridad: la n-ésima tarea en espera de un remitente recibe el
turno n, contado desde el turno que ya se está sirviendo en esa prioridad), así que quien deja 500
trabajos no retrasa más de un turno el primero de otro. Un tope opcional de descargas a la vez por remitente
(``max_running_per_owner``; 0 = sin tope) deja en espera a quien lo alcanzó sin frenar al resto.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Generic, Protocol, TypeVar

__all__ = ["FairQueue", "QueuedTask"]


class QueuedTask(Protocol):
    """Lo que la cola necesita de una tarea."""

    priority: int
    seq: int
    owner: int | None


T = TypeVar("T", bound=QueuedTask)


class FairQueue(Generic[T]):
    """Montículo por (prioridad, turno del remitente, llegada), con tope por remitente."""

    def __init__(self, max_running_per_owner: int = 0) -> None:
        self.max_running_per_owner = max_running_per_owner
        self.running_by_owner: Counter[int | None] = Counter()
        self._heap: list[tuple[int, int, int, T]] = []  # (-prioridad, turno, llegada, tarea)
        self._next_turn: dict[tuple[int | None, int], int] = {}  # (remitente, prioridad) -> turno
        self._serving: dict[int, int] = {}  # prioridad -> turno de la última tarea que empezó

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, task: T) -> None:
        key = (task.owner, task.priority)
        turn = max(self._next_turn.get(key, 0), self._serving.get(task.priority, 0))
        self._next_turn[key] = turn + 1
        heapq.heappush(self._heap, (-task.priority, turn, task.seq, task))

    def pop_ready(self) -> T | None:
        """La siguiente tarea que puede empezar ya (su remitente por debajo del tope), o None."""
        skipped: list[tuple[int, int, int, T]] = []
        found: T | None = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            if self._at_cap(entry[3].owner):
                skipped.append(entry)
                continue
            found = entry[3]
            self._serving[found.priority] = max(self._serving.get(found.priority, 0), entry[1])
            self.running_by_owner[found.owner] += 1
            break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return found

    def finished(self, task: T) -> None:
        """Una tarea que salió de ``pop_ready`` terminó: libera su sitio en el tope."""
        left = self.running_by_owner[task.owner] - 1
        if left > 0:
            self.running_by_owner[task.owner] = left
        else:
            self.running_by_owner.pop(task.owner, None)

    def remove(self, task: T) -> bool:
        """Saca una tarea en espera (cancelada); False si no estaba."""
        kept = [entry for entry in self._heap if entry[3] is not task]
        if len(kept) == len(self._heap):
            return False
        self._heap = kept
        heapq.heapify(self._heap)
        return True

    def drain(self) -> list[T]:
        """Vacía la cola y devuelve las tareas en el orden en que habrían empezado (sin topes)."""
        ordered = [entry[3] for entry in sorted(self._heap, key=lambda e: (e[0], e[1], e[2]))]
        self._heap.clear()
        return ordered

    def ready_count(self) -> int:
        """Tareas en espera cuyo remitente no está en el tope (las que un hueco libre arrancaría)."""
        if not self.max_running_per_owner:
            return len(self._heap)
        return sum(1 for entry in self._heap if not self._at_cap(entry[3].owner))

    def _at_cap(self, owner: int | None) -> bool:
        cap = self.max_running_per_owner
        return bool(cap) and self.running_by_owner[owner] >= cap
