//! A tiny 5x7 bitmap font for the legend's numbers: digits, `.`, `-`, `+`, `e` and space.
//! Each glyph is 7 rows of 5 bits (bit 4 = leftmost column).

/// Glyph width and height in font pixels; characters advance by `GLYPH_W + 1`.
pub const GLYPH_W: usize = 5;
/// Glyph height in font pixels (rows per glyph).
pub const GLYPH_H: usize = 7;

/// The rows of `c`'s glyph, or `None` for characters the font lacks.
pub fn glyph(c: char) -> Option<[u8; GLYPH_H]> {
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        ' ' => [0; GLYPH_H],
        _ => return None,
    })
}

/// Whether font pixel (`col`, `row`) of `c` is set.
pub fn pixel(c: char, col: usize, row: usize) -> bool {
    col < GLYPH_W
        && row < GLYPH_H
        && glyph(c).is_some_and(|g| g[row] >> (GLYPH_W - 1 - col) & 1 == 1)
}

/// Width in font pixels of `text` drawn with one pixel between characters.
pub fn text_width(text: &str) -> usize {
    let n = text.chars().count();
    if n == 0 { 0 } else { n * (GLYPH_W + 1) - 1 }
}

/// A compact label for a legend tick using only the font's characters: up to 4 significant
/// digits in plain notation for 1e-3 <= |v| < 1e5, scientific otherwise (`1.23e-5`).
pub fn format_tick(v: f32) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s == "-0" { "0".to_string() } else { s }
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_use_only_font_characters() {
        for v in [
            0.0, 1.0, -1.0, 0.5, 0.123456, 12.3456, 1234.5, 99999.0, 1e-7, -3.5e9, 0.001,
        ] {
            let s = format_tick(v);
            assert!(s.chars().all(|c| glyph(c).is_some()), "{v} -> {s}");
        }
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(0.123456), "0.1235");
        assert_eq!(format_tick(12.3456), "12.35");
        assert_eq!(format_tick(-1.0), "-1");
        assert_eq!(format_tick(1e-7), "1.00e-7");
    }
}
