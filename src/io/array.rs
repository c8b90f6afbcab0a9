//! Images handed over in memory (the Python package's NumPy arrays) as model input, through
//! the loaders files go through. 8- and 16-bit samples without a window are encoded as the PNG
//! they would be on disk and read by the raster loader, so an array scores exactly as its PNG
//! file does. Other samples (signed, wider or float) are one grey channel, windowed over their
//! own range (as a DICOM without a window preset) or by the window given.
use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::PathBuf;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};

use super::image::{Channels, Frame, ImageStack, VoiFunction, Window};
use super::input::{InputError, ModelImage, for_each_stack_frame};
use super::raster::load_raster_bytes;

/// The samples of an array, row-major, frame after frame, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// Unsigned 8-bit.
    U8(Vec<u8>),
    /// Unsigned 16-bit.
    U16(Vec<u16>),
    /// Anything else, as f32; `integer` says whether the values were integers.
    F32 {
        /// The values.
        values: Vec<f32>,
        /// Integer data gets the DICOM full-range window, float data the exact one.
        integer: bool,
    },
}

/// An image in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayImage {
    /// The name messages and results give it.
    pub name: PathBuf,
    /// Frames (slices).
    pub frames: usize,
    /// Rows per frame.
    pub height: usize,
    /// Pixels per row.
    pub width: usize,
    /// Samples per pixel: 1 (grey), 2 (grey and alpha), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// The samples.
    pub samples: Samples,
    /// Window centre and width in sample units (linear, as DICOM's); default: see the module.
    pub window: Option<(f64, f64)>,
}

