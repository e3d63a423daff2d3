"""Networks of the source papers, one file each, and a registry to build them from plain config.

msfcn: Zeng & Zheng 2017 two-stage 3D multi-scale FCN (FCN-2 registered; FCN-1 is the brain extractor);
unet3d_ds: Wu et al. 2022 3D deeply supervised U-Net; unet2d: Viteri et al. 2021 2D U-Net (v1-v3);
sidefcn: Xu et al. 2017 VGG-16 side-output FCN.
"""

from __future__ import annotations

# name -> (module, builder from recipe options, class rebuilt from ``model.config``, dimensionality);
# imported lazily so that `wmhkit --help` stays fast.
NETWORKS = {
    "unet2d": ("wmhkit.models.unet2d", "build_unet2d", "UNet2D", 2),
    "sidefcn": ("wmhkit.models.sidefcn", "SideFCN", "SideFCN", 2),
    "unet3d_ds": ("wmhkit.models.unet3d_ds", "UNet3DDS", "UNet3DDS", 3),
    "msfcn": ("wmhkit.models.msfcn", "MSFCN", "MSFCN", 3),
}


def network_dims(name: str) -> int:
    """2 for slice networks, 3 for volume networks."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name][3]


def build_model(name: str, **kwargs):
    """A network by registry name, e.g. ``build_model("unet2d", variant="v2", width=0.25)``."""
    import importlib

    network_dims(name)
    module, builder, _, _ = NETWORKS[name]
    return getattr(importlib.import_module(module), builder)(**kwargs)


def rebuild_model(name: str, config: dict):
    """The architecture a saved ``model.config`` describes (weights still to be loaded)."""
    import importlib

    network_dims(name)
    module, _, cls, _ = NETWORKS[name]
    return getattr(importlib.import_module(module), cls)(**config)
