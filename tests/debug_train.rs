use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use mvfa_studio::model::clip::config::VisionConfig;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::adapter::{MvfaAdapters, MvfaAdaptersConfig};
use mvfa_studio::model::mvfa::scoring::ScoringConfig;
use mvfa_studio::train::synthetic::generate;
use mvfa_studio::train::trainer::*;
use std::sync::atomic::AtomicBool;
type B = NdArray<f32>;
type AB = Autodiff<B>;
const SIZE: usize = 112;
#[test]
fn debug() {
    let device = Default::default();
    let mut vision = VisionConfig::new()
        .with_image_size(SIZE)
        .with_width(64)
        .with_layers(8)
        .with_heads(4)
        .with_mlp_width(128)
        .with_embed_dim(32)
        .init::<B>(&device);
    // Like a trained ViT, keep the residual branches small so tokens stay local.
    for block in vision.blocks.iter_mut() {
        block.attn.out_proj.weight = block
            .attn
            .out_proj
            .weight
            .clone()
            .map(|w| w.mul_scalar(0.1));
        block.mlp.c_proj.weight = block.mlp.c_proj.weight.clone().map(|w| w.mul_scalar(0.1));
    }
    let acfg = MvfaAdaptersConfig::new().with_width(64).with_bottleneck(32);
    let adapters = acfg.init::<B>(&device);
    // Like real prompt-ensemble features (spec 3.4): unit columns, the normal and abnormal
    // directions close to each other (CLIP's are, cosine about 0.9).
    let base = Tensor::<B, 2>::random(
        [32, 1],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let noise = Tensor::<B, 2>::random(
        [32, 2],
        burn::tensor::Distribution::Normal(0.0, 0.3),
        &device,
    );
    let text = base.repeat_dim(1, 2) + noise;
    let text = text.clone() / text.powi_scalar(2).sum_dim(0).sqrt();
    let mut samples = Vec::new();
    for img in generate(12, 8, SIZE, true)
        .iter()
        .chain(generate(11, 8, SIZE, false).iter())
    {
        let mut grey: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0).collect();
        let mut m = vec![0f32; SIZE * SIZE];
        if img.abnormal {
            for y in 20..70 {
                for x in 30..80 {
                    grey[y * SIZE + x] = 1.0;
                    m[y * SIZE + x] = 1.0;
                }
            }
        }
        let mut image = Vec::new();
        for _ in 0..3 {
            image.extend_from_slice(&grey);
        }
        samples.push(TrainSample {
            image,
            mask: Some(m),
            abnormal: img.abnormal,
        });
    }
    let vision_ad = VisionTransformer::<AB>::from_inner(vision).no_grad();
    let ad = MvfaAdapters::<AB>::from_inner(adapters.clone());
    let w0 = ad.seg.adapters[0]
        .fc1
        .weight
        .val()
        .inner()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let d0 = ad.det.adapters[0]
        .fc1
        .weight
        .val()
        .inner()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    eprintln!(
        "require_grad seg: {}",
        ad.seg.adapters[0].fc1.weight.val().is_require_grad()
    );
    let cancel = AtomicBool::new(false);
    let scfg = ScoringConfig::new()
        .with_image_size(SIZE)
        .with_grid_size(SIZE / 14)
        .with_logit_scale(10.0);
    let out = train(
        &vision_ad,
        ad,
        &acfg,
        &scfg,
        Tensor::from_inner(text),
        &samples,
        LabelMode::Masks,
        &TrainConfig::new().with_epochs(30).with_learning_rate(3e-4),
        |e| {
            if let TrainEvent::Step(s) = e {
                if s.step % 8 == 0 && s.epoch % 5 == 0 {
                    eprintln!(
                        "{} {} focal {:.4} dice {:.4} bce {:.4}",
                        s.epoch, s.step, s.focal, s.dice, s.bce
                    );
                }
            }
        },
        &cancel,
    )
    .unwrap();
    let w1 = out.adapters.seg.adapters[0]
        .fc1
        .weight
        .val()
        .inner()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let d1 = out.adapters.det.adapters[0]
        .fc1
        .weight
        .val()
        .inner()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let dw: f32 = w0
        .iter()
        .zip(&w1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let dd: f32 = d0
        .iter()
        .zip(&d1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("max change seg {dw} det {dd}");
    let _ = out.adapters.valid();
}