/// Every frame of `image` as model input, in order.
pub fn array_model_images(image: &ArrayImage) -> Result<Vec<ModelImage>, InputError> {
    let fail = |message: String| InputError::new(&image.name, message);
    let pixels = image.height * image.width;
    let per_frame = pixels * image.channels;
    let len = match &image.samples {
        Samples::U8(v) => v.len(),
        Samples::U16(v) => v.len(),
        Samples::F32 { values, .. } => values.len(),
    };
    if image.frames == 0 || pixels == 0 {
        return Err(fail("the array holds no pixels".into()));
    }
    if !(1..=4).contains(&image.channels) {
        return Err(fail(format!(
            "{} samples per pixel: give 1 (grey), 3 (RGB) or 4 (RGBA)",
            image.channels
        )));
    }
    if len != per_frame * image.frames {
        return Err(fail(format!(
            "{len} samples for {} frame(s) of {} x {} x {}",
            image.frames, image.height, image.width, image.channels
        )));
    }
    let mut out = Vec::with_capacity(image.frames);
    for frame in 0..image.frames {
        let range = frame * per_frame..(frame + 1) * per_frame;
        let stack = frame_stack(image, range)?;
        let mut failed = None;
        for_each_stack_frame(&stack, &image.name, None, |converted| match converted {
            Ok(mut m) => {
                m.frame = frame;
                m.frames = image.frames;
                out.push(m);
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(out)
}

/// One frame as an image stack: through PNG for 8- and 16-bit samples without a window, else
/// one windowed grey channel.
fn frame_stack(
    image: &ArrayImage,
    range: std::ops::Range<usize>,
) -> Result<ImageStack, InputError> {
    let fail = |message: String| InputError::new(&image.name, message);
    let (w, h) = (image.width as u32, image.height as u32);
    let as_png = |img: Option<DynamicImage>| -> Result<ImageStack, InputError> {
        let img = img.ok_or_else(|| fail("the samples do not fill the image".into()))?;
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|e| fail(e.to_string()))?;
        load_raster_bytes(&bytes, &image.name).map_err(|e| fail(e.to_string()))
    };
    match (&image.samples, image.window) {
        (Samples::U8(v), None) => {
            let v = v[range].to_vec();
            as_png(match image.channels {
                1 => ImageBuffer::<Luma<u8>, _>::from_raw(w, h, v).map(DynamicImage::ImageLuma8),
                2 => ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, v).map(DynamicImage::ImageLumaA8),
                3 => ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, v).map(DynamicImage::ImageRgb8),
                _ => ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, v).map(DynamicImage::ImageRgba8),
            })
        }
        (Samples::U16(v), None) => {
            let v = v[range].to_vec();
            as_png(match image.channels {
                1 => ImageBuffer::<Luma<u16>, _>::from_raw(w, h, v).map(DynamicImage::ImageLuma16),
                2 => {
                    ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, v).map(DynamicImage::ImageLumaA16)
                }
                3 => ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, v).map(DynamicImage::ImageRgb16),
                _ => ImageBuffer::<Rgba<u16>, _>::from_raw(w, h, v).map(DynamicImage::ImageRgba16),
            })
        }
        (samples, window) => {
            if image.channels != 1 {
                return Err(fail(format!(
                    "{} samples per pixel: only 8- and 16-bit arrays without a window may have \
                     colour; give one grey channel",
                    image.channels
                )));
            }
            let (data, integer): (Vec<f32>, bool) = match samples {
                Samples::U8(v) => (v[range].iter().map(|&x| f32::from(x)).collect(), true),
                Samples::U16(v) => (v[range].iter().map(|&x| f32::from(x)).collect(), true),
                Samples::F32 { values, integer } => (values[range].to_vec(), *integer),
            };
            if data.iter().any(|v| !v.is_finite()) {
                return Err(fail("the array holds NaN or infinite values".into()));
            }
            let window = match window {
                Some((center, width)) if width > 0.0 && center.is_finite() => Window {
                    center,
                    width,
                    function: VoiFunction::Linear,
                    label: "Given window".into(),
                    lut: None,
                },
                Some((center, width)) => {
                    return Err(fail(format!(
                        "window centre {center}, width {width}: the width must be positive"
                    )));
                }
                None => {
                    let lo = data.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    Window::data_range(f64::from(lo), f64::from(hi), integer, "Data range")
                }
            };
            Ok(ImageStack {
                source: image.name.clone(),
                frames: vec![Frame {
                    width: w,
                    height: h,
                    channels: Channels::Gray,
                    data,
                }],
                windows: vec![window],
                invert: false,
                metadata: Vec::new(),
                info: Default::default(),
                overlays: Vec::new(),
                warnings: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_8_bit_array_is_model_input_exactly_as_its_png_file() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (37usize, 29usize);
        let grey: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("a.png");
        ::image::GrayImage::from_raw(w as u32, h as u32, grey.clone())
            .unwrap()
            .save(&path)
            .unwrap();
        let from_file = crate::io::input::load_model_images(&path).unwrap();
        let from_array = array_model_images(&ArrayImage {
            name: "a".into(),
            frames: 1,
            height: h,
            width: w,
            channels: 1,
            samples: Samples::U8(grey),
            window: None,
        })
        .unwrap();
        assert_eq!(from_array[0].input, from_file[0].input);
        assert_eq!(from_array[0].display, from_file[0].display);
    }

    #[test]
    fn float_frames_are_windowed_over_their_range_and_bad_arrays_say_why() {
        let values: Vec<f32> = (0..2 * 16 * 16).map(|i| i as f32 * 0.5 - 40.0).collect();
        let image = ArrayImage {
            name: "volume".into(),
            frames: 2,
            height: 16,
            width: 16,
            channels: 1,
            samples: Samples::F32 {
                values,
                integer: false,
            },
            window: None,
        };
        let frames = array_model_images(&image).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[1].frame, frames[1].frames), (1, 2));
        assert_eq!(frames[0].display.data[0], 0);
        assert_eq!(*frames[0].display.data.last().unwrap(), 255);
        let short = ArrayImage {
            frames: 3,
            ..image.clone()
        };
        let e = array_model_images(&short).unwrap_err().to_string();
        assert!(
            e.contains("512 samples for 3 frame(s) of 16 x 16 x 1"),
            "{e}"
        );
        let bad_window = ArrayImage {
            window: Some((0.0, 0.0)),
            ..image
        };
        let e = array_model_images(&bad_window).unwrap_err().to_string();
        assert!(e.contains("the width must be positive"), "{e}");
    }
}
