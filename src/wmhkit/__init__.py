"""wmhkit: white matter hyperintensity segmentation and evaluation, offline on a CPU."""

__version__ = "0.1.0"
