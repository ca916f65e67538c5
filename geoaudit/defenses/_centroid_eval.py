"""Figure-2-style evaluation of the centroid defense: accuracy under FGSM for a grid of
epsilons, undefended against defended against loose (true class among the top k), and the
offline / downloadable datasets it is run on (scikit-learn digits, MNIST, Fashion-MNIST)."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit._progress import progress
from geoaudit._validation import check_images, check_interval, check_labels

log = logging.getLogger(__name__)

#: The paper's grid is 0 to 0.5; its tables use steps of 0.1, its figure finer steps.
DEFAULT_EPS_GRID = tuple(round(0.05 * i, 2) for i in range(11))


@dataclass(frozen=True)
class CentroidCurve:
    """Accuracy under FGSM against epsilon, undefended / defended / loose (paper 002, Figure 2).

    Attributes
    ----------
    eps : list of float
        The attack budgets (Linf, pixel units in [0, 1]); 0 means clean images.
    undefended : list of float
        Accuracy of the model's own argmax on the attacked images.
    defended : list of float
        Accuracy of the centroid defense's prediction.
    loose : list of float
        Fraction whose true class is among the defense's ``top_k`` classes.
    undefended_topk : list of float
        Fraction whose true class is among the model's ``top_k`` logits (the fair reference
        for ``loose``).
    attack_success : list of float
        FGSM success rate against the undefended model (None at eps = 0).
    n : int
        Number of images.
    num_classes : int
    top_k : int
    defense : dict
        :meth:`CentroidDefense.to_dict` of the defense evaluated.
    meta : dict
        Anything the caller adds (dataset, model, seed).
    """

    eps: list
    undefended: list
    defended: list
    loose: list
    undefended_topk: list
    attack_success: list
    n: int
    num_classes: int
    top_k: int
    defense: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    COLUMNS = ("eps", "undefended", "defended", "loose", "undefended_topk", "attack_success")

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def rows(self) -> list[dict]:
        return [{c: getattr(self, c)[i] for c in self.COLUMNS} for i in range(len(self.eps))]

    def to_dict(self) -> dict:
        return {
            "n": self.n, "num_classes": self.num_classes, "chance": self.chance, "top_k": self.top_k,
            "attack": "fgsm", "attack_target": "undefended model (the defense is not differentiable)",
            "rows": self.rows(), "defense": self.defense, "meta": self.meta,
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.rows():
            w.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def summary(self) -> str:
        lines = [f"{'eps':>6} {'undefended':>11} {'defended':>9} {'loose@' + str(self.top_k):>8}"]
        for r in self.rows():
            lines.append(f"{r['eps']:>6.3f} {r['undefended']:>11.3f} {r['defended']:>9.3f} {r['loose']:>8.3f}")
        return "\n".join(lines)

    def plot(self, path=None, *, title=None, ax=None):
        """Accuracy against epsilon, as in the paper's Figure 2; saved as PNG when ``path``."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from geoaudit._io import atomic_save

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(5.5, 4))
        else:
            fig = ax.figure
        ax.plot(self.eps, self.undefended, "o-", color="tab:red", label="defenseless")
        ax.plot(self.eps, self.defended, "s-", color="tab:blue", label="defense")
        ax.plot(self.eps, self.loose, "^--", color="tab:green", label=f"loose defense (top {self.top_k})")
        ax.axhline(self.chance, color="grey", ls=":", label="chance")
        ax.set_xlabel("FGSM epsilon (Linf)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title or f"Centroid defense under FGSM (n={self.n})")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        if path is not None:
            fig.tight_layout()
            atomic_save(Path(path), lambda t: fig.savefig(t, dpi=120, format="png"))
        if own:
            plt.close(fig)
        return fig


def parse_eps_grid(text) -> list[float]:
    """``"0,0.05,0.1"`` -> floats; ``"0,0.05,...,0.5"`` expands the arithmetic progression;
    ``"0:0.5:0.1"`` is start:stop:step (stop included)."""
    if not isinstance(text, str):
        vals = [float(v) for v in text]
    elif ":" in text:
        try:
            a, b, st = (float(v) for v in text.split(":"))
        except ValueError as e:
            raise InputError(f"Could not read the eps grid {text!r}; use start:stop:step like 0:0.5:0.05.") from e
        if st <= 0:
            raise InputError(f"The eps grid step must be > 0, got {st}.")
        n = int(round((b - a) / st))
        vals = [round(a + i * st, 10) for i in range(n + 1)]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            if "..." in parts:
                i = parts.index("...")
                if i < 2 or i != len(parts) - 2:
                    raise ValueError
                head = [float(p) for p in parts[:i]]
                last, st = float(parts[-1]), head[-1] - head[-2]
                if st <= 0:
                    raise ValueError
                n = int(round((last - head[0]) / st))
                vals = [round(head[0] + j * st, 10) for j in range(n + 1)]
            else:
                vals = [float(p) for p in parts]
        except ValueError as e:
            raise InputError(f"Could not read the eps grid {text!r}; give numbers like 0,0.1,0.2 or "
                             "0,0.05,...,0.5 or 0:0.5:0.05.") from e
    if not vals:
        raise InputError("The eps grid is empty.")
    for v in vals:
        check_interval("eps", v, 0, 1, caller="the eps grid")
    return sorted(set(vals))


def evaluate_centroid_defense(defense, images, labels, *, eps_grid=DEFAULT_EPS_GRID, top_k=3,
                              batch_size=256, meta=None) -> CentroidCurve:
    """Accuracy under FGSM for each epsilon: undefended, defended and loose.

    The FGSM images are computed on the undefended model (``defense.model``): the paper's
    threat model, in which the attacker has white-box access to the network but the vote is
    not differentiable.  One FGSM call and one defended forward pass per batch and epsilon.

    Parameters
    ----------
    defense : CentroidDefense
    images : torch.Tensor
        ``(N, C, H, W)`` float in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64.
    eps_grid : sequence of float
        Linf budgets in [0, 1]; 0 evaluates the clean images.
    top_k : int
        ``k`` of the loose variant (the paper: 3).
    """
    from geoaudit.attacks import FGSM

    caller = "evaluate_centroid_defense"
    check_images(images, caller=caller)
    check_labels(labels, images.shape[0], caller=caller, num_classes=defense.num_classes)
    top_k = check_interval("top_k", top_k, 1, defense.num_classes, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    eps_grid = parse_eps_grid(list(eps_grid))
    n = images.shape[0]
    acc = {k: [] for k in ("undefended", "defended", "loose", "undefended_topk", "attack_success")}
    steps = [(e, s) for e in eps_grid for s in range(0, n, batch_size)]
    counts = {}
    for eps, s in progress(steps, desc="centroid eval", unit="batch"):
        x, y = images[s:s + batch_size], labels[s:s + batch_size]
        if eps > 0:
            res = FGSM(eps)(defense.model, x, y)
            x, succ = res.images, int(res.success.sum())
        else:
            succ = 0
        sc = defense.scores(x)
        yd = y.to(sc.logits.device)
        c = counts.setdefault(eps, [0, 0, 0, 0, 0])
        c[0] += int((sc.logits.argmax(1) == yd).sum())
        c[1] += int((sc.prediction == yd).sum())
        c[2] += int(sc.loose_correct(yd, top_k).sum())
        c[3] += int((sc.logits.topk(top_k, dim=1).indices == yd[:, None]).any(1).sum())
        c[4] += succ
    for eps in eps_grid:
        c = counts[eps]
        acc["undefended"].append(c[0] / n)
        acc["defended"].append(c[1] / n)
        acc["loose"].append(c[2] / n)
        acc["undefended_topk"].append(c[3] / n)
        acc["attack_success"].append(c[4] / n if eps > 0 else None)
    return CentroidCurve(eps=list(eps_grid), n=n, num_classes=defense.num_classes, top_k=top_k,
                         defense=defense.to_dict(), meta=dict(meta or {}), **acc)


# ---------------------------------------------------------------------- datasets
def load_digits_tensors(*, image_size=28, test_fraction=0.3, random_state=0):
    """scikit-learn's handwritten digits (1797 8x8 greyscale images, shipped with scikit-learn,
    no download), scaled to [0, 1] and resized to ``image_size`` (bilinear) so the MNIST-sized
    models apply.

    Returns
    -------
    dict
        ``train`` and ``test``: ``(images (N, 1, S, S), labels (N,))``; ``class_names``.
        The split is stratified and seeded.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    image_size = check_interval("image_size", image_size, 8, None, caller="load_digits_tensors", integer=True)
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                            align_corners=False).clamp_(0, 1)
    y = torch.as_tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(range(len(y)), test_size=test_fraction, stratify=y.numpy(), random_state=random_state)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te]), "class_names": [str(i) for i in range(10)]}


def load_torchvision_mnist(name="mnist", *, root=None, split="test", limit=None):
    """MNIST or Fashion-MNIST through torchvision (downloads into ``root`` the first time).

    Raises
    ------
    DependencyError
        When the files are not in ``root`` and cannot be downloaded (offline).
    """
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}.get(name)
    if cls is None:
        raise InputError(f"Unknown torchvision dataset {name!r}; use 'mnist' or 'fashion-mnist'.")
    root = Path(root) if root is not None else Path.home() / ".cache" / "geoaudit" / "torchvision"
    try:
        ds = cls(str(root), train=(split == "train"), download=True)
    except Exception as e:  # offline: urllib errors, RuntimeError "Dataset not found"
        raise DependencyError(
            f"{name} could not be loaded from {str(root)!r} nor downloaded "
            f"({type(e).__name__}: {' '.join(str(e).split())[:300]}). "
            "Without internet, use --data digits (scikit-learn's digits, offline) or a dataset folder."
        ) from e
    x = ds.data[:limit].float().div_(255.0)[:, None]
    y = ds.targets[:limit].long()
    return x, y, list(ds.classes)


def fit_classifier(model, images, labels, *, epochs=10, lr=2e-3, batch_size=64, random_state=0):
    """Adam on tensors, for experiments and tests.  (The paper's plain SGD at lr 1e-2 barely
    moves the 7-layer MLP in a few epochs on the 1257 digits training images.)"""
    g = torch.Generator().manual_seed(random_state)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = images.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            i = perm[s:s + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images[i]), labels[i])
            loss.backward()
            opt.step()
    model.eval()
    return model
