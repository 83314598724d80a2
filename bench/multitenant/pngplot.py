"""A minimal chart writer for machines without matplotlib: lines and markers on a grid, no text.

The report names each series' colour in the Markdown next to the picture, so the picture needs no
legend. Output is an 8-bit RGB PNG written with zlib only.
"""

import math
import struct
import zlib

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
COLOUR_NAMES = ["blue", "orange", "green", "red", "purple", "brown", "pink", "grey", "olive", "cyan"]


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        r = width // 2
        while True:
            for ox in range(-r, r + 1):
                for oy in range(-r, r + 1):
                    self.set(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def dashed(self, x0, y0, x1, y1, c, dash=6):
        n = max(1, int(math.hypot(x1 - x0, y1 - y0) // dash))
        for i in range(0, n, 2):
            a, b = i / n, min(1.0, (i + 1) / n)
            self.line(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b, c)

    def rect(self, x0, y0, x1, y1, c):
        for y in range(int(min(y0, y1)), int(max(y0, y1)) + 1):
            for x in range(int(min(x0, x1)), int(max(x0, x1)) + 1):
                self.set(x, y, c)

    def marker(self, x, y, c, r=4):
        for oy in range(-r, r + 1):
            for ox in range(-r, r + 1):
                if ox * ox + oy * oy <= r * r:
                    self.set(int(round(x)) + ox, int(round(y)) + oy, c)

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


class Panel:
    """A plot area inside a canvas, with linear or log axes."""

    def __init__(self, canvas, box, xlim, ylim, logy=False):
        self.c, (self.x0, self.y0, self.x1, self.y1) = canvas, box
        self.logy = logy
        self.xlim = xlim
        self.ylim = tuple(math.log10(v) for v in ylim) if logy else ylim

    def map(self, x, y):
        if self.logy:
            y = math.log10(max(y, 1e-12))
        fx = (x - self.xlim[0]) / ((self.xlim[1] - self.xlim[0]) or 1)
        fy = (y - self.ylim[0]) / ((self.ylim[1] - self.ylim[0]) or 1)
        return self.x0 + fx * (self.x1 - self.x0), self.y1 - fy * (self.y1 - self.y0)

    def frame(self, xticks, yticks):
        grey, black = (220, 220, 220), (0, 0, 0)
        for x in xticks:
            px, _ = self.map(x, self.ylim[0] if not self.logy else 10 ** self.ylim[0])
            self.c.line(px, self.y0, px, self.y1, grey)
        for y in yticks:
            _, py = self.map(self.xlim[0], y)
            self.c.line(self.x0, py, self.x1, py, grey)
        for a, b, cc, d in [(self.x0, self.y1, self.x1, self.y1), (self.x0, self.y0, self.x0, self.y1)]:
            self.c.line(a, b, cc, d, black, 2)

    def series(self, pts, colour, lines=True):
        pts = [self.map(x, y) for x, y in pts if x is not None and y is not None]
        if lines:
            for (a, b), (c, d) in zip(pts, pts[1:]):
                self.c.line(a, b, c, d, colour, 2)
        for a, b in pts:
            self.c.marker(a, b, colour)


def log_ticks(lo, hi):
    return [10.0 ** e for e in range(int(math.floor(math.log10(lo))), int(math.ceil(math.log10(hi))) + 1)]
