"""Hot swap: the service follows its model aliases and switches versions without failing a request.

:class:`HotSwapper` owns the serving :class:`~recplane.serving.recommender.Recommender`. A background thread
resolves every alias the deployment follows (``retrieval: {name: mf, alias: production}``) each
``serving.swap_poll_seconds``. When one moves, it loads the new versions beside the old ones, warms them up,
then swaps the reference in one assignment. Request threads take a *lease* on the recommender for each batch,
so batches already running finish on the old version; the old one is closed when its last lease ends. A load
that fails is logged and counted (``recplane_serving_swaps_total{result="failed"}``) and the old version keeps
serving; the next poll tries again.

The swapper loads a *pinned* copy of the deployment (each followed alias replaced by the version it resolved
to), so the versions it compares on the next poll are exactly the ones serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from recplane.errors import BackendUnavailable

if TYPE_CHECKING:
    from recplane.runtime import Runtime
    from recplane.serving.metrics import ServingMetrics
    from recplane.serving.recommender import Recommender
    from recplane.serving.spec import DeploymentSpec, ModelRef

__all__ = ["HotSwapper", "NotReady", "SwapEvent"]

log = logging.getLogger(__name__)

Pins = dict[str, int]
Loader = Callable[["DeploymentSpec"], "Recommender"]
Resolver = Callable[[str, str], int]

_ROLES = ("retrieval", "ranking")


class NotReady(BackendUnavailable):
    """No model is loaded yet (the service is starting, or its first load failed)."""

    code = "not_ready"


@dataclass(frozen=True)
class SwapEvent:
    """One load attempt: the versions before and after, and the error when it failed."""

    at: float
    before: dict[str, str]
    after: dict[str, str]
    error: str | None = None


@dataclass
class _Slot:
    recommender: Recommender
    pins: Pins
    leases: int = 0
    retired: bool = False


@dataclass
class _History:
    events: list[SwapEvent] = field(default_factory=list)

    def add(self, event: SwapEvent) -> None:
        self.events = [*self.events[-19:], event]


def followed_refs(spec: DeploymentSpec) -> dict[str, ModelRef]:
    """The roles whose registered model is chosen by an alias (or "latest"), i.e. whose version can move."""
    refs = {role: getattr(spec, role) for role in _ROLES}
    return {role: ref for role, ref in refs.items() if ref is not None and ref.version is None and ref.path is None}


def pinned_spec(spec: DeploymentSpec, pins: Pins) -> DeploymentSpec:
    """``spec`` with each followed alias replaced by the version it resolved to."""
    updates = {
        role: getattr(spec, role).model_copy(update={"alias": None, "version": version})
        for role, version in pins.items()
    }
    return spec.model_copy(update=updates)


class HotSwapper:
    """Holds the serving recommender and replaces it when a followed alias moves."""

    def __init__(
        self,
        spec: DeploymentSpec,
        *,
        load: Loader,
        resolve: Resolver,
        poll_seconds: float,
        metrics: ServingMetrics | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.spec = spec
        self._load = load
        self._resolve = resolve
        self.poll_seconds = poll_seconds
        self._metrics = metrics
        self._drain_timeout = drain_timeout
        self._slot: _Slot | None = None
        self._cond = threading.Condition()
        self._swap_lock = threading.Lock()  # one load at a time (poll thread and admin reload)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history = _History()
        self.last_error: str | None = None

    @classmethod
    def for_runtime(cls, spec: DeploymentSpec, runtime: Runtime, metrics: ServingMetrics | None = None) -> HotSwapper:
        """A swapper that resolves aliases in the runtime's registry and loads recommenders from it."""
        from recplane.serving.recommender import Recommender

        def load(pinned: DeploymentSpec) -> Recommender:
            return Recommender.load(pinned, runtime)

        def resolve(name: str, alias: str) -> int:
            return int(runtime.registry.resolve(name, alias).version)

        return cls(spec, load=load, resolve=resolve, poll_seconds=spec.serving.swap_poll_seconds, metrics=metrics)

    @property
    def ready(self) -> bool:
        """True once a recommender is loaded and warmed up."""
        return self._slot is not None

    @property
    def model_versions(self) -> dict[str, str]:
        """The versions serving now (``{"retrieval": "mf:3"}``), empty before the first load."""
        slot = self._slot
        return dict(slot.recommender.model_versions) if slot else {}

    @property
    def events(self) -> list[SwapEvent]:
        """The latest load attempts, oldest first."""
        return list(self._history.events)

    def start(self) -> None:
        """Load and warm up in the background, then follow the aliases until :meth:`close`."""
        self._thread = threading.Thread(target=self._follow, name="recplane-swapper", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the first recommender serves (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None and time.monotonic() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            return self._slot is not None

    @contextmanager
    def lease(self) -> Iterator[Recommender]:
        """The serving recommender, kept open until the block ends even if a swap happens meanwhile."""
        with self._cond:
            slot = self._slot
            if slot is None:
                raise self.not_ready()
            slot.leases += 1
        try:
            yield slot.recommender
        finally:
            with self._cond:
                slot.leases -= 1
                if slot.retired and slot.leases == 0:
                    self._cond.notify_all()

    def check(self) -> bool:
        """Resolve the followed aliases once; load and swap when they moved. True when a swap happened."""
        with self._swap_lock:
            pins = self._resolve_pins()
            slot = self._slot
            if slot is not None and slot.pins == pins:
                return False
            return self._replace(pins)

    def reload(self) -> dict[str, str]:
        """Resolve the aliases and load a fresh recommender even if nothing moved; the versions now serving."""
        with self._swap_lock:
            if not self._replace(self._resolve_pins()):
                raise BackendUnavailable(f"Reload failed; the previous version keeps serving: {self.last_error}")
        return self.model_versions

    def close(self) -> None:
        """Stop following aliases and close the serving recommender."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._drain_timeout)
        with self._cond:
            slot, self._slot = self._slot, None
        if slot is not None:
            self._retire(slot)

    def describe(self) -> dict[str, Any]:
        """The followed aliases, the pinned versions now serving, their ANN index and the recent swap events."""
        slot = self._slot
        return {
            "model_versions": self.model_versions,
            "pinned": dict(slot.pins) if slot else {},
            "index": slot.recommender.index.describe() if slot else None,
            "last_error": self.last_error,
            "swaps": [asdict(event) for event in self._history.events],
        }

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as exc:  # a registry hiccup must not kill the thread: the old version keeps serving
                self._failed(exc, {})
            self._stop.wait(self.poll_seconds)

    def _resolve_pins(self) -> Pins:
        return {role: self._resolve(ref.name, str(ref.ref)) for role, ref in followed_refs(self.spec).items()}

    def _replace(self, pins: Pins) -> bool:
        before = self.model_versions
        try:
            recommender = self._load(pinned_spec(self.spec, pins))
            recommender.warm_up()
        except Exception as exc:
            self._failed(exc, before)
            return False
        with self._cond:
            old, self._slot = self._slot, _Slot(recommender, pins)
            self._cond.notify_all()
        self.last_error = None
        after = dict(recommender.model_versions)
        self._history.add(SwapEvent(time.time(), before, after))
        if self._metrics is not None:
            self._metrics.swaps.labels("ok").inc()
            self._metrics.show_models(after)
        log.info("Serving %s (was %s)", after, before or "nothing")
        if old is not None:
            self._retire(old)
        return True

    def _retire(self, slot: _Slot) -> None:
        """Close ``slot``'s recommender once its last lease ends (batches on it finish first)."""
        with self._cond:
            slot.retired = True
            deadline = time.monotonic() + self._drain_timeout
            while slot.leases and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
        try:
            slot.recommender.close()
        except Exception:
            log.exception("Closing the retired recommender failed")

    def _failed(self, exc: BaseException, before: dict[str, str]) -> None:
        error = f"{type(exc).__name__}: {exc}"
        repeated, self.last_error = error == self.last_error, error
        self._history.add(SwapEvent(time.time(), before, before, error))
        if self._metrics is not None:
            self._metrics.swaps.labels("failed").inc()
        # The traceback once per distinct error: a poll that keeps failing must not flood the log.
        log.error(
            "Loading the deployment's models failed; %s keeps serving: %s",
            before or "nothing",
            error,
            exc_info=None if repeated else exc,
        )

    def not_ready(self) -> NotReady:
        """The error for a request that arrives before the first load finished."""
        reason = f" The last load failed: {self.last_error}" if self.last_error else ""
        return NotReady(f"Deployment {self.spec.name!r} is still loading its models; retry shortly.{reason}")
