//! A sequential Huffman DCT JPEG decoder for 12-bit greyscale (ITU T.81 process 4), the
//! "JPEG Extended" transfer syntax of many nuclear medicine and older CT/MR files.
//!
//! `jpeg-decoder` and `zune-jpeg` stop at 8-bit precision, so this one piece is written here:
//! marker parsing (DQT with 8- or 16-bit tables, DHT, SOF0/SOF1, DRI, SOS), Huffman decoding
//! with restart intervals, dequantisation and a separable floating-point inverse DCT. It
//! accepts one component only (12-bit colour JPEG does not occur in practice) and checks
//! every length against the data, returning an error rather than panicking. The same code
//! decodes 8-bit greyscale, which is how it is tested against `jpeg-decoder`.

/// A decoded greyscale image: `width * height` samples in `0..2^precision`.
#[derive(Debug, Clone)]
pub(super) struct Grey {
    pub width: usize,
    pub height: usize,
    pub precision: u8,
    pub samples: Vec<u16>,
}

/// Why a JPEG stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Jpeg12Error {
    /// A malformed or truncated stream, described by a fixed message.
    #[error("{0}")]
    Invalid(&'static str),
    #[error("JPEG segment 0xFF{0:02X} runs past the end of the data")]
    SegmentPastEnd(u8),
    #[error("{components}-component {precision}-bit JPEG is not supported")]
    Components { components: u8, precision: u8 },
    #[error("invalid JPEG sample precision {0}")]
    Precision(u8),
    #[error("invalid JPEG frame size {width} x {height}")]
    FrameSize { width: usize, height: usize },
    #[error("JPEG process of marker 0xFF{0:02X} is not supported by the 12-bit decoder")]
    Process(u8),
    #[error("invalid SOS parameters for a sequential DCT scan (Ss={ss}, Se={se}, Ah/Al={a:#04x})")]
    ScanParameters { ss: u8, se: u8, a: u8 },
}

impl From<&'static str> for Jpeg12Error {
    fn from(message: &'static str) -> Self {
        Jpeg12Error::Invalid(message)
    }
}

/// Natural (row-major) index of the k-th coefficient in zig-zag order.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Largest image accepted (the caller also checks the size against the DICOM header).
const MAX_PIXELS: usize = 1 << 28;

#[derive(Clone, Default)]
struct Huffman {
    /// Largest code of each length (1..=16), -1 when none.
    maxcode: [i32; 17],
    /// Index into `values` of the first code of each length, minus that code.
    valptr: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Huffman, Jpeg12Error> {
        let mut h = Huffman {
            maxcode: [-1; 17],
            valptr: [0; 17],
            values,
        };
        let (mut code, mut k) = (0i32, 0i32);
        for len in 1..=16 {
            let n = i32::from(counts[len - 1]);
            if n > 0 {
                h.valptr[len] = k - code;
                code += n;
                k += n;
                h.maxcode[len] = code - 1;
                if code > (1 << len) {
                    return Err("invalid Huffman table (over-subscribed)".into());
                }
            }
            code <<= 1;
        }
        Ok(h)
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    n: u32,
    /// A marker was met: no more entropy-coded bytes until it is consumed.
    marker: Option<u8>,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Bits {
            data,
            pos,
            acc: 0,
            n: 0,
            marker: None,
        }
    }

