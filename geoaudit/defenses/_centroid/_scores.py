"""One defended forward pass's result (:class:`CentroidScores`) and how classes are ranked
by votes, ties by the logits or by class index."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from geoaudit._results import Result, json_safe

#: How equal vote counts are ordered: by the model's logits (geoaudit's default) or by class
#: index, lowest first (the paper's ``argmax`` over its tally, which returns the first maximum).
TIE_BREAKS = ("logits", "first")


@dataclass(frozen=True)
class CentroidScores(Result):
    """What one defended forward pass gives.

    The tensors are the pass's own (not shared with the defense); treat them as read-only.

    Attributes
    ----------
    votes : torch.Tensor
        Float64 ``(N, K)``: the (weighted) number of hooked layers at which each class's
        distance was under its threshold.
    logits : torch.Tensor
        ``(N, K)``: the model's own output, used to break ties.
    distances : torch.Tensor
        ``(L, N, K)``: rescaled cosine distance of each input to the nearest centroid of each
        class, at each of the L hooked layer calls.
    ranking : torch.Tensor
        Int64 ``(N, K)``: classes ordered by votes, ties by logits (best first).
    """

    votes: torch.Tensor
    logits: torch.Tensor
    distances: torch.Tensor
    ranking: torch.Tensor

    @property
    def prediction(self) -> torch.Tensor:
        """Defended prediction ``(N,)``: most votes, ties broken by the logits."""
        return self.ranking[:, 0]

    def topk(self, k: int) -> torch.Tensor:
        """The ``k`` best classes by votes, ties by logits.

        Parameters
        ----------
        k : int

        Returns
        -------
        torch.Tensor
            ``(N, k)`` int64, best first.
        """
        return self.ranking[:, :k]

    def loose_correct(self, labels: torch.Tensor, k: int) -> torch.Tensor:
        """Bool ``(N,)``: the true class is among the ``k`` best classes.

        Parameters
        ----------
        labels : torch.Tensor
            ``(N,)`` true classes.
        k : int

        Returns
        -------
        torch.Tensor
        """
        return (self.ranking[:, :k] == labels.to(self.ranking.device)[:, None]).any(dim=1)

    def to_dict(self) -> dict:
        """JSON-safe data: ``n``, ``num_classes``, ``num_layers``, ``prediction``, ``votes``, ``ranking``.

        Returns
        -------
        dict
        """
        return json_safe({"n": int(self.votes.shape[0]), "num_classes": int(self.votes.shape[1]),
                          "num_layers": int(self.distances.shape[0]),
                          "prediction": self.prediction.cpu().tolist(), "votes": self.votes.cpu().tolist(),
                          "ranking": self.ranking.cpu().tolist()})

    def summary(self) -> str:
        """One line: images, classes, layers and how often the vote overrode the model's argmax.

        Returns
        -------
        str
        """
        n, k = self.votes.shape
        changed = int((self.prediction != self.logits.argmax(1).to(self.prediction.device)).sum())
        return (f"centroid scores: {n} images, {k} classes, {self.distances.shape[0]} hooked layer calls; "
                f"the vote differs from the model's argmax on {changed} of {n}")


def _tie_keys(logits: torch.Tensor, tie_break: str) -> torch.Tensor:
    """What orders equal vote counts: the logits, or descending ``-class index`` (lowest first)."""
    if tie_break == "logits":
        return logits
    k = logits.shape[1]
    return (-torch.arange(k, device=logits.device, dtype=torch.float32)).expand(logits.shape[0], k)


def rank_classes(votes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Classes ordered by ``votes`` (descending), ties broken by ``logits`` (descending).

    Parameters
    ----------
    votes, logits : torch.Tensor
        ``(N, K)``; pass ``-class index`` as ``logits`` for the paper's lowest-index-first ties.

    Returns
    -------
    torch.Tensor
        Int64 ``(N, K)``, best first.
    """
    by_logit = torch.argsort(logits, dim=1, descending=True, stable=True)
    v = votes.gather(1, by_logit)
    by_vote = torch.argsort(v, dim=1, descending=True, stable=True)
    return by_logit.gather(1, by_vote)
