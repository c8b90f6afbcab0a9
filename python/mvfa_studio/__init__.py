"""MVFA Studio from Python: score and fit MVFA anomaly detectors, NumPy in and out.

The work is done by the application's own Rust code (the functions behind ``mvfa-studio
score`` and ``mvfa-studio train``), with the GIL released, so the numbers equal the CLI's
bit for bit on the same CPU and errors carry the CLI's messages (as :class:`MvfaError`).

>>> import mvfa_studio as mvfa
>>> det = mvfa.Detector("ViT-L-14-336.safetensors", "brain.safetensors")
>>> frames = det.score_files(["scans/"])
>>> frames[0].score, frames[0].map.shape          # calibrated score, (240, 240) map
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import MvfaError, __version__

__all__ = [
    "Detector",
    "FrameResult",
    "MvfaError",
    "fit",
    "list_files",
    "series_scores",
    "series_csv",
    "SCORE_COLUMNS",
    "__version__",
]

PathLikeStr = Union[str, "PathLike[str]"]

#: The columns of the CLI's ``scores.csv`` after ``path``.
SCORE_COLUMNS = ("score", "zero_shot_score", "few_shot_score", "abnormal")


@dataclass
class FrameResult:
    """One scored frame (a slice of a multi-frame file, or a whole 2-D image).

    ``path`` is the name ``scores.csv`` gives the frame (``file#frame`` for multi-frame
    files); ``score`` is the calibrated image score (``None`` for an uncalibrated detector);
    ``abnormal`` is ``score >= threshold``; ``map`` is the map the CLI draws (the calibrated
    fused map, else the zero-shot map) at model resolution, or at the frame's own size with
    ``original_size=True``; ``maps`` holds every raw map and score under the names of
    ``score --raw`` when asked for.
    """

    path: str
    file: str
    frame: int
    frames: int
    score: Optional[float]
    zero_shot_score: float
    few_shot_score: Optional[float]
    abnormal: Optional[bool]
    map: Optional[np.ndarray] = None
    map_layer: Optional[str] = None
    note: Optional[str] = None
    maps: Dict[str, np.ndarray] = field(default_factory=dict)
    error: Optional[str] = None

    def csv_fields(self) -> List[str]:
        """This frame's ``scores.csv`` row, formatted as the CLI writes it."""
        def number(v: Optional[float]) -> str:
            return "" if v is None else _f32(v)

        abnormal = "" if self.abnormal is None else ("1" if self.abnormal else "0")
        return [
            self.path,
            number(self.score),
            number(self.zero_shot_score),
            number(self.few_shot_score),
            abnormal,
        ]


def _f32(v: float) -> str:
    """The shortest decimal of the f32 ``v`` (what the CLI writes)."""
    text = np.format_float_positional(np.float32(v), unique=True, trim="-")
    return text


def _frame(row: dict) -> FrameResult:
    return FrameResult(
        path=row["path"],
        file=row["file"],
        frame=row["frame"],
        frames=row["frames"],
        score=row["score"],
        zero_shot_score=row["zero_shot_score"],
        few_shot_score=row["few_shot_score"],
        abnormal=row["abnormal"],
        map=row.get("map"),
        map_layer=row.get("map_layer"),
        note=row.get("note"),
        maps=row.get("maps", {}),
    )


