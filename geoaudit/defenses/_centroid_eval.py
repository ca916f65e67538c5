"""Figure-2-style evaluation of the centroid defense: accuracy under FGSM for a grid of
epsilons, undefended against defended against loose (true class among the top k), on tensors
(:func:`evaluate_centroid_defense`) or end to end from a checkpoint and a dataset
(:func:`evaluate_centroid_checkpoint`).  Figures and files: :mod:`geoaudit.report`."""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from geoaudit._errors import InputError
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping, json_safe
from geoaudit._validation import check_images, check_interval, check_labels, check_options

log = logging.getLogger(__name__)

#: The paper's grid is 0 to 0.5; its tables use steps of 0.1, its figure finer steps.
DEFAULT_EPS_GRID = tuple(round(0.05 * i, 2) for i in range(11))


def _floats(values):
    return tuple(None if v is None else float(v) for v in values)


@dataclass(frozen=True)
class CentroidCurve(Result):
    """Accuracy under FGSM against epsilon, undefended / defended / loose (paper 002, Figure 2).

    Attributes
    ----------
    eps : tuple of float
        The attack budgets (Linf, pixel units in [0, 1]); 0 means clean images.
    undefended : tuple of float
        Accuracy of the model's own argmax on the attacked images.
    defended : tuple of float
        Accuracy of the centroid defense's prediction.
    loose : tuple of float
        Fraction whose true class is among the defense's ``top_k`` classes.
    undefended_topk : tuple of float
        Fraction whose true class is among the model's ``top_k`` logits (the fair reference
        for ``loose``).
    attack_success : tuple of float or None
        FGSM success rate against the undefended model (None at eps = 0).
    n : int
        Number of images.
    num_classes : int
    top_k : int
    defense : Mapping
        :meth:`CentroidDefense.to_dict` of the defense evaluated (read-only).
    meta : Mapping
        Anything the caller adds (dataset, model, seed; read-only).
    """

    eps: tuple
    undefended: tuple
    defended: tuple
    loose: tuple
    undefended_topk: tuple
    attack_success: tuple
    n: int
    num_classes: int
    top_k: int
    defense: Mapping = field(default_factory=dict)
    meta: Mapping = field(default_factory=dict)

    COLUMNS = ("eps", "undefended", "defended", "loose", "undefended_topk", "attack_success")

    def __post_init__(self):
        for c in self.COLUMNS:
            object.__setattr__(self, c, _floats(getattr(self, c)))
        lengths = {len(getattr(self, c)) for c in self.COLUMNS}
        if len(lengths) != 1:
            raise InputError(f"The columns of a CentroidCurve must have equal lengths; got {sorted(lengths)}.")
        object.__setattr__(self, "defense", frozen_mapping(self.defense))
        object.__setattr__(self, "meta", frozen_mapping(self.meta))

    @property
    def chance(self) -> float:
        """Accuracy of guessing: ``1 / num_classes``."""
        return 1.0 / self.num_classes

    def rows(self) -> list[dict]:
        """One dict per epsilon with the :attr:`COLUMNS`.

        Returns
        -------
        list of dict
        """
        return [{c: getattr(self, c)[i] for c in self.COLUMNS} for i in range(len(self.eps))]

    def to_dict(self) -> dict:
        """The curve as JSON-safe data (``centroid_eval.json``).

        Returns
        -------
        dict
            ``n``, ``num_classes``, ``chance``, ``top_k``, ``attack``, ``attack_target``, ``rows``,
            ``defense``, ``meta``.
        """
        return json_safe({
            "n": self.n, "num_classes": self.num_classes, "chance": self.chance, "top_k": self.top_k,
            "attack": "fgsm", "attack_target": "undefended model (the defense is not differentiable)",
            "rows": self.rows(), "defense": self.defense, "meta": self.meta,
        })

    def to_csv(self) -> str:
        """The rows as CSV text (header ``eps,undefended,...``; empty cell for None).

        Returns
        -------
        str
        """
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.rows():
            w.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def summary(self) -> str:
        """A plain-text table: eps, undefended, defended and loose accuracy.

        Returns
        -------
        str
        """
        lines = [f"{'eps':>6} {'undefended':>11} {'defended':>9} {'loose@' + str(self.top_k):>8}"]
        for r in self.rows():
            lines.append(f"{r['eps']:>6.3f} {r['undefended']:>11.3f} {r['defended']:>9.3f} {r['loose']:>8.3f}")
        return "\n".join(lines)

    def plot(self, path=None, *, title=None, ax=None):
        """Accuracy against epsilon, as in the paper's Figure 2 (drawn by
        :func:`geoaudit.report.plot_centroid_curve`).

        Parameters
        ----------
        path : str or Path, optional
            Also save the figure there as PNG.
        title : str, optional
        ax : matplotlib.axes.Axes, optional
            Draw into these axes instead of a new figure.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from geoaudit.report import fig_to_png, plot_centroid_curve

        fig = plot_centroid_curve(self, title=title, ax=ax)
        if path is not None:
            from geoaudit._io import atomic_write_bytes

            atomic_write_bytes(Path(path), fig_to_png(fig, dpi=120))
        return fig


@dataclass(frozen=True)
class CentroidEvaluation(Result):
    """A centroid defense built from a checkpoint and data, and its accuracy curve under FGSM.

    Attributes
    ----------
    curve : CentroidCurve
    centroids : torch.Tensor
        ``(S, K, C, H, W)``: the chosen centroid images (a copy).
    class_names : tuple of str
    thresholds : Mapping
        What ``thresholds.json`` holds: ``thresholds``, ``per_layer``, ``layer_calls``,
        ``class_names``, ``rule``.
    arch : str
        The checkpoint's architecture.
    """

    curve: CentroidCurve
    centroids: Any
    class_names: tuple
    thresholds: Mapping
    arch: str = ""

    def __post_init__(self):
        object.__setattr__(self, "centroids", self.centroids.detach().cpu().clone())
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "thresholds", frozen_mapping(self.thresholds))

    def to_dict(self) -> dict:
        """JSON-safe data: ``curve`` (:meth:`CentroidCurve.to_dict`), ``thresholds``,
        ``class_names``, ``arch`` and ``centroid_shape``.

        Returns
        -------
        dict
        """
        return json_safe({"curve": self.curve.to_dict(), "thresholds": self.thresholds,
                          "class_names": self.class_names, "arch": self.arch,
                          "centroid_shape": list(self.centroids.shape)})

    def summary(self) -> str:
        """The curve's table with a header line.

        Returns
        -------
        str
        """
        return (f"centroid defense on {self.arch or 'a model'}: {len(self.class_names)} classes, "
                f"{self.centroids.shape[0]} centroid set(s), thresholds: {self.thresholds.get('rule', '')}\n"
                + self.curve.summary())

def parse_eps_grid(text) -> list[float]:
    """Read a grid of FGSM budgets.

    Parameters
    ----------
    text : str or sequence of float
        ``"0,0.05,0.1"``: the numbers; ``"0,0.05,...,0.5"``: the arithmetic progression;
        ``"0:0.5:0.1"``: start:stop:step (stop included); or the numbers themselves.

    Returns
    -------
    list of float
        Sorted, without duplicates, each in [0, 1].
    """
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
    batch_size : int
    meta : dict, optional
        Stored on the curve (dataset, model, seed ...).

    Returns
    -------
    CentroidCurve
    """
    from geoaudit.attacks import make_attack

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
            res = make_attack("fgsm", eps=eps)(defense.model, x, y)
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
    return CentroidCurve(eps=tuple(eps_grid), n=n, num_classes=defense.num_classes, top_k=top_k,
                         defense=defense.to_dict(), meta=dict(meta or {}), **acc)