    fn fill(&mut self) {
        while self.n <= 24 {
            let byte = if self.marker.is_some() {
                0
            } else {
                match self.data.get(self.pos) {
                    None => 0,
                    Some(&0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            self.pos += 2;
                            0xFF
                        }
                        Some(&m) => {
                            self.marker = Some(m);
                            0
                        }
                        None => {
                            self.pos += 1;
                            0
                        }
                    },
                    Some(&b) => {
                        self.pos += 1;
                        b
                    }
                }
            };
            self.acc |= u32::from(byte) << (24 - self.n);
            self.n += 8;
        }
    }

    fn bit(&mut self) -> u32 {
        if self.n == 0 {
            self.fill();
        }
        let b = self.acc >> 31;
        self.acc <<= 1;
        self.n -= 1;
        b
    }

    fn bits(&mut self, count: u32) -> u32 {
        if count == 0 {
            return 0;
        }
        if self.n < count {
            self.fill();
        }
        let v = self.acc >> (32 - count);
        self.acc <<= count;
        self.n -= count;
        v
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, Jpeg12Error> {
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bit() as i32;
            if code <= h.maxcode[len] {
                let idx = (code + h.valptr[len]) as usize;
                return h
                    .values
                    .get(idx)
                    .copied()
                    .ok_or(Jpeg12Error::Invalid("invalid Huffman code"));
            }
        }
        Err("invalid Huffman code".into())
    }

    /// Receives `s` bits and sign-extends them (T.81 F.2.2.1 EXTEND).
    fn receive_extend(&mut self, s: u8) -> i32 {
        if s == 0 {
            return 0;
        }
        let s = u32::from(s.min(16));
        let v = self.bits(s) as i32;
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// Skips to the next RSTn marker after a restart interval.
    fn restart(&mut self) -> Result<(), Jpeg12Error> {
        self.acc = 0;
        self.n = 0;
        if self.marker.is_none() {
            // Skip padding up to the marker.
            while self.pos + 1 < self.data.len()
                && !(self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0)
            {
                self.pos += 1;
            }
            self.marker = self.data.get(self.pos + 1).copied();
        }
        match self.marker {
            Some(m @ 0xD0..=0xD7) => {
                let _ = m;
                self.pos += 2;
                self.marker = None;
                Ok(())
            }
            _ => Err("missing restart marker".into()),
        }
    }
}

