"""Training data for the WMH networks: cases (synthetic and real) and seeded slice / patch samplers.

A :class:`Case` holds one subject's network input already built (:func:`wmhkit.train.inputs.build_inputs`)
on its canonical (RAS) grid, with its WMH labels and brain mask. Cases come from

- :func:`synthetic_cases`: :func:`wmhkit.synth.generate_sample` cases, generated once and cached as .npz
  (full synthesis costs seconds per case, far too slow per training step; the brain extractor's recipe
  does the same, see :mod:`wmhkit.train.brain`);
- :func:`real_cases`: any folder :func:`wmhkit.datasets.discover` understands.

:class:`SliceDataset` (2D networks) and :class:`PatchDataset` (3D networks) draw items from several
sources at a given mix; item ``i`` is a pure function of (seed, epoch, i), whatever the worker.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from wmhkit.io import load_image, load_labels, voxel_spacing
from wmhkit.preprocess import brain_box, resample, to_canonical, to_slice_stack, working_grid
from wmhkit.train.inputs import NEEDS_T1, background_values, build_inputs, input_channels

# Bump when the cached arrays change meaning or when wmhkit.synth gives other cases for the same seed:
# older cache files are then regenerated, not reused. (3: FLAIR intensities, ventricles, slice spacing;
# 4: noise, texture, scalp layers; 5: the air around most skull-on heads is 0; 6: a brighter cortex
# on clinical 2D FLAIR; 7: noise correlated over about a voxel, the cortex's CSF share from Colin27;
# 8: closed sulci opened in the atlas, a receive-coil profile; 9: less noise on research 3D grids;
# 10: white noise drawn by torch, same distribution; 11: the ventricles' walls in partial volume;
# 12: half the age thinning of the cortex, a layered scalp with a marrow diploe, band-limited noise
# scaled by voxel volume; 13: clinical 2D noise of the acquired voxel, >= 0.75 mm, on fine matrices;
# 15: the septum closes the midline between the lateral ventricles, which no longer grow into it;
# 16: a whole inner table, darker bone and dura, a thinner scalp with bright vessels; 17: a thinner
# scalp again (4-8 mm cut) under a wider, darker fat line; 19: half the cases edge-enhanced (an
# unsharp mask: the bright lining along the ventricles of resampled FLAIRs), the scalp's cut varying
# over 40 mm instead of 20 (a smoother head outline); 20: the head's width / length drawn from the
# real range, 0.73-0.88, instead of 0.71-1.0; 21: a brighter striatum on clinical 2D FLAIRs (1.1-1.34
# x white matter, was 1.02-1.2); 22: the head's width / length drawn around the real median 0.81 with
# the template-registered scans' proportions in the upper half, 0.72-0.93; 23: 90 % of the clinical 2D
# cases edge-enhanced (the real 2D FLAIRs' steep ventricle walls), CSF on FLAIR drawn 0.03-0.25 x white
# matter (was 0.06-0.35); 24: regional white-matter variation (smooth 8-16 mm patches, SD 0.04-0.1);
# 25: lesions drawn over the white matter they replace, +15-20 % subtle, else +20-70 % (was a fixed
# multiple of deep white matter, +8-25 % / +30-110 %): its subtle cases still rendered invisible
# (session 30, not trained on); 26: the same with +25-35 % subtle, else +30-100 %; 27: the septum on
# FLAIR 0.3-0.9 x white matter (was 0.4-1.7), intensities only; 29: the lateral ventricles shrink by
# up to 1 mm in young cases and grow by up to 4 mm in old ones, cubic in the age parameter (was growth
# only, 0-4 mm as age**1.5), and the slice planes pitched 8 deg from the atlas's; 30: the same, the
# ventricles' move squared in age (more large ventricles than 29; reverted at the end of session 32
# for the tests it re-drew, restored in session 33).
# 14 was a periventricular lining, tried and reverted in session 18, 18 deep grey matter bounded
# by the insula's CSF, tried and reverted in session 23, and 28 lesions darker and more varied on T1,
# tried and reverted in session 31: their caches are not these.)
CACHE_VERSION = 30
# What a synthetic Case's label map holds: the lesions, or white matter (a proxy pretraining task).
SYNTHETIC_TARGETS = ("wmh", "wm")


@dataclass
class Case:
    """One training case on its canonical (RAS) grid.

    name : unique name (file-name safe)
    channels : float32 (C, X, Y, Z), the network input of ``kind``
    wmh : uint8 (X, Y, Z) 0/1 WMH labels (a proxy target's mask for ``synthetic_cases(target="wm")``),
        or None when unlabeled
    brain : uint8 (X, Y, Z) 0/1 brain mask
    spacing : (3,) voxel size in mm along X, Y, Z
    source : "synthetic" or "real" (any string naming the source works for the samplers)
    kind : the input kind of ``channels``
    meta : JSON-able provenance (seed and index of synthetic cases, file paths of real ones ...)
    """

    name: str
    channels: np.ndarray
    wmh: np.ndarray | None
    brain: np.ndarray
    spacing: tuple[float, float, float]
    source: str
    kind: str = ""
    meta: dict = field(default_factory=dict)


def on_isotropic_grid(case: Case, spacing_mm: float) -> Case:
    """``case`` on voxels of ``spacing_mm`` covering its field of view: channels linear, WMH and brain
    at >= 50 % of a linearly resampled mask.

    3D inference (:func:`wmhkit.infer.predict_volume_3d`) resamples every scan to the network's
    isotropic grid; its training patches must come from that grid too, or a 0.5 x 0.5 x 6 mm clinical
    case teaches lesions twice as wide and a sixth as tall as the network will ever see them.
    """
    spacing = np.asarray(case.spacing, float)
    if np.allclose(spacing, spacing_mm, rtol=0.01):
        return case
    affine = np.diag(list(spacing) + [1.0])
    shape, target = working_grid(case.brain.shape, affine, spacing_mm)

    def mask(m: np.ndarray) -> np.ndarray:
        return (resample(m.astype(np.float32), affine, shape, target) >= 0.5).astype(np.uint8)

    # Beyond the outermost voxel centres a resampler sees "outside": give it each channel's own outside
    # value (-127 on the colour kinds), not 0.
    outside = background_values(case.channels, case.brain > 0)
    channels = np.stack([resample(c, affine, shape, target, fill=float(v)) for c, v in zip(case.channels, outside)])
    return replace(case, channels=channels, wmh=None if case.wmh is None else mask(case.wmh),
                   brain=mask(case.brain), spacing=tuple(float(v) for v in np.diag(target)[:3]))


# ----------------------------------------------------------------------------------- synthetic cases


def synthetic_cases(
    n: int,
    seed: int,
    kind: str,
    cache_dir: str | os.PathLike,
    profile: str = "mixed",
    progress: bool = True,
    *,
    start: int = 0,
    work_spacing_mm: float = 1.0,
    train_shape: tuple[int, int, int] = (128, 160, 128),
    severity: str | None = None,
    random_contrast_share: float | None = None,
    target: str = "wmh",
) -> list[Case]:
    """Synthetic cases ``start .. start + n - 1`` of ``seed``, generated once and cached in ``cache_dir``.

    Each case is ``generate_sample(seed, profile, skull=False, index=i, ...)`` (skull-stripped). The
    default profile "mixed" draws clinical 2D (thick slices) or research 3D geometry 50/50, so that the
    networks see both; "train" gives a fixed isotropic grid of ``train_shape`` (fast, for tests).
    ``random_contrast_share`` overrides the generator's share of fully random contrasts (None: its
    default, :data:`wmhkit.synth.RANDOM_CONTRAST_SHARE`).
    ``target`` chooses what ``Case.wmh`` holds: "wmh" (the lesions) or "wm" (the white-matter mask, a
    proxy task for pretraining a network's base on anatomy before it learns lesions).

    Two files per case: the canonical images and masks (``<key>_<index>.npz``, any kind reuses them) and
    the built channels of ``kind`` (``<key>_<index>.<kind>.npz``); both written atomically (temporary
    file, then rename) and reused when present. Images are stored as float16 after dividing by their
    99th brain percentile (every input kind is invariant to that scale) and channels as float16, to
    halve the disk and load time; ``Case.channels`` is float32.

    ``Case.meta["generate_s"]`` and ``["build_s"]`` are the seconds the case took to synthesise and to
    build its channels when it was first made (cached cases keep the original timings).
    """
    from tqdm import tqdm

    input_channels(kind)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = f"synth_v{CACHE_VERSION}_s{int(seed)}_{profile}_w{work_spacing_mm:g}"
    if profile == "train":
        key += "_t" + "x".join(str(int(s)) for s in train_shape)
    if severity:
        key += f"_{severity}"
    if random_contrast_share is not None:
        key += f"_rc{random_contrast_share:g}"
    if target not in SYNTHETIC_TARGETS:
        raise ValueError(f"unknown synthetic target {target!r}; known: {', '.join(SYNTHETIC_TARGETS)}")
    cases = []
    for index in tqdm(range(start, start + n), desc=f"synthetic {kind}", disable=not progress or None):
        raw_path = cache / f"{key}_{index:05d}.npz"
        if not raw_path.exists() or target not in _npz_keys(raw_path):
            # (Files cached before the WM mask was stored lack it: made again, deterministically.)
            _write_synthetic(raw_path, seed, index, profile, work_spacing_mm, train_shape, severity,
                             random_contrast_share)
        kind_path = cache / f"{key}_{index:05d}.{kind}.npz"
        # The images are only decompressed when a kind's channels have to be built.
        raw = _load_npz(raw_path, None if not kind_path.exists() else ("meta", target, "brain", "spacing"))
        meta = json.loads(str(raw["meta"]))
        if not kind_path.exists():
            t0 = time.perf_counter()
            t1 = raw["t1"].astype(np.float32)
            channels = build_inputs(kind, raw["flair"].astype(np.float32), t1, raw["brain"], tuple(raw["spacing"]))
            _save_npz(kind_path, channels=channels.astype(np.float16),
                      build_s=np.float64(time.perf_counter() - t0))
        built = _load_npz(kind_path)
        meta.update(kind=kind, build_s=round(float(built["build_s"]), 3), cache=str(raw_path))
        wmh = raw[target]
        meta["target"] = target
        cases.append(Case(
            name=f"{key}_{index:05d}", channels=built["channels"].astype(np.float32), wmh=wmh,
            brain=raw["brain"], spacing=tuple(float(s) for s in raw["spacing"]), source="synthetic",
            kind=kind, meta=meta,
        ))
    return cases


def _write_synthetic(path: Path, seed, index, profile, work_spacing_mm, train_shape, severity,
                     random_contrast_share) -> None:
    from wmhkit.synth import RANDOM_CONTRAST_SHARE, generate_sample

    share = RANDOM_CONTRAST_SHARE if random_contrast_share is None else float(random_contrast_share)
    t0 = time.perf_counter()
    s = generate_sample(seed, profile, False, index=index, work_spacing_mm=work_spacing_mm,
                        train_shape=tuple(train_shape), severity=severity, random_contrast_share=share)
    generate_s = time.perf_counter() - t0
    arrays = {}
    wm = np.isin(s.tissue, s.meta["wm_labels"]).astype(np.uint8)
    for name, data in (("flair", s.flair), ("t1", s.t1), ("wmh", s.wmh), ("brain", s.brainmask), ("wm", wm)):
        canonical, affine, _ = to_canonical(data, s.affine)
        arrays[name] = canonical
    brain = arrays["brain"] > 0
    for name in ("flair", "t1"):
        # float16 tops out at 65504 and random contrasts go beyond: store scaled (the inputs are scale-free).
        top = float(np.percentile(arrays[name][brain], 99.0)) if brain.any() else 1.0
        arrays[name] = (arrays[name] / max(top, 1e-6)).astype(np.float16)
    meta = {
        "seed": int(seed), "index": int(index), "profile": s.meta["profile"], "requested_profile": profile,
        "lesion_volume_ml": s.meta["lesion_volume_ml"], "lesion_severity": s.meta["lesion_severity"],
        "voxel_size_mm": s.meta["voxel_size_mm"], "slice_axis": s.meta["slice_axis"],
        "random_contrast": s.meta["random_contrast"],
        "work_spacing_mm": work_spacing_mm, "generate_s": round(generate_s, 3),
    }
    _save_npz(path, flair=arrays["flair"], t1=arrays["t1"], wmh=arrays["wmh"].astype(np.uint8),
              wm=arrays["wm"].astype(np.uint8),
              brain=arrays["brain"].astype(np.uint8), spacing=voxel_spacing(affine), affine=affine,
              meta=np.array(json.dumps(meta)))


def _save_npz(path: Path, **arrays) -> None:
    # np.savez adds ".npz" to names without it: the temporary name must end in .npz too.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _npz_keys(path: Path) -> set[str]:
    with np.load(path, allow_pickle=False) as data:
        return set(data.files)


def _load_npz(path: Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in (data.files if keys is None else keys)}


# ---------------------------------------------------------------------------------------- real cases


def real_cases(
    folder_or_paths: str | os.PathLike | Iterable,
    kind: str,
    *,
    labeled_only: bool = True,
    brain_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    source: str = "real",
) -> list[Case]:
    """Cases of real data sets, inputs built on each FLAIR's canonical grid.

    Parameters
    ----------
    folder_or_paths : a data set folder (any layout :func:`wmhkit.datasets.discover` understands:
        challenge, BIDS, open_ms ``labeled_mni``), or several folders, or :class:`wmhkit.datasets.Case`
        records
    kind : input kind (:data:`wmhkit.train.inputs.KINDS`)
    labeled_only : skip cases without a WMH label map (an open_ms folder also lists its unlabeled scans)
    brain_fn : ``(flair, affine) -> mask`` on the FLAIR's native grid for cases without a brain-mask file;
        default :func:`wmhkit.brain.extract_brain`, which returns the filled non-zero region of images
        that are already skull-stripped (open_ms ``labeled_mni``) and runs the brain extractor otherwise

    Labels follow the WMH challenge: 1 = WMH; 2 ("other pathology") counts as 0 for training; any other
    value is an error (:class:`wmhkit.errors.InputError`). The T1 is resampled onto the FLAIR grid
    through the headers (no registration: the data sets ship co-registered images). Raises ValueError
    when ``kind`` needs a T1 and a case has none.
    """
    from wmhkit import datasets

    input_channels(kind)
    records = []
    items = [folder_or_paths] if isinstance(folder_or_paths, (str, os.PathLike)) else list(folder_or_paths)
    for item in items:
        records.extend([item] if isinstance(item, datasets.Case) else datasets.discover(item))
    cases = []
    for record in records:
        if labeled_only and record.wmh is None:
            continue
        cases.append(_real_case(record, kind, brain_fn, source))
    return cases


def _real_case(record, kind: str, brain_fn, source: str) -> Case:
    flair = load_image(record.flair)
    if record.brainmask is not None:
        brain = load_labels(record.brainmask, labels=(0, 1)).data > 0
    elif brain_fn is not None:
        brain = np.asarray(brain_fn(flair.data, flair.affine)) > 0
    else:
        from wmhkit.brain import extract_brain

        brain = extract_brain(flair.data, flair.affine).mask > 0
    t1 = None
    if record.t1 is not None and kind in NEEDS_T1:
        t1_volume = load_image(record.t1)
        t1 = t1_volume.data
        if t1_volume.shape != flair.shape or not np.allclose(t1_volume.affine, flair.affine, atol=1e-3):
            t1 = resample(t1, t1_volume.affine, flair.shape, flair.affine)
    if kind in NEEDS_T1 and t1 is None:
        raise ValueError(f"case {record.case_id} ({record.flair}) has no T1, which input kind {kind!r} needs")
    wmh = None
    if record.wmh is not None:
        # Official semantics: 1 = WMH, 2 = other pathology (not WMH, so background for training).
        labels = load_labels(record.wmh, labels=(0, 1, 2)).data
        wmh = (np.rint(labels) == 1).astype(np.uint8)
    flair_c, affine, _ = to_canonical(np.asarray(flair.data, np.float32), flair.affine)
    brain_c = to_canonical(brain.astype(np.uint8), flair.affine)[0]
    t1_c = None if t1 is None else to_canonical(np.asarray(t1, np.float32), flair.affine)[0]
    wmh_c = None if wmh is None else to_canonical(wmh, flair.affine)[0]
    spacing = tuple(float(s) for s in voxel_spacing(affine))
    channels = build_inputs(kind, flair_c, t1_c, brain_c, spacing)
    meta = {"flair": str(record.flair), "t1": None if record.t1 is None else str(record.t1),
            "wmh": None if record.wmh is None else str(record.wmh), "layout": record.meta.get("layout"),
            "dataset": record.meta.get("dataset")}
    return Case(record.case_id, channels, wmh_c, brain_c, spacing, source, kind, meta)


# ------------------------------------------------------------------------------------------ samplers


@dataclass
class _CaseIndex:
    """What the samplers need of a case, computed once: crop box, slice lists, lesion voxels."""

    box: tuple[int, int, int, int]
    lesion_slices: np.ndarray  # axial indices holding lesion
    brain_slices: np.ndarray  # axial indices holding brain
    lesion_voxels: np.ndarray  # flat indices (int64) of lesion voxels
    brain_bounds: np.ndarray  # (3, 2) inclusive-exclusive bounding box of the brain
    background: np.ndarray  # (C,) channel values outside the brain


def _index_case(case: Case) -> _CaseIndex:
    brain = case.brain > 0
    if not brain.any():
        raise ValueError(f"case {case.name} has an empty brain mask")
    wmh = case.wmh if case.wmh is not None else np.zeros(brain.shape, np.uint8)
    coords = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    return _CaseIndex(
        box=brain_box(brain, case.spacing[:2]),
        lesion_slices=np.flatnonzero(wmh.any(axis=(0, 1))),
        brain_slices=np.flatnonzero(brain.any(axis=(0, 1))),
        lesion_voxels=np.flatnonzero(wmh),
        brain_bounds=np.array([[c[0], c[-1] + 1] for c in coords]),
        background=background_values(case.channels, brain),
    )


class _MixedSampler(Dataset):
    """Common part of the slice and patch datasets: sources, mix, per-case index, seeding."""

    def __init__(self, cases_by_source: dict[str, list[Case]], mix: dict[str, float], length: int,
                 seed: int, lesion_fraction: float, augment):
        if length < 1:
            raise ValueError("length must be >= 1")
        if not 0.0 <= lesion_fraction <= 1.0:
            raise ValueError("lesion_fraction must be in [0, 1]")
        self.sources, self.weights = _normalise_mix(cases_by_source, mix)
        self.cases = {s: list(cases_by_source[s]) for s in self.sources}
        channels = {c.channels.shape[0] for s in self.sources for c in self.cases[s]}
        if len(channels) != 1:
            raise ValueError(f"cases have different channel counts {sorted(channels)}: build them with one kind")
        self.index = {s: [_index_case(c) for c in self.cases[s]] for s in self.sources}
        self.length = int(length)
        self.seed = int(seed)
        self.lesion_fraction = float(lesion_fraction)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new items for a new epoch (item i of epoch e is item e * length + i of the stream)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _draw(self, i: int):
        """(rng, source, case, its index, want_lesion, augmentation seed) of item ``i``."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch * self.length + int(i)])
        source = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
        k = int(rng.integers(len(self.cases[source])))
        case, info = self.cases[source][k], self.index[source][k]
        want_lesion = bool(rng.random() < self.lesion_fraction) and info.lesion_voxels.size > 0
        aug_seed = int(rng.integers(2**31 - 1))
        return rng, case, info, want_lesion, aug_seed


def _normalise_mix(cases_by_source: dict[str, list[Case]], mix: dict[str, float]):
    unknown = set(mix) - set(cases_by_source)
    if unknown:
        raise ValueError(f"mix names sources without cases: {sorted(unknown)}")
    sources = sorted(s for s, w in mix.items() if w > 0)
    if any(w < 0 for w in mix.values()) or not sources:
        raise ValueError(f"mix weights must be >= 0 with at least one > 0, got {mix}")
    empty = [s for s in sources if not cases_by_source[s]]
    if empty:
        raise ValueError(f"sources {empty} have a mix weight but no cases")
    weights = np.array([float(mix[s]) for s in sources])
    return sources, weights / weights.sum()


class SliceDataset(_MixedSampler):
    """Axial slices for 2D networks, cropped to each case's brain box and resized to size x size.

    Parameters
    ----------
    cases_by_source : source name -> cases (all of one input kind)
    mix : source name -> weight (normalised; sources missing or at 0 are not drawn)
    size : side of the square slices (pixels)
    length : items per epoch
    seed : base seed; item i is a pure function of (seed, epoch, i)
    lesion_fraction : share of items drawn among the slices holding lesion (of cases that have any);
        the others are any slice holding brain
    augment : None or an ``Augmentation(dims=2)`` (called with a seed drawn from the item's stream)

    Item: {"image": float32 (C, size, size), "label": float32 (1, size, size)}. The slice is cut with
    :func:`wmhkit.preprocess.to_slice_stack` in the case's :func:`wmhkit.preprocess.brain_box`, as
    inference does; labels are resized the same way (bilinear) and thresholded at 0.5, see
    :func:`_resize_mask`.
    """

    def __init__(self, cases_by_source, mix, size: int, length: int, seed: int, lesion_fraction: float = 0.5,
                 augment=None):
        super().__init__(cases_by_source, mix, length, seed, lesion_fraction, augment)
        self.size = int(size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng, case, info, want_lesion, aug_seed = self._draw(i)
        z = int(rng.choice(info.lesion_slices if want_lesion else info.brain_slices))
        image = to_slice_stack(case.channels[..., z:z + 1], info.box, self.size)[0]
        if case.wmh is None:
            label = np.zeros((1, self.size, self.size), np.float32)
        else:
            label = _resize_mask(case.wmh[..., z], info.box, self.size)
        # Outside the volume to_slice_stack pads with 0, which is not every kind's outside value.
        inside = _resize_mask(np.ones(case.brain.shape[:2], np.uint8), info.box, self.size)[0] > 0
        image = np.where(inside[None], image, info.background[:, None, None]).astype(np.float32)
        if self.augment is not None:
            brain = _resize_mask(case.brain[..., z], info.box, self.size)
            image, label = self.augment(image, label, seed=aug_seed, brain=brain, background=info.background)
        return {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32)),
                "label": torch.from_numpy(np.ascontiguousarray(label, np.float32))}


