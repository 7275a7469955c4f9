"""Datasets: the contract (``base``) and the built-in datasets, registered on import."""
from .base import ImageSet, LabelInfo, Side, Split, TensorImageSet, UnpairedDataset
from .folders import FolderImageSet, UnalignedFolder
from .synthetic import SCENE_CLASSES, SCENE_PALETTE, SyntheticObjects, SyntheticScenes

__all__ = [
    "ImageSet", "LabelInfo", "Side", "Split", "TensorImageSet", "UnpairedDataset",
    "FolderImageSet", "UnalignedFolder", "SyntheticObjects", "SyntheticScenes",
    "SCENE_CLASSES", "SCENE_PALETTE",
]
from . import multidomain, synthetic_seasons  # noqa: F401
from .base import PairedDataset  # noqa: E402 - paired (aligned) data: the compression task's pix2pix teachers
from .aligned import AlignedFolder  # noqa: E402
from .synthetic import SyntheticAlignedScenes  # noqa: E402

__all__ += ["PairedDataset", "AlignedFolder", "SyntheticAlignedScenes"]
from . import single_image  # noqa: F401