class Detector:
    """A detector checkpoint (ours, or a reference MVFA ``.pth``) opened on CLIP weights.

    Opening loads the weights, builds the organ word's text features, loads the adapters and
    rebuilds the memory bank from the checkpoint's normal shots, exactly as ``score`` does.
    ``fpr`` moves the threshold to flag at most that share of normal images; ``cpu`` forces
    the CPU in a ``cuda`` build.
    """

    def __init__(
        self,
        clip: PathLikeStr,
        checkpoint: PathLikeStr,
        *,
        clip_config: Optional[PathLikeStr] = None,
        organ: Optional[str] = None,
        batch: int = 8,
        fpr: Optional[float] = None,
        cpu: bool = False,
    ) -> None:
        self._native = _native.Detector(
            fspath(clip),
            fspath(checkpoint),
            clip_config=None if clip_config is None else fspath(clip_config),
            organ=organ,
            batch=batch,
            fpr=fpr,
            cpu=cpu,
        )
        self.info: dict = self._native.info()

    organ = property(lambda self: self.info["organ"], doc="The organ word of the prompts.")
    threshold = property(
        lambda self: self.info["threshold"], doc="Calibrated score threshold, or None."
    )
    threshold_meaning = property(
        lambda self: self.info["threshold_meaning"],
        doc="What the threshold promises, in plain words.",
    )
    calibrated = property(lambda self: self.info["calibrated"])
    model_size = property(lambda self: self.info["model_size"])

    def __repr__(self) -> str:
        return f"mvfa_studio.Detector({self.info['description']!r}, {self.info['backend']})"

    def score_files(
        self,
        inputs: Union[PathLikeStr, Iterable[PathLikeStr]],
        *,
        all_maps: bool = False,
        original_size: bool = False,
        errors: str = "raise",
    ) -> List[FrameResult]:
        """Scores image files (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) and folders, every frame.

        Files are scored in the order ``score`` scores them, in the detector's batches.
        ``errors``: ``"raise"`` raises :class:`MvfaError` naming every unreadable input
        (after scoring the rest); ``"report"`` returns one :class:`FrameResult` per unreadable
        input with ``error`` set and no scores.
        """
        if errors not in ("raise", "report"):
            raise ValueError('errors must be "raise" or "report"')
        if isinstance(inputs, (str, PathLike)):
            inputs = [inputs]
        rows, failures, files = self._native.score_files(
            [fspath(p) for p in inputs], all_maps=all_maps, original_size=original_size
        )
        if failures and errors == "raise":
            lines = "\n".join(f"  {message}" for _, message in failures)
            raise MvfaError(f"{len(failures)} input(s) could not be scored:\n{lines}")
        # Every file in scoring order (a file that could not be read in its place, as `score`
        # groups series over every file it found), then inputs that were not files.
        by_file: Dict[str, List[FrameResult]] = {}
        for r in rows:
            by_file.setdefault(r["file"], []).append(_frame(r))
        failed = {}
        for path, message in failures:
            failed.setdefault(path, []).append(
                FrameResult(
                    path=path, file=path, frame=0, frames=0, score=None,
                    zero_shot_score=float("nan"), few_shot_score=None, abnormal=None,
                    error=message,
                )
            )
        frames: List[FrameResult] = []
        for f in files:
            frames.extend(by_file.pop(f, []))
            frames.extend(failed.pop(f, []))
        for rest in list(by_file.values()) + list(failed.values()):
            frames.extend(rest)
        return frames

    def score_array(
        self,
        array: np.ndarray,
        *,
        name: str = "array",
        window: Optional[Tuple[float, float]] = None,
        all_maps: bool = False,
        original_size: bool = False,
    ) -> List[FrameResult]:
        """Scores images held in memory.

        Shapes: ``(H, W)`` grey, ``(H, W, 3)`` or ``(H, W, 4)`` colour, ``(N, H, W)`` a stack
        of grey frames, ``(N, H, W, C)`` a stack of colour frames. A 3-D array whose last axis
        is 3 or 4 long and whose first is longer than 4 is one colour image; pass 4-D
        ``(N, H, W, C)`` or ``(1, H, W, C)`` to say otherwise. ``uint8`` and ``uint16``
        arrays score exactly as the PNG files of them would. Other dtypes are one grey channel
        (converted to float32), windowed over their own range as a DICOM without a window
        preset, or by ``window=(centre, width)``.
        """
        a = np.asarray(array)
        if a.ndim == 2:
            shape = (1, a.shape[0], a.shape[1], 1)
        elif a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
            shape = (1, a.shape[0], a.shape[1], a.shape[2])
        elif a.ndim == 3:
            shape = (a.shape[0], a.shape[1], a.shape[2], 1)
        elif a.ndim == 4:
            shape = tuple(a.shape)
        else:
            raise MvfaError(f"an array of shape {a.shape}: give (H, W), (H, W, C), (N, H, W) or (N, H, W, C)")
        integer = bool(np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_)
        if a.dtype == np.uint8 or a.dtype == np.uint16:
            flat = np.ascontiguousarray(a).reshape(-1)
        else:
            flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        rows = self._native.score_samples(
            flat,
            shape,
            name=name,
            integer=integer,
            window=window,
            all_maps=all_maps,
            original_size=original_size,
        )
        return [_frame(r) for r in rows]


