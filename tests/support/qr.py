"""Read a QR picture back: which content it encodes, from its pixels (no decoder library needed)."""

from __future__ import annotations

import io

import qrcode
from PIL import Image


def modules(png: bytes, box: int = 8) -> list[list[bool]]:
    """The dark/light modules of a QR picture drawn `box` pixels per module (quiet zone included)."""
    image = Image.open(io.BytesIO(png)).convert("L")
    count = image.width // box
    assert image.width == image.height == count * box, "not a square picture of whole modules"
    return [
        [image.getpixel((x * box + box // 2, y * box + box // 2)) < 128 for x in range(count)]  # type: ignore[operator]
        for y in range(count)
    ]


def encodes(png: bytes, content: str, box: int = 8) -> bool:
    """Whether the picture is the QR code of `content` (medium error correction, 4-module quiet zone)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(content)
    qr.make(fit=True)
    return modules(png, box) == qr.get_matrix()