def _resize_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(X, Y) 0/1 slice -> (1, size, size) float32 0/1, resampled exactly as the image is.

    ``to_slice_stack(..., labels=True)`` uses torch's "nearest", which samples at floor(i * scale) and so
    shifts labels by up to one source pixel against the centre-aligned bilinear image (measured: a 4-pixel
    lesion came out one pixel off at a 66 -> 64 resize). Resizing the mask like the image and keeping
    what is at least half inside (the synthetic generator's partial-volume rule) keeps them aligned.
    """
    return (to_slice_stack(mask[None, :, :, None], box, size)[0] >= 0.5).astype(np.float32)


class PatchDataset(_MixedSampler):
    """3D patches for 3D networks.

    Parameters as :class:`SliceDataset`, with ``patch_shape`` (px, py, pz) voxels instead of ``size``,
    and ``jitter``: a lesion-centred patch is centred on a random lesion voxel moved by up to
    ``jitter`` x the patch size along each axis (so that lesions are not always in the middle, which a
    network could learn); other patches are centred on a random brain voxel. Patches stay inside the
    volume where it is large enough and are padded with each channel's outside value where it is not.

    Item: {"image": float32 (C, px, py, pz), "label": float32 (1, px, py, pz)}.
    """

    def __init__(self, cases_by_source, mix, patch_shape: tuple[int, int, int], length: int, seed: int,
                 lesion_fraction: float = 0.5, augment=None, jitter: float = 0.25):
        super().__init__(cases_by_source, mix, length, seed, lesion_fraction, augment)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        if len(self.patch_shape) != 3 or min(self.patch_shape) < 1:
            raise ValueError(f"patch_shape must be 3 positive ints, got {patch_shape}")
        self.jitter = float(jitter)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng, case, info, want_lesion, aug_seed = self._draw(i)
        shape = np.array(case.brain.shape)
        patch = np.array(self.patch_shape)
        if want_lesion:
            centre = np.array(np.unravel_index(int(rng.choice(info.lesion_voxels)), shape))
            reach = np.floor(self.jitter * patch).astype(int)
            centre = centre + rng.integers(-reach, reach + 1)
        else:
            centre = _random_brain_voxel(rng, case.brain, info.brain_bounds)
        start = centre - patch // 2
        # Inside the volume where it fits; centred (padded both sides) where it does not.
        start = np.where(shape >= patch, np.clip(start, 0, np.maximum(shape - patch, 0)), (shape - patch) // 2)
        image = crop_window(case.channels, start, patch, info.background)
        label = (crop_window(case.wmh[None], start, patch, np.zeros(1)) if case.wmh is not None
                 else np.zeros((1,) + self.patch_shape, np.float32))
        if self.augment is not None:
            brain = crop_window(case.brain[None], start, patch, np.zeros(1))
            image, label = self.augment(image, label, seed=aug_seed, brain=brain, background=info.background)
        return {"image": torch.from_numpy(np.ascontiguousarray(image, np.float32)),
                "label": torch.from_numpy(np.ascontiguousarray(label, np.float32))}


def _random_brain_voxel(rng: np.random.Generator, brain: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    # Rejection sampling in the brain's bounding box (about half of it is brain): no per-case list of
    # millions of voxel indices to keep in memory.
    for _ in range(200):
        voxel = rng.integers(bounds[:, 0], bounds[:, 1])
        if brain[tuple(voxel)]:
            return voxel
    voxels = np.flatnonzero(brain)
    return np.array(np.unravel_index(int(rng.choice(voxels)), brain.shape))


def crop_window(volume: np.ndarray, start: np.ndarray, size: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """(C, *size) float32 window of (C, X, Y, Z) ``volume`` at ``start``, ``fill[c]`` outside it."""
    out = np.empty((len(volume),) + tuple(int(s) for s in size), np.float32)
    out[:] = np.asarray(fill, np.float32).reshape(-1, 1, 1, 1)
    src, dst = [], []
    for a in range(3):
        lo, hi = max(int(start[a]), 0), min(int(start[a] + size[a]), volume.shape[a + 1])
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(start[a]), hi - int(start[a])))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


# -------------------------------------------------------------------------------------- description


def describe(cases_by_source: dict[str, list[Case]], mix: dict[str, float]) -> dict:
    """JSON-able description of the training data, for checkpoints: per source the case count, names,
    kinds, synthetic seeds and profiles, lesion-bearing case count and voxel sizes; and the mix."""
    total = sum(float(w) for w in mix.values()) or 1.0
    out = {"mix": {s: round(float(w) / total, 6) for s, w in sorted(mix.items())}, "sources": {}}
    for source, cases in sorted(cases_by_source.items()):
        out["sources"][source] = {
            "count": len(cases),
            "names": [c.name for c in cases],
            "kinds": sorted({c.kind for c in cases}),
            "channels": sorted({int(c.channels.shape[0]) for c in cases}),
            "seeds": sorted({int(c.meta["seed"]) for c in cases if c.meta.get("seed") is not None}),
            "profiles": dict(Counter(str(c.meta.get("profile")) for c in cases if "profile" in c.meta)),
            "with_lesions": int(sum(c.wmh is not None and bool(c.wmh.any()) for c in cases)),
            "unlabeled": int(sum(c.wmh is None for c in cases)),
            "spacing_mm": sorted({tuple(round(s, 2) for s in c.spacing) for c in cases}),
        }
    return json.loads(json.dumps(out))
