"""CycleGAN's image buffer: D sees a mix of current and past generated images (pool_size 0 = off)."""
from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Per image: while filling, store and return it; then with probability 0.5 return a random
        stored image and store the new one in its place, else return the new image."""
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif bool(torch.rand(()) > 0.5):
                index = int(torch.randint(0, self.size, ()))
                out.append(self.images[index].to(image.device).clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images]}

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
