"""Inference shared by all segmentation networks: native grid in, probability on the native grid out.

Networks are trained on canonical (RAS) voxel order, so every entry point here goes native -> canonical
-> working representation (axial slice stack for 2D networks, optionally an isotropic grid for 3D ones)
-> network -> back, and the caller never sees anything but native-grid arrays.

Model output conventions (all entry points): logits (N, 1, ...) are read through a sigmoid, (N, 2, ...)
through a softmax taking class 1; a list/tuple of outputs (deep supervision) is read at its first,
full-resolution element. The model must already live on ``device`` and accept the spatial size it is
given (e.g. slice side / patch divisible by its pooling factor). Its train/eval mode is restored after
the call, so validation inside a training loop does not leave it in eval mode.

bf16: ``bf16=None`` means autocast to bfloat16 on a CPU that computes it natively (AVX-512 BF16 or AMX:
several times faster there, and the models are shipped in bf16 anyway) and float32 elsewhere: on CPUs
without it (most laptops; AVX2 only) oneDNN emulates bf16 about ten times slower than float32, and on
CUDA float32 is the reference.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from wmhkit.preprocess import (
    SliceStackGeometry,
    brain_box,
    from_canonical,
    from_slice_stack,
    resample,
    to_canonical,
    to_slice_stack,
    working_grid,
)

# In-plane flips of a canonical axial slice (H, W) = (X, Y): left-right is X (dim -2), anterior-posterior
# is Y (dim -1). The brain is roughly symmetric left-right; the AP flip is a weaker but cheap ensemble.
SLICE_FLIPS = ((), (-2,), (-1,))
# Identity plus each single-axis flip of a (X, Y, Z) patch: 4 passes instead of nnU-Net's 8 mirror
# combinations, which cost twice as much for little extra gain.
VOLUME_FLIPS = ((), (-3,), (-2,), (-1,))


# ------------------------------------------------------------------------------------ network passes


def predict_slices(
    model: torch.nn.Module,
    stack: np.ndarray,
    *,
    batch_size: int = 8,
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool | None = None,
) -> np.ndarray:
    """Probability of each slice of a stack, by a 2D network.

    Parameters
    ----------
    model : 2D network, (N, C, H, W) -> logits (see the module docstring for accepted outputs)
    stack : (Z, C, H, W) float32 network inputs, e.g. from :func:`wmhkit.preprocess.to_slice_stack`
    batch_size : slices per forward pass
    flip_tta : average the probabilities of the identity, the left-right flip (H, i.e. canonical X) and
        the anterior-posterior flip (W, i.e. canonical Y): 3 passes
    device : where the model lives
    bf16 : bfloat16 autocast; None: on for a CPU with native bf16 (:func:`native_bf16`), off otherwise

    Returns (Z, H, W) float32 probabilities in [0, 1].
    """
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 4:
        raise ValueError(f"stack must be (Z, C, H, W), got shape {stack.shape}")
    flips = SLICE_FLIPS if flip_tta else ((),)
    out = np.empty((stack.shape[0], *stack.shape[2:]), np.float32)
    with _evaluating(model):
        for start in range(0, stack.shape[0], batch_size):
            batch = torch.from_numpy(stack[start:start + batch_size])
            out[start:start + batch_size] = _probability(model, batch, flips, device, bf16)
    return out


def predict_sliding_window(
    model: torch.nn.Module,
    volume: np.ndarray,
    patch: tuple[int, int, int],
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool | None = None,
) -> np.ndarray:
    """Probability of a whole volume by a 3D network applied patch-wise, with Gaussian blending.

    Patches of ``patch`` voxels are laid on a grid whose steps are at most ``patch * (1 - overlap)``,
    spread evenly so the first and last patches touch the volume's edges (no patch reaches outside).
    A volume smaller than the patch along an axis is zero-padded (centred) and cropped back. Each
    patch's probabilities are weighted by a Gaussian (sigma = patch / 8 per axis, as nnU-Net) so that
    the less reliable patch borders hand over smoothly to the neighbouring patch centres.

    Parameters
    ----------
    model : 3D network, (N, C, px, py, pz) -> logits
    volume : (C, X, Y, Z) float32 network inputs (canonical voxel order if the network expects it)
    patch : (px, py, pz) patch size in voxels
    overlap : fraction of a patch shared with its neighbour along each axis, in [0, 1)
    batch_size : patches per forward pass
    flip_tta : average the identity and the flips along X, Y and Z separately (4 passes)
    device, bf16 : as :func:`predict_slices`

    Returns (X, Y, Z) float32 probabilities in [0, 1].
    """
    volume = np.asarray(volume, dtype=np.float32)
    patch = tuple(int(p) for p in patch)
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z), got shape {volume.shape}")
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch must be three positive sizes, got {patch}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded, crop = _pad_to_patch(volume, patch)
    weights = _gaussian_weights(patch)
    total = np.zeros(padded.shape[1:], np.float32)
    weight_sum = np.zeros(padded.shape[1:], np.float32)
    corners = list(itertools.product(*(_patch_starts(n, p, overlap) for n, p in zip(padded.shape[1:], patch))))
    flips = VOLUME_FLIPS if flip_tta else ((),)
    source = torch.from_numpy(padded)
    with _evaluating(model):
        for first in range(0, len(corners), batch_size):
            windows = [_window(corner, patch) for corner in corners[first:first + batch_size]]
            batch = torch.stack([source[(slice(None), *w)] for w in windows])
            probabilities = _probability(model, batch, flips, device, bf16)
            for w, p in zip(windows, probabilities):
                total[w] += p * weights
                weight_sum[w] += weights
    return total[crop] / weight_sum[crop]


# ------------------------------------------------------------------------------ native-grid volumes


def predict_volume_2d(
    model: torch.nn.Module,
    channels: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    *,
    size: int,
    batch_size: int = 8,
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool | None = None,
    margin_mm: float = 10.0,
) -> np.ndarray:
    """Probability map of a native-grid volume by a 2D network on canonical axial slices.

    The canonical volume is cropped in-plane to a square window around the brain
    (:func:`wmhkit.preprocess.brain_box`, ``margin_mm`` around the mask's extent over all slices), each
    axial slice resized to ``size`` x ``size`` (:func:`wmhkit.preprocess.to_slice_stack`), predicted
    (:func:`predict_slices`) and mapped back (:func:`wmhkit.preprocess.from_slice_stack`).

    Parameters
    ----------
    channels : (C, X, Y, Z) float32, already-normalised network inputs on the native grid
    affine : the native 4x4 voxel-to-world affine (RAS mm; any axis order)
    brain : (X, Y, Z) brain mask on the native grid
    size : side of the square slices the network sees (pixels)
    batch_size, flip_tta, device, bf16 : as :func:`predict_slices`
    margin_mm : margin of the crop around the brain; must match the one used in training

    Returns (X, Y, Z) float32 probabilities on the native grid; 0 outside the brain window.
    """
    channels = _check_channels(channels)
    brain = np.asarray(brain, dtype=bool)
    if brain.shape != channels.shape[1:]:
        raise ValueError(f"brain mask {brain.shape} and channels {channels.shape[1:]} differ in shape")
    canonical, c_affine, how = _canonical_channels(channels, affine)
    c_brain = to_canonical(brain, affine)[0]
    spacing = np.linalg.norm(c_affine[:3, :3], axis=0)
    box = brain_box(c_brain, (float(spacing[0]), float(spacing[1])), margin_mm)
    geometry = SliceStackGeometry(box, tuple(canonical.shape[1:]), int(size))
    stack = to_slice_stack(canonical, box, int(size))
    probability = predict_slices(model, stack, batch_size=batch_size, flip_tta=flip_tta, device=device, bf16=bf16)
    return from_canonical(from_slice_stack(probability, geometry), how)


def predict_volume_3d(
    model: torch.nn.Module,
    channels: np.ndarray,
    affine: np.ndarray,
    *,
    patch: tuple[int, int, int],
    spacing_mm: float | tuple[float, float, float] | None = None,
    overlap: float = 0.5,
    batch_size: int = 2,
    flip_tta: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool | None = None,
) -> np.ndarray:
    """Probability map of a native-grid volume by a 3D network, sliding window on the canonical grid.

    Parameters
    ----------
    channels : (C, X, Y, Z) float32, already-normalised network inputs on the native grid
    affine : the native 4x4 voxel-to-world affine (RAS mm; any axis order)
    patch : (px, py, pz) patch size in voxels of the working grid
    spacing_mm : if given, the network works on a grid of this voxel size (mm) covering the same field of
        view (:func:`wmhkit.preprocess.working_grid`): inputs are resampled linearly to it and the
        probability linearly back; None: the canonical grid itself
    overlap, batch_size, flip_tta, device, bf16 : as :func:`predict_sliding_window`

    Returns (X, Y, Z) float32 probabilities on the native grid.
    """
    canonical, c_affine, how = _canonical_channels(_check_channels(channels), affine)
    grid = canonical.shape[1:]
    if spacing_mm is not None:
        shape, w_affine = working_grid(grid, c_affine, spacing_mm)
        canonical = np.stack([resample(c, c_affine, shape, w_affine, kind="linear") for c in canonical])
    probability = predict_sliding_window(
        model, canonical, patch, overlap=overlap, batch_size=batch_size, flip_tta=flip_tta, device=device,
        bf16=bf16,
    )
    if spacing_mm is not None:
        probability = resample(probability, w_affine, grid, c_affine, kind="linear")
    return from_canonical(probability, how)


# ----------------------------------------------------------------------------------------- helpers


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: AVX-512 BF16 or AMX; CUDA: compute >= 8.0).

    Elsewhere bf16 autocast is emulated and slower than float32 (a training step 7 s against 0.74 s on
    a 2-core AVX2 CPU; a 3D U-Net step 8.0 s against 4.75 s on an AVX-512 CPU without BF16).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False
    # oneDNN also says yes on any AVX-512 CPU, where it converts to float32 and back in software.
    return cpu_has_bf16_instructions()


def cpu_has_bf16_instructions(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags in ``cpuinfo`` (Linux) name bf16 arithmetic: ``avx512_bf16`` or ``amx_bf16``.

    False where the file cannot be read (other systems): float32 is the safe choice there.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[-1].split()))
    return False


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A 4D (N, C, H, W) or 5D (N, C, D, H, W) tensor in the channels-last layout, others unchanged.

    oneDNN runs CPU convolutions in that layout faster and picks it from the input alone: a 3D U-Net
    training step 2.3 -> 1.6 s and an FCN-2 step 2.3 -> 1.3 s in float32 (2 cores, AVX-512 without
    BF16); with bf16 on an AMX CPU a 2D U-Net step went 1.1 -> 0.36 s, the two changes together.
    """
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.ndim)
    return tensor if layout is None else tensor.contiguous(memory_format=layout)