fn u16_at(d: &[u8], i: usize) -> Result<usize, Jpeg12Error> {
    d.get(i..i + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(Jpeg12Error::Invalid("unexpected end of JPEG data"))
}

/// Separable 8x8 inverse DCT (T.81 A.3.3), in place.
fn idct(block: &mut [f32; 64]) {
    static COS: std::sync::OnceLock<[[f32; 8]; 8]> = std::sync::OnceLock::new();
    let c = COS.get_or_init(|| {
        let mut t = [[0f32; 8]; 8];
        for (x, row) in t.iter_mut().enumerate() {
            for (u, v) in row.iter_mut().enumerate() {
                let cu = if u == 0 {
                    std::f64::consts::FRAC_1_SQRT_2
                } else {
                    1.0
                };
                *v = (cu * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                    / 2.0) as f32;
            }
        }
        t
    });
    let mut tmp = [0f32; 64];
    for y in 0..8 {
        for x in 0..8 {
            tmp[y * 8 + x] = (0..8).map(|u| c[x][u] * block[y * 8 + u]).sum();
        }
    }
    for x in 0..8 {
        for y in 0..8 {
            block[y * 8 + x] = (0..8).map(|v| c[y][v] * tmp[v * 8 + x]).sum();
        }
    }
}

/// Decodes a single-component sequential (baseline or extended) Huffman JPEG.
pub(super) fn decode_grey(d: &[u8]) -> Result<Grey, Jpeg12Error> {
    if !d.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG stream (no SOI marker)".into());
    }
    let mut tables = Tables::default();
    let mut out: Option<Grey> = None;
    let mut i = 2usize;
    loop {
        // Find the next marker (skipping fill bytes).
        while i < d.len() && d[i] != 0xFF {
            i += 1;
        }
        while i < d.len() && d[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = d.get(i) else {
            break;
        };
        i += 1;
        match marker {
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let len = u16_at(d, i)?;
        if len < 2 || i + len > d.len() {
            return Err(Jpeg12Error::SegmentPastEnd(marker));
        }
        let seg = &d[i + 2..i + len];
        match marker {
            0xDB => tables.read_dqt(seg)?,
            0xC4 => tables.read_dht(seg)?,
            0xC0 | 0xC1 => tables.frame = Some(read_sof(seg)?),
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(Jpeg12Error::Process(marker));
            }
            0xDD => tables.restart_interval = u16_at(seg, 0)?,
            0xDA => {
                let (grey, end) = tables.decode_scan(seg, d, i + len)?;
                out = Some(grey);
                // Continue after the entropy-coded data (its end is the next marker).
                i = end;
                continue;
            }
            _ => {}
        }
        i += len;
    }
    out.ok_or(Jpeg12Error::Invalid("JPEG stream without a scan"))
}

/// The frame header: precision, width, height and quantisation table of the component.
#[derive(Clone, Copy)]
struct FrameHeader {
    precision: u8,
    width: usize,
    height: usize,
    tq: usize,
}

/// Reads a SOF0/SOF1 segment (one component, 8 or 12 bits).
fn read_sof(seg: &[u8]) -> Result<FrameHeader, Jpeg12Error> {
    let precision = *seg.first().ok_or("short SOF segment")?;
    let height = u16_at(seg, 1)?;
    let width = u16_at(seg, 3)?;
    let nf = *seg.get(5).ok_or("short SOF segment")?;
    if nf != 1 {
        return Err(Jpeg12Error::Components {
            components: nf,
            precision,
        });
    }
    if precision != 8 && precision != 12 {
        return Err(Jpeg12Error::Precision(precision));
    }
    if width == 0 || height == 0 || width * height > MAX_PIXELS {
        return Err(Jpeg12Error::FrameSize { width, height });
    }
    let tq = usize::from(*seg.get(8).ok_or("short SOF segment")?);
    Ok(FrameHeader {
        precision,
        width,
        height,
        tq: tq.min(3),
    })
}

/// What the segments before a scan define.
#[derive(Default)]
struct Tables {
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    frame: Option<FrameHeader>,
    restart_interval: usize,
}

impl Tables {
    /// Reads the quantisation tables of a DQT segment (8- or 16-bit entries).
    fn read_dqt(&mut self, seg: &[u8]) -> Result<(), Jpeg12Error> {
        let mut p = 0;
        while p < seg.len() {
            let (pq, tq) = (seg[p] >> 4, usize::from(seg[p] & 15));
            p += 1;
            if tq > 3 {
                return Err("invalid quantisation table id".into());
            }
            let mut t = [0u16; 64];
            for v in t.iter_mut() {
                *v = if pq == 0 {
                    let b = *seg.get(p).ok_or("short DQT segment")?;
                    p += 1;
                    u16::from(b)
                } else {
                    let w = u16_at(seg, p)? as u16;
                    p += 2;
                    w
                };
            }
            self.qt[tq] = Some(t);
        }
        Ok(())
    }

    /// Reads the Huffman tables of a DHT segment.
    fn read_dht(&mut self, seg: &[u8]) -> Result<(), Jpeg12Error> {
        let mut p = 0;
        while p < seg.len() {
            let (tc, th) = (seg[p] >> 4, usize::from(seg[p] & 15));
            let counts: [u8; 16] = seg
                .get(p + 1..p + 17)
                .ok_or("short DHT segment")?
                .try_into()
                .map_err(|_| "DHT")?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let values = seg
                .get(p + 17..p + 17 + total)
                .ok_or("short DHT segment")?
                .to_vec();
            p += 17 + total;
            if th > 3 || tc > 1 {
                return Err("invalid Huffman table id".into());
            }
            let h = Huffman::new(&counts, values)?;
            if tc == 0 {
                self.dc[th] = Some(h)
            } else {
                self.ac[th] = Some(h)
            }
        }
        Ok(())
    }

    /// Decodes the scan whose SOS segment is `seg` and whose entropy-coded data starts at
    /// `d[start]`; returns the image and where the data ends.
    fn decode_scan(
        &self,
        seg: &[u8],
        d: &[u8],
        start: usize,
    ) -> Result<(Grey, usize), Jpeg12Error> {
        let frame = self.frame.ok_or("scan before the frame header")?;
        let ns = *seg.first().ok_or("short SOS segment")?;
        if ns != 1 {
            return Err("invalid SOS: more components than the frame".into());
        }
        let tables = *seg.get(2).ok_or("short SOS segment")?;
        let (ss, se, a) = (
            *seg.get(3).ok_or("short SOS")?,
            *seg.get(4).ok_or("short SOS")?,
            *seg.get(5).ok_or("short SOS")?,
        );
        if ss != 0 || se != 63 || a != 0 {
            return Err(Jpeg12Error::ScanParameters { ss, se, a });
        }
        let scan = Scan {
            dc: self.dc[usize::from(tables >> 4) & 3]
                .as_ref()
                .ok_or("missing DC Huffman table")?,
            ac: self.ac[usize::from(tables & 15) & 3]
                .as_ref()
                .ok_or("missing AC Huffman table")?,
            q: self.qt[frame.tq].ok_or("missing quantisation table")?,
        };
        let FrameHeader {
            precision,
            width,
            height,
            ..
        } = frame;
        let (bw, bh) = (width.div_ceil(8), height.div_ceil(8));
        let shift = (1i32 << (precision - 1)) as f32;
        let max = ((1u32 << precision) - 1) as f32;
        let mut samples = vec![0u16; width * height];
        let mut bits = Bits::new(d, start);
        let mut pred = 0i32;
        for b in 0..bw * bh {
            if self.restart_interval > 0 && b > 0 && b % self.restart_interval == 0 {
                bits.restart()?;
                pred = 0;
            }
            let mut block = scan.block(&mut bits, &mut pred)?;
            idct(&mut block);
            let (bx, by) = (b % bw, b / bw);
            for y in 0..8 {
                let py = by * 8 + y;
                if py >= height {
                    break;
                }
                for x in 0..8 {
                    let px = bx * 8 + x;
                    if px < width {
                        samples[py * width + px] =
                            (block[y * 8 + x] + shift).round().clamp(0.0, max) as u16;
                    }
                }
            }
        }
        let grey = Grey {
            width,
            height,
            precision,
            samples,
        };
        Ok((grey, bits.pos))
    }
}

/// The tables one scan decodes with.
struct Scan<'a> {
    dc: &'a Huffman,
    ac: &'a Huffman,
    q: [u16; 64],
}

