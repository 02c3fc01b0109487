"""A loop in its own greenlet: `start()` spawns `_run`, `stop()` kills it."""

from __future__ import annotations

import gevent


class Background:
    """Subclasses define `_run`; one greenlet per instance."""

    _greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        raise NotImplementedError
