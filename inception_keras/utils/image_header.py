"""Image sizes read from the headers of encoded images, so that a small file claiming billions of pixels (a
decompression bomb) is refused before it is decoded. Imports nothing heavy.
"""

from __future__ import annotations

import struct

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb bound: a 48 KB PNG can claim 20000 x 20000 pixels


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """The position after a GIF's data sub-blocks starting at `pos` (each a length byte and its bytes, then 0)."""
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _gif_size(data: bytes) -> tuple[int, int, int]:
    """Canvas width, height (grown to every frame's extent) and the pixels that decoding makes: the canvas, or, when
    they hold more, the frames, which giflib reads in full before TensorFlow takes the first (at a byte a pixel,
    so three of them count as one RGB pixel)."""
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    frame_pixels = 0
    while pos < len(data) and data[pos] != 0x3B:  # until the trailer
        if data[pos] == 0x21:  # an extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif data[pos] == 0x2C:  # an image descriptor: left, top, width, height, flags
            left, top, frame_width, frame_height, flags = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
            width, height = max(width, left + frame_width), max(height, top + frame_height)
            frame_pixels += frame_width * frame_height
            pos = _skip_sub_blocks(data, pos + 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0))
        else:
            break
    return width, height, max(width * height, frame_pixels // 3)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's frame header (SOF0-SOF15), found by walking the marker segments."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte, markers without a length
            pos += 1 if marker == 0xFF else 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        elif marker in (0xD9, 0xDA):  # the image ends or its scan starts before a frame header
            break
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    raise ValueError("a JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    """Width and height of a WebP image (lossy VP8, lossless VP8L) or canvas (extended VP8X)."""
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ValueError(f"a WebP image with an unknown chunk {chunk!r}")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if int.from_bytes(data[14:18], "little") == 12:  # the OS/2 core header: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def image_size(data: bytes) -> tuple[int, int, int]:
    """Width, height and the pixels that decoding makes, read from the header of an encoded JPEG, PNG, GIF, BMP or
    WebP image (the formats `tf.io.decode_image` takes, less JPEG XL) without decoding it.

    Raises:
        ValueError: not one of these formats, or a header cut short or damaged.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            if data[12:16] != b"IHDR":
                raise ValueError("a PNG without its IHDR header")
            width, height = struct.unpack(">II", data[16:24])
        elif data.startswith(b"\xff\xd8\xff"):
            width, height = _jpeg_size(data)
        elif data.startswith(b"GIF8"):
            return _gif_size(data)
        elif data.startswith(b"BM"):
            width, height = _bmp_size(data)
        elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            width, height = _webp_size(data)
        else:
            raise ValueError("not a JPEG, PNG, GIF, BMP or WebP image")
    except struct.error:
        raise ValueError("its header is cut short") from None
    return width, height, width * height


def image_problem(data: bytes, max_image_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why the encoded image `data` is not to be decoded (its header is not read, or it has more pixels than
    `max_image_pixels`), or None."""
    try:
        width, height, pixels = image_size(data)
    except ValueError as error:
        return str(error)
    if pixels > max_image_pixels:
        return (f"a {width}x{height} image ({pixels:,} pixels) is over the limit of {max_image_pixels:,} "
                f"pixels; raise it with --max-image-pixels")
    return None
