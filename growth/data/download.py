"""How a dataset fetches its missing files (dataset.download=true; network access needed).

A download is a callable that fills a target folder; the dataset wraps any failure in a
ConfigError that says how to get the data by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Torchvision:
    """``torchvision.datasets.<cls>``: both splits into the target, in torchvision's own layout."""

    cls: str

    def __call__(self, target: Path) -> None:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, self.cls)(str(target), train=train, download=True)


@dataclass(frozen=True)
class Archive:
    """An archive fetched, checksummed and extracted into the target."""

    url: str
    md5: str

    def __call__(self, target: Path) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(self.url, download_root=str(target), md5=self.md5)
