//! Model input (spec 7.1): a windowed 8-bit display image -> 240x240 RGB in [0, 1], CHW,
//! exactly as the reference builds it with Pillow and torchvision:
//! `Image.convert('RGB')` (grey replicated), `resize((240, 240), BICUBIC)`, `ToTensor()`
//! (`/ 255`, no CLIP mean/std normalisation). Masks: `convert('L')`,
//! `resize((240, 240), NEAREST)`, `/ 255`, `> 0.5`.
//!
//! Resizing grey before replicating it equals resizing the replicated RGB image (Pillow
//! resamples each band independently with the same taps), so grey inputs are resized once.
#![deny(clippy::arithmetic_side_effects)]
use burn::prelude::{Backend, Tensor, TensorData};

use super::resample::{Image8, Image8SizeError, resize_bicubic, resize_nearest};

/// Side of the square model input in pixels (MVFA resizes to 240x240; the ViT sees 17x17
/// patches of 14 px plus a class token).
pub const MODEL_INPUT_SIZE: usize = 240;

/// Number of f32 values in one image's model input: 3 x 240 x 240.
pub const MODEL_INPUT_LEN: usize = 3 * MODEL_INPUT_SIZE * MODEL_INPUT_SIZE;

/// Errors of the model-input pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ModelInputError {
    /// The 8-bit image's buffer does not match its declared size.
    #[error(transparent)]
    BadImage(#[from] Image8SizeError),
    /// An item of a batch does not have the `c * h * w` values of the batch shape.
    #[error("model input #{index} has {actual} values, expected {expected} ({what})")]
    BadLength {
        /// Index of the item in the batch.
        index: usize,
        /// Values the item has.
        actual: usize,
        /// Values expected (`c * h * w`).
        expected: usize,
        /// What the expected count is, e.g. `c*h*w`.
        what: &'static str,
    },
    /// [`batch_tensor`] was given no items.
    #[error("an empty batch has no tensor shape")]
    EmptyBatch,
    /// A batch shape whose value count overflows.
    #[error("a batch of {items} items of {chw:?} values is too large")]
    TooLarge {
        /// Items in the batch.
        items: usize,
        /// The shape of one item (`c, h, w`).
        chw: [usize; 3],
    },
}

/// The 240x240 RGB `Image8` the model sees, before scaling to [0, 1] (useful for previews and
/// for exporting exactly what was scored).
pub fn model_input_image(img: &Image8) -> Result<Image8, ModelInputError> {
    let s = MODEL_INPUT_SIZE as u32;
    Ok(resize_bicubic(img, s, s)?.to_rgb())
}

/// Display image (grey or RGB) -> 3 x 240 x 240 values in [0, 1], channel-major (CHW),
/// each value `v as f32 / 255.0` like `ToTensor`.
pub fn model_input(img: &Image8) -> Result<Vec<f32>, ModelInputError> {
    let rgb = model_input_image(img)?;
    // Channel-major: every R, then every G, then every B.
    Ok((0..3)
        .flat_map(|c| rgb.data.iter().skip(c).step_by(3))
        .map(|&v| v as f32 / 255.0)
        .collect())
}

/// Mask image (grey, or RGB converted with Pillow's luma) -> 240 x 240 values in {0, 1}:
/// NEAREST resize, `/ 255`, `> 0.5`.
pub fn mask_input(mask: &Image8) -> Result<Vec<f32>, ModelInputError> {
    mask.check()?;
    let s = MODEL_INPUT_SIZE as u32;
    let small = resize_nearest(&mask.to_luma(), s, s)?;
    Ok(small
        .data
        .iter()
        .map(|&v| if v as f32 / 255.0 > 0.5 { 1.0 } else { 0.0 })
        .collect())
}

/// Stacks equally sized items into one tensor of shape `[items.len(), c, h, w]`.
pub fn batch_tensor<B: Backend>(
    items: &[&[f32]],
    chw: [usize; 3],
    device: &B::Device,
) -> Result<Tensor<B, 4>, ModelInputError> {
    if items.is_empty() {
        return Err(ModelInputError::EmptyBatch);
    }
    let too_large = || ModelInputError::TooLarge {
        items: items.len(),
        chw,
    };
    let expected = chw[0]
        .checked_mul(chw[1])
        .and_then(|n| n.checked_mul(chw[2]))
        .ok_or_else(too_large)?;
    let mut data = Vec::with_capacity(expected.checked_mul(items.len()).ok_or_else(too_large)?);
    for (index, item) in items.iter().enumerate() {
        if item.len() != expected {
            return Err(ModelInputError::BadLength {
                index,
                actual: item.len(),
                expected,
                what: "c*h*w",
            });
        }
        data.extend_from_slice(item);
    }
    let shape = [items.len(), chw[0], chw[1], chw[2]];
    Ok(Tensor::from_data(TensorData::new(data, shape), device))
}

/// One model input (from [`model_input`]) as a tensor of shape `[1, 3, 240, 240]`.
pub fn model_input_tensor<B: Backend>(
    input: &[f32],
    device: &B::Device,
) -> Result<Tensor<B, 4>, ModelInputError> {
    model_input_batch::<B>(&[input], device)
}

/// Several model inputs as a tensor of shape `[n, 3, 240, 240]`.
pub fn model_input_batch<B: Backend>(
    inputs: &[&[f32]],
    device: &B::Device,
) -> Result<Tensor<B, 4>, ModelInputError> {
    let s = MODEL_INPUT_SIZE;
    batch_tensor::<B>(inputs, [3, s, s], device)
}

/// Several masks (from [`mask_input`]) as a tensor of shape `[n, 1, 240, 240]`.
pub fn mask_batch<B: Backend>(
    masks: &[&[f32]],
    device: &B::Device,
) -> Result<Tensor<B, 4>, ModelInputError> {
    let s = MODEL_INPUT_SIZE;
    batch_tensor::<B>(masks, [1, s, s], device)
}
