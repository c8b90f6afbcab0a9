//! Small images written to disk for a test.
use std::path::{Path, PathBuf};

use mvfa_studio::train::synthetic::SyntheticImage;

/// Writes 8-bit grey `pixels` (`width x height`, row-major) as a PNG at `path`, creating its
/// folder.
pub fn write_grey(path: &Path, width: usize, height: usize, pixels: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(width as u32, height as u32, pixels.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

/// Writes a synthetic image (`mask: false`) or its lesion mask (`mask: true`) as a PNG.
pub fn write_synthetic(path: &Path, img: &SyntheticImage, mask: bool) {
    let pixels = if mask { &img.mask } else { &img.pixels };
    write_grey(path, img.size, img.size, pixels);
}

/// A folder `dir/pngs` of `n` 64 x 48 grey PNGs `img<i>.png`, each a different gradient.
pub fn png_folder(dir: &Path, n: usize) -> PathBuf {
    let folder = dir.join("pngs");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..n {
        let img = image::GrayImage::from_fn(64, 48, |x, y| {
            image::Luma([((x + y) as u8).wrapping_mul(i as u8 + 1)])
        });
        img.save(folder.join(format!("img{i}.png"))).unwrap();
    }
    folder
}
