//! A tiny PNG encoder for `getwxacodeunlimit`.
//!
//! Callers of the real endpoint store or stream the bytes and sometimes decode them, so the
//! simulator answers with a genuine PNG (1-bit greyscale, stored deflate blocks) rather than a
//! placeholder. The picture is a QR-like pattern derived from the request, so different scenes
//! give different images and the same scene the same one.

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
const MODULES: u32 = 29;
const QUIET: u32 = 4;

/// A `size`×`size` code picture for `seed`.
pub fn wxacode(seed: &str, size: u32) -> Vec<u8> {
    let grid = modules(seed);
    let span = MODULES + 2 * QUIET;
    encode_1bit(size, size, |x, y| {
        let (mx, my) = (x * span / size, y * span / size);
        let inside = (QUIET..QUIET + MODULES).contains(&mx) && (QUIET..QUIET + MODULES).contains(&my);
        inside && grid[((my - QUIET) * MODULES + (mx - QUIET)) as usize]
    })
}

fn modules(seed: &str) -> Vec<bool> {
    // FNV-1a then xorshift: deterministic across builds, which std's hasher does not promise.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut next = move || {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        h
    };
    let n = MODULES as i32;
    let finder = |x: i32, y: i32| -> Option<bool> {
        for (ox, oy) in [(0, 0), (n - 7, 0), (0, n - 7)] {
            let (dx, dy) = (x - ox, y - oy);
            if (-1..=7).contains(&dx) && (-1..=7).contains(&dy) {
                let ring = dx.max(dy).max(-dx).max(-dy);
                let d = dx.min(dy).min(6 - dx).min(6 - dy);
                return Some(ring >= 0 && d >= 0 && d != 1);
            }
        }
        None
    };
    (0..n * n).map(|i| finder(i % n, i / n).unwrap_or_else(|| next() & 1 == 1)).collect()
}

/// Encodes a black-on-white 1-bit greyscale image; `dark(x, y)` says which pixels are black.
pub fn encode_1bit(width: u32, height: u32, dark: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    let row_bytes = width.div_ceil(8) as usize;
    let mut raw = Vec::with_capacity((row_bytes + 1) * height as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        let mut row = vec![0xffu8; row_bytes];
        for x in 0..width {
            if dark(x, y) {
                row[(x / 8) as usize] &= !(0x80 >> (x % 8));
            }
        }
        raw.extend_from_slice(&row);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // bit depth 1, greyscale, deflate, no filter, no interlace
    let mut out = SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of uncompressed deflate blocks: correct, simple, and small enough here.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn images_depend_on_seed_only() {
        assert_eq!(wxacode("a", 64), wxacode("a", 64));
        assert_ne!(wxacode("a", 64), wxacode("b", 64));
        assert!(wxacode("a", 430).starts_with(&SIGNATURE));
    }
}