impl Scan<'_> {
    /// Decodes and dequantises one 8x8 block (natural order); `pred` is the DC predictor.
    fn block(&self, bits: &mut Bits, pred: &mut i32) -> Result<[f32; 64], Jpeg12Error> {
        let q = &self.q;
        let mut block = [0f32; 64];
        let s = bits.decode(self.dc)?;
        if s > 16 {
            return Err("invalid DC difference size".into());
        }
        *pred = pred.wrapping_add(bits.receive_extend(s));
        block[0] = *pred as f32 * f32::from(q[0]);
        let mut k = 1usize;
        while k < 64 {
            let rs = bits.decode(self.ac)?;
            let (r, s) = (usize::from(rs >> 4), rs & 15);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            if k > 63 {
                return Err("AC coefficient index beyond 63".into());
            }
            block[ZIGZAG[k]] = bits.receive_extend(s) as f32 * f32::from(q[k]);
            k += 1;
        }
        Ok(block)
    }
}

/// Precision of a JPEG stream's frame header (SOFn), when there is one.
pub(super) fn precision(d: &[u8]) -> Option<u8> {
    let mut i = 2usize;
    if !d.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    while i + 4 <= d.len() {
        if d[i] != 0xFF {
            return None;
        }
        let m = d[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([d[i + 2], d[i + 3]]));
        if matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
            return d.get(i + 4).copied();
        }
        if m == 0xDA {
            return None;
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_grey(&[]).is_err());
        assert!(decode_grey(&[0xFF, 0xD8, 0xFF, 0xDB, 0xFF, 0xFF]).is_err());
        let mut d = vec![
            0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x0B, 12, 0x00, 0x08, 0x00, 0x08, 1, 1, 0x11, 0,
        ];
        d.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
        assert!(
            decode_grey(&d)
                .unwrap_err()
                .to_string()
                .contains("missing DC Huffman table")
        );
    }

    /// The same decoder at 8 bits against `jpeg-decoder` on Pillow-written greyscale JPEGs
    /// (45 x 37: partial edge blocks; one with a restart marker every 3 blocks). The two
    /// inverse DCTs differ (float here, integer there), hence a tolerance of 2 levels.
    #[test]
    fn agrees_with_jpeg_decoder_on_8_bit_grey() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom");
        for name in ["grey8.jpg", "grey8_restart.jpg"] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let ours = decode_grey(&data).unwrap();
            let mut reference = jpeg_decoder::Decoder::new(&data[..]);
            let px = reference.decode().unwrap();
            let info = reference.info().unwrap();
            assert_eq!(
                (ours.width, ours.height),
                (usize::from(info.width), usize::from(info.height)),
                "{name}"
            );
            assert_eq!((ours.width, ours.height, ours.precision), (45, 37, 8));
            let max_diff = ours
                .samples
                .iter()
                .zip(&px)
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .max()
                .unwrap();
            assert!(max_diff <= 2, "{name}: max difference {max_diff}");
            assert_eq!(precision(&data), Some(8));
        }
    }

    #[test]
    fn idct_of_a_dc_only_block_is_flat() {
        let mut b = [0f32; 64];
        b[0] = 80.0;
        idct(&mut b);
        assert!(b.iter().all(|v| (v - 10.0).abs() < 1e-4), "{b:?}");
    }
}
