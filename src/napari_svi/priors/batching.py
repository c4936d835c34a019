"""One network call for several restores running side by side: their frames share the batch axis.

A large GPU is filled by a batch of many frames, not by one 16-frame window. :class:`BatchedPrior`
is shared by restores running in threads (several clips, or the windows and tiles of one stack):
each thread's ``predict_noise`` waits until every active participant has asked, then one of them
evaluates the concatenated frames in one call and every participant gets its slice. The frames are
independent images to the network, so each restore gets what it would get alone (to float
rounding), and the sampler does not change. A participant that finishes calls :meth:`leave`
(:meth:`participant` does it), so the others no longer wait for it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from .base import DiffusionPrior


class BatchedPrior(DiffusionPrior):
    """``prior`` shared by ``participants`` threads whose calls are gathered into one batch.

    Parameters
    ----------
    prior : DiffusionPrior
        The prior that evaluates the gathered batch (e.g. a :class:`~napari_svi.priors.TiledPrior`
        or a :class:`~napari_svi.priors.graphs.CUDAGraphPrior`).
    participants : int
        Threads that will call; a call waits until every participant still active has called.
    timeout_s : float
        A call that waits longer than this for the others raises ``RuntimeError`` (a participant
        that died without :meth:`leave`).
    """

    def __init__(self, prior: DiffusionPrior, participants: int, *, timeout_s: float = 600.0):
        if isinstance(participants, bool) or not isinstance(participants, int) or participants < 1:
            raise ValueError(f"participants must be a positive integer, got {participants!r}")
        super().__init__(prior, prior.alphas_cumprod, channels=prior.channels, size_multiple=prior.size_multiple,
                         name=prior.name, info=prior.info)
        self.active = participants
        self.timeout_s = float(timeout_s)
        self._cond = threading.Condition()
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._results: dict[int, torch.Tensor | BaseException] = {}
        self._round = 0
        self.calls = 0  # network calls made (one per gathered round)

    @property
    def prior(self) -> DiffusionPrior:
        return self.network  # type: ignore[return-value]

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        with self._cond:
            my_round, index = self._round, len(self._pending)
            self._pending.append((x, t))
            if len(self._pending) < self.active:
                if not self._cond.wait_for(lambda: self._round != my_round, timeout=self.timeout_s):
                    raise RuntimeError(f"BatchedPrior: waited {self.timeout_s:.0f} s for the other participants")
            else:
                self._run_round()
            out = self._results[(my_round, index)]
            del self._results[(my_round, index)]
        if isinstance(out, BaseException):
            raise out
        return out

    def _run_round(self) -> None:
        """Evaluate the pending calls as one batch (the caller holds the lock), then wake every participant."""
        pending, self._pending = self._pending, []
        try:
            eps = self.prior.predict_noise(torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending]))
            parts = list(eps.split([p[0].shape[0] for p in pending]))
        except BaseException as err:  # noqa: BLE001 - handed to every participant, each raises it
            parts = [err] * len(pending)
        for i, part in enumerate(parts):
            self._results[(self._round, i)] = part
        self.calls += 1
        self._round += 1
        self._cond.notify_all()

    def leave(self) -> None:
        """One participant is done: the others no longer wait for it (a round it held up runs now)."""
        with self._cond:
            self.active -= 1
            if self._pending and len(self._pending) >= self.active:
                self._run_round()

    @contextlib.contextmanager
    def participant(self) -> Iterator[BatchedPrior]:
        """``with prior.participant(): restore(...)``: leaves when the block ends, also on an error."""
        try:
            yield self
        finally:
            self.leave()


__all__ = ["BatchedPrior"]