def fit(
    clip: PathLikeStr,
    out: PathLikeStr,
    *,
    data: Optional[PathLikeStr] = None,
    images: Optional[Sequence[Union[tuple, dict]]] = None,
    dataset: Optional[str] = None,
    organ: Optional[str] = None,
    schedule: str = "paper",
    epochs: Optional[int] = None,
    seed: int = 111,
    fpr: float = 0.05,
    folds: int = 2,
    shots: int = 4,
    shot_file: Optional[PathLikeStr] = None,
    iterate: int = 0,
    allow_unmasked: bool = False,
    init: Optional[PathLikeStr] = None,
    learning_rate: float = 1e-3,
    train_batch: int = 1,
    batch: int = 8,
    clip_config: Optional[PathLikeStr] = None,
    cpu: bool = False,
    progress: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Fits a detector from labelled files and writes its checkpoint to ``out``.

    The same fit as ``mvfa-studio train`` with the same arguments (the same checkpoint, bit
    for bit): fine-tuning, model selection that keeps the adapters from before fine-tuning
    when fine-tuning does not help on held-out folds, memory bank and the conformal threshold.

    The shots come from ``data`` (a folder with ``normal/``, ``abnormal/`` and optionally
    ``masks/`` and ``held_out/``, or an MVFA dataset, ``dataset`` naming its key for a data
    root), or from ``images``: ``(path, label)`` or ``(path, label, mask)`` tuples or dicts
    with ``path``, ``label`` (``"normal"``, ``"abnormal"``, ``"held_out"``), optional
    ``mask`` (a mask image file) and ``frame``. Returns what the fit did, as a dict.
    ``progress`` receives a dict per step. Ctrl-C cancels; nothing is written then.
    """
    kwargs = dict(
        organ=organ, clip_config=None if clip_config is None else fspath(clip_config),
        dataset=dataset, shots=shots,
        shot_file=None if shot_file is None else fspath(shot_file), iterate=iterate,
        allow_unmasked=allow_unmasked, init=None if init is None else fspath(init),
        schedule=schedule, epochs=epochs, learning_rate=learning_rate,
        train_batch=train_batch, batch=batch, seed=seed, fpr=fpr, folds=folds, cpu=cpu,
        progress=progress,
    )
    if (data is None) == (images is None):
        raise MvfaError("give either data=FOLDER or images=[...]")
    if images is not None:
        listed = []
        for item in images:
            if isinstance(item, dict):
                path, label = item["path"], item["label"]
                mask, frame = item.get("mask"), int(item.get("frame", 0))
            else:
                path, label, mask = (tuple(item) + (None,))[:3]
                frame = 0
            listed.append((fspath(path), frame, label, None if mask is None else fspath(mask)))
        return _native.fit(fspath(clip), fspath(out), "images", images=listed, **kwargs)
    folder = fspath(data)
    from pathlib import Path

    source = "folders" if (Path(folder) / "normal").is_dir() else "dataset"
    return _native.fit(fspath(clip), fspath(out), source, data=folder, **kwargs)


def list_files(inputs: Union[PathLikeStr, Iterable[PathLikeStr]]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The image files of ``inputs`` (files, and folders walked) in the order ``score`` and
    :meth:`Detector.score_files` score them, and ``(input, message)`` per unreadable input."""
    if isinstance(inputs, (str, PathLike)):
        inputs = [inputs]
    return _native.list_files([fspath(p) for p in inputs])


def series_csv(frames: Sequence[FrameResult], threshold: Optional[float] = None) -> str:
    """The CLI's ``series.csv`` for scored frames: DICOM files grouped into series and ordered
    by geometry, one row per series, most anomalous first. Give the detector's threshold to
    count the slices at or above it. Pass the frames in scoring order with the unreadable
    files' rows (``score_files(..., errors="report")``): they take part in the grouping as
    they do in ``score``."""
    files: List[str] = []
    seen = set()
    scores = []
    counts = {}
    for f in frames:
        # Files that could not be read still belong to their series' grouping (as in `score`).
        if f.file not in seen:
            seen.add(f.file)
            files.append(f.file)
        if f.error is not None:
            continue
        counts[f.file] = f.frames
        value = f.score if f.score is not None else f.zero_shot_score
        scores.append((f.file, f.frame, float(value)))
    return _native.series_table(files, scores, list(counts.items()), threshold)


def series_scores(frames: Sequence[FrameResult], threshold: Optional[float] = None) -> List[dict]:
    """:func:`series_csv` as a list of dicts (one per series, most anomalous first)."""
    text = series_csv(frames, threshold)
    return list(csv.DictReader(io.StringIO(text)))