def _probability(model, batch: torch.Tensor, flips, device, bf16: bool | None) -> np.ndarray:
    """Mean foreground probability (N, *spatial) over the flips of one batch of inputs (N, C, *spatial)."""
    device = torch.device(device)
    use_bf16 = (device.type == "cpu" and native_bf16(device)) if bf16 is None else bool(bf16)
    batch = batch.to(device)
    if device.type == "cpu":
        batch = channels_last(batch)
    total = None
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for dims in flips:
            x = batch.flip(dims) if dims else batch
            p = _foreground(model(x), x.shape)
            p = p.flip(dims) if dims else p
            total = p if total is None else total + p
    return (total / len(flips)).cpu().numpy()


def _foreground(output, input_shape: torch.Size) -> torch.Tensor:
    """Foreground probability (N, *spatial) float32 from a network's raw output."""
    if isinstance(output, (list, tuple)):
        output = output[0]  # deep supervision: the first output is the full-resolution one
    output = output.float()
    if output.shape[2:] != input_shape[2:] or output.shape[0] != input_shape[0]:
        raise ValueError(f"model output {tuple(output.shape)} does not match its input {tuple(input_shape)}")
    if output.shape[1] == 1:
        return torch.sigmoid(output[:, 0])
    if output.shape[1] == 2:
        return torch.softmax(output, dim=1)[:, 1]
    raise ValueError(f"expected 1 (sigmoid) or 2 (softmax) output channels, got {output.shape[1]}")