def read_thresholds(spec, *, class_names):
    """A threshold specification as :class:`CentroidDefense` takes it.

    Parameters
    ----------
    spec : str
        A preset name (:data:`THRESHOLD_PRESETS`), one number for every class, or a JSON file:
        a list of K numbers, an L x K list, ``{class_name: alpha}``, or ``thresholds.json``
        from an earlier evaluation.
    class_names : sequence of str
        The model's classes, in order (to read a ``{class_name: alpha}`` file).

    Returns
    -------
    str, float or list
        The preset name, the number, or the list read from the file.
    """
    from geoaudit.defenses._centroid import THRESHOLD_PRESETS

    if spec in THRESHOLD_PRESETS:
        return spec
    try:
        return float(spec)
    except ValueError:
        pass
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"The thresholds {spec!r} are neither 'calibrate', a preset "
                         f"({', '.join(THRESHOLD_PRESETS)}), a number, nor an existing JSON file.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"Could not read thresholds from {str(path)!r}: {e}") from e
    if isinstance(obj, dict) and "thresholds" in obj:
        obj = obj["thresholds"]
    if isinstance(obj, dict):  # {class_name: alpha}
        missing = [n for n in class_names if n not in obj]
        if missing:
            raise InputError(f"Thresholds file {str(path)!r} has no value for class(es) "
                             f"{', '.join(repr(m) for m in missing)}.")
        obj = [obj[n] for n in class_names]
    if not isinstance(obj, list):
        raise InputError(f"Thresholds file {str(path)!r} must hold a list of numbers (one per class), an L x K "
                         "list, or an object with a 'thresholds' entry.")
    return obj


