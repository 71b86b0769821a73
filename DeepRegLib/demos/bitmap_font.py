"""A small bitmap font, so that pictures carry their own labels without a plotting library.

Glyphs are 7 x 12 pixels (monospace), rasterised once from DejaVu Sans Mono Bold at 11 px (Bitstream
Vera licence: free to use, modify and redistribute); each is 12 rows of 7 bits, written as 2 hex digits
per row. Characters outside the table are drawn as '?'-less blanks.
"""
from __future__ import annotations

import numpy as np

GLYPH_WIDTH, GLYPH_HEIGHT = 7, 12

_GLYPHS = {
    'A': "0000181c1c34363e26620000", 'B': "00003c26263c2622263c0000", 'C': "00001c3230303030321c0000",
    'D': "00003c2626262626263c0000", 'E': "00003e30303e3030303e0000", 'F': "00003e30303e303030300000",
    'G': "00001c3230202632321e0000", 'H': "00002626263e262626260000", 'I': "00003e1818181818183e0000",
    'J': "00001c04040404040c3c0000", 'K': "0000262c3c383c2c26260000", 'L': "0000303030303030303e0000",
    'M': "000076767e7e7a6262620000", 'N': "00003232323a2e2e26260000", 'O': "00001c3626666626361c0000",
    'P': "00003c3636363c3030300000", 'Q': "00001c3626666626361c0400", 'R': "00003c2626263c2c26220000",
    'S': "00001c3030381e06263c0000", 'T': "00007e181818181818180000", 'U': "0000666666666626363c0000",
    'V': "000062262636341c1c1c0000", 'W': "000063637a7a7e3636360000", 'X': "000066361c181c1c36660000",
    'Y': "00006236341c181818180000", 'Z': "00003e060c0c1830303e0000", 'a': "000000003c063e36263e0000",
    'b': "002020203c362626363c0000", 'c': "000000001e303030301e0000", 'd': "000606063e366666363e0000",
    'e': "000000001c263e20301e0000", 'f': "000e18183e18181818180000", 'g': "000000003e362626363e063c",
    'h': "003030303c36363636360000", 'i': "0008080038080808083e0000", 'j': "000c0c003c0c0c0c0c0c0c38",
    'k': "00303030363c383c36360000", 'l': "0078181818181818180e0000", 'm': "000000007e6a6a6a6a6a0000",
    'n': "000000003c36363636360000", 'o': "000000001c362626361c0000", 'p': "000000003c362626363c2020",
    'q': "000000003e366666363e0606", 'r': "000000003e38303030300000", 's': "000000001c303c1e063c0000",
    't': "000018183e181818180e0000", 'u': "0000000036363636363e0000", 'v': "00000000263634341c1c0000",
    'w': "0000000043627a3e36360000", 'x': "00000000363c181c3c260000", 'y': "000000006636341c1c181830",
    'z': "000000003e060c18303e0000", '0': "00001c3626263e26361c0000", '1': "0000380808080808083e0000",
    '2': "00003c0606040c18303e0000", '3': "00003c06061c0606063c0000", '4': "00000c0c1c34247e04040000",
    '5': "00003c20203c0606063c0000", '6': "00001e30203c3626361c0000", '7': "00003e060c0c0c1818100000",
    '8': "00001c36361c3626361c0000", '9': "00003c2626263e06043c0000", ' ': "000000000000000000000000",
    '.': "000000000000000018180000", ',': "000000000000000018181810", ':': "000000001818000018180000",
    ';': "000000001818000018181810", '-': "0000000000001c1c00000000", '+': "0000000008087e0808000000",
    '=': "00000000007e007e00000000", '/': "000002040408081810302000", '(': "000c08181818181818080c00",
    ')': "00101808080c0c0808181000", '%': "00003058320410060b060000", '|': "000808080808080808080808",
    '<': "00000000021e30301e020000", '>': "0000000060380e0e38600000", '_': "000000000000000000000000",
    "'": "000008080800000000000000", '[': "001c18181818181818181c00", ']': "001808080808080808081800",
}


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean ``(12 * scale, 7 * scale * len(text))`` mask of ``text`` (True = ink)."""
    cols = []
    for ch in text:
        code = _GLYPHS.get(ch, _GLYPHS[" "])
        rows = [int(code[2 * r:2 * r + 2], 16) for r in range(GLYPH_HEIGHT)]
        cols.append(np.array([[(row >> (GLYPH_WIDTH - 1 - b)) & 1 for b in range(GLYPH_WIDTH)] for row in rows], bool))
    mask = np.concatenate(cols, axis=1) if cols else np.zeros((GLYPH_HEIGHT, 0), bool)
    return np.kron(mask, np.ones((scale, scale), bool)) if scale > 1 else mask


def draw_text(rgb: np.ndarray, text: str, top: int, left: int, colour=(1.0, 1.0, 1.0), scale: int = 1) -> None:
    """Draw ``text`` into the float RGB image ``rgb`` ``(H, W, 3)`` in place (clipped at its edges)."""
    mask = text_mask(text, scale)
    h = max(0, min(mask.shape[0], rgb.shape[0] - top))
    w = max(0, min(mask.shape[1], rgb.shape[1] - left))
    if h and w:
        region = rgb[top:top + h, left:left + w]
        region[mask[:h, :w]] = colour