@contextmanager
def _evaluating(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_channels(channels: np.ndarray) -> np.ndarray:
    channels = np.asarray(channels, dtype=np.float32)
    if channels.ndim != 4:
        raise ValueError(f"channels must be (C, X, Y, Z), got shape {channels.shape}")
    return channels


def _canonical_channels(channels: np.ndarray, affine: np.ndarray):
    """(C, X, Y, Z) native -> (canonical (C, X', Y', Z'), canonical affine, reorientation)."""
    results = [to_canonical(c, affine) for c in channels]
    return np.stack([r[0] for r in results]), results[0][1], results[0][2]


def _patch_starts(size: int, patch: int, overlap: float) -> list[int]:
    """First voxels of the patches along one axis of ``size`` >= ``patch`` voxels."""
    if size <= patch:
        return [0]
    step = max(1.0, patch * (1.0 - overlap))
    count = math.ceil((size - patch) / step) + 1
    # Even spacing rather than a fixed step: the last patch ends exactly at the edge, none sticks out.
    actual = (size - patch) / (count - 1)
    return [int(round(actual * i)) for i in range(count)]


def _window(corner: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(c, c + p) for c, p in zip(corner, patch))


def _pad_to_patch(volume: np.ndarray, patch: tuple[int, int, int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad (C, X, Y, Z) to at least ``patch`` per axis, centred; returns (padded, crop back)."""
    pads, crop = [(0, 0)], []
    for n, p in zip(volume.shape[1:], patch):
        extra = max(0, p - n)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + n))
    return np.pad(volume, pads), tuple(crop)


def _gaussian_weights(patch: tuple[int, int, int]) -> np.ndarray:
    """(px, py, pz) float32 Gaussian importance peaking at the patch centre, sigma = patch / 8 per axis.

    At the patch faces this is about exp(-8) ~ 3e-4 per axis, ~1e-11 at corners: small but never zero in float32,
    so every voxel a patch covers keeps a positive weight sum.
    """
    profiles = []
    for p in patch:
        offset = np.arange(p) - (p - 1) / 2
        profiles.append(np.exp(-0.5 * (offset / (p / 8.0)) ** 2))
    return np.einsum("i,j,k->ijk", *profiles).astype(np.float32)
