//! The CLIP vision tower as the backbone MVFA hooks into.
use burn::prelude::*;

use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::TappedBackbone;

impl<B: Backend> TappedBackbone<B> for VisionTransformer<B> {
    fn width(&self) -> usize {
        VisionTransformer::width(self)
    }

    fn default_taps(&self) -> Vec<usize> {
        VisionTransformer::default_taps(self)
    }

    fn run_tapped(
        &self,
        images: Tensor<B, 4>,
        tap_blocks: &[usize],
        hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) {
        // The pooled embedding is computed and dropped, as in the reference (spec 1).
        let _ = self.forward_tapped(images, tap_blocks, hook);
    }
}