CENTROID_MODES = ("calibrated", "faithful")


def evaluate_centroid_checkpoint(model, data, *, split="test", centroid_split="train", thresholds=None,
                                 mode="calibrated", tie_break=None, quantile=0.95, per_layer=True, centroid_method="medoid", centroid_sets=1,
                                 layers=None, layer_weighting="flat", top_k=3, eps_grid=DEFAULT_EPS_GRID,
                                 limit=None, calib_limit=None, batch_size=256, random_state=0, data_root=None,
                                 device="auto") -> CentroidEvaluation:
    """Build the centroid defense for a checkpoint and measure it under FGSM.

    Centroids (and, with ``thresholds="calibrate"``, the thresholds) come from
    ``centroid_split``; the curve is measured on ``split``.  Calibration leaves the chosen
    centroid images out.

    Parameters
    ----------
    model : str or Path
        A checkpoint folder (``config.json`` + ``weights.pt``).
    data : str or Path
        A dataset folder or a built-in name (see :func:`geoaudit.data.load_split`).
    split, centroid_split : str
        Split evaluated on; split the centroids and calibration images come from.
    thresholds : str, float or list, optional
        ``"calibrate"``; otherwise anything :class:`CentroidDefense` or
        :func:`read_thresholds` accepts (a preset, a number, a JSON file, a list).  Default:
        ``"calibrate"`` in the calibrated mode, the paper's table in the faithful mode
        (``"fashion-mnist"`` for that dataset, else ``"mnist"``).
    mode : {"calibrated", "faithful"}
        ``"faithful"``: the paper's defense as written (:meth:`CentroidDefense.faithful`: its
        thresholds, the Linear / Conv layers only, ties to the lowest class index).
        ``"calibrated"`` (default): geoaudit's improvement (thresholds from within-class
        distances, every Linear / Conv / activation module, ties by the logits).
    tie_break : {"logits", "first"}, optional
        Overrides the mode's tie rule.
    quantile : float
        With ``"calibrate"``: the quantile of within-class distances, in [0, 1].
    per_layer : bool
        With ``"calibrate"``: one threshold per layer and class (else pooled over layers).
    centroid_method : {"medoid", "random"}
    centroid_sets : int
        Centroids per class.
    layers : list of str or "paper", optional
        Module names to hook (default: every Linear, Conv and activation in the calibrated
        mode, ``"paper"``: the Linear / Conv modules, in the faithful one).
    layer_weighting : {"flat", "early", "late"}
    top_k : int
        ``k`` of the loose defense.
    eps_grid : str or sequence of float
        See :func:`parse_eps_grid`.
    limit, calib_limit : int, optional
        Seeded random subsets of the evaluated and the centroid split.
    batch_size : int
    random_state : int
        Seed of the subsets and of random centroids.
    data_root : str or Path, optional
        Where torchvision keeps MNIST / Fashion-MNIST.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` ...

    Returns
    -------
    CentroidEvaluation
    """
    from geoaudit._device import resolve_device
    from geoaudit.data import load_split
    from geoaudit.defenses._centroid import CentroidDefense, calibrate_thresholds, select_centroids
    from geoaudit.models import load_model

    caller = "evaluate_centroid_checkpoint"
    for name, v in (("limit", limit), ("calib_limit", calib_limit)):
        if v is not None:
            check_interval(name, v, 1, None, caller=caller, integer=True)
    centroid_sets = check_interval("centroid_sets", centroid_sets, 1, None, caller=caller, integer=True)
    quantile = check_interval("quantile", quantile, 0, 1, caller=caller)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    check_options("centroid_method", centroid_method, ("medoid", "random"), caller=caller)
    mode = check_options("mode", mode, CENTROID_MODES, caller=caller)
    if mode == "faithful":
        if thresholds is None:
            thresholds = "fashion-mnist" if "fashion" in str(data).lower() else "mnist"
        layers = "paper" if layers is None else layers
        tie_break = "first" if tie_break is None else tie_break
    else:
        thresholds = "calibrate" if thresholds is None else thresholds
        tie_break = "logits" if tie_break is None else tie_break
    eps_grid = parse_eps_grid(eps_grid)
    device = resolve_device(device)
    net, cfg = load_model(model, device=device)
    size, channels = int(cfg["image_size"]), int(cfg["in_channels"])
    names = list(cfg.get("class_names") or [str(i) for i in range(cfg["num_classes"])])
    top_k = check_interval("top_k", top_k, 1, len(names), caller=caller, integer=True)
    x, y, data_names = load_split(data, split, image_size=size, channels=channels, limit=limit,
                                  random_state=random_state, data_root=data_root)
    if len(data_names) != len(names):
        raise InputError(f"The model has {len(names)} classes but {str(data)!r} has {len(data_names)}.")
    xc, yc, _ = load_split(data, centroid_split, image_size=size, channels=channels, limit=calib_limit,
                           random_state=random_state, data_root=data_root)
    cents, cl, chosen = select_centroids(net, xc, yc, num_sets=centroid_sets, method=centroid_method,
                                         random_state=random_state, class_names=names)
    flat = (cents.flatten(0, 1), cl)
    if isinstance(thresholds, str) and thresholds == "calibrate":
        rest = torch.ones(xc.shape[0], dtype=torch.bool)
        rest[chosen.flatten()] = False
        alphas = calibrate_thresholds(net, flat, xc[rest], yc[rest], quantile=quantile, per_layer=per_layer,
                                      layers=layers)
        rule = (f"quantile {quantile} of within-class distances on split {centroid_split!r}, "
                + ("per layer and class" if per_layer else "pooled over layers"))
    else:
        alphas = read_thresholds(thresholds, class_names=names) if isinstance(thresholds, str) else thresholds
        rule = f"given: {thresholds}"
    defense = CentroidDefense(net, flat, alphas, layers=layers, layer_weighting=layer_weighting, top_k=top_k,
                              class_names=names, tie_break=tie_break)
    curve = evaluate_centroid_defense(
        defense, x, y, eps_grid=eps_grid, top_k=top_k, batch_size=batch_size,
        meta={"model": str(model), "arch": cfg["arch"], "data": str(data), "split": split,
              "centroid_split": centroid_split, "centroid_rule": centroid_method,
              "centroid_indices": chosen.tolist(), "threshold_rule": rule, "mode": mode, "seed": random_state,
              "device": str(device)},
    )
    d = defense.to_dict()
    return CentroidEvaluation(
        curve=curve, centroids=cents, class_names=names, arch=str(cfg["arch"]),
        thresholds={"thresholds": d["thresholds"], "per_layer": d["thresholds_per_layer"],
                    "layer_calls": d["layer_calls"], "class_names": names, "rule": rule})
