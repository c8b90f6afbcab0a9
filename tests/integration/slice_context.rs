//! The slice-context measurement (issue 22, part 3) on a small draw: "off" reproduces the AUCs
//! computed directly from the detector's own scores, the mixes change them, and the table
//! lists every context. The decision it informs is in `workflow::series::SliceContext`.
use mvfa_studio::eval::auc::roc_auc;
use mvfa_studio::eval::slice_context::{
    CONTEXTS, VolumeTask, measure_context, measure_seed, table,
};
use mvfa_studio::model::mvfa::detector::{ImageResult, RawResult};
use mvfa_studio::train::synthetic::generate_volume;
use mvfa_studio::workflow::SliceContext;

fn result(score: f32, map: Vec<f32>) -> ImageResult {
    ImageResult {
        raw: RawResult {
            zero_image: 0.0,
            zero_image_levels: vec![],
            few_image: None,
            zero_map: vec![],
            zero_map_levels: vec![],
            few_map: None,
            few_map_levels: vec![],
        },
        fused_map: Some(map),
        score: Some(score),
    }
}

#[test]
fn slice_context_measurement_off_matches_the_direct_aucs() {
    // Known scores on two synthetic volumes (one with a lesion): the slice AUC of "off" is the
    // AUC of the scores; the weighted max lifts the lesion's faint end slices.
    let size = 16;
    let volumes = [
        generate_volume(7, 6, size, false).unwrap(),
        generate_volume(8, 6, size, true).unwrap(),
    ];
    let shows: Vec<bool> = volumes[1].slices.iter().map(|s| s.abnormal).collect();
    let scores: Vec<Vec<f32>> = vec![
        vec![0.5, 1.5, 0.2, 0.9, 1.1, 0.3],
        shows
            .iter()
            .enumerate()
            .map(|(i, &a)| if a { 1.0 + i as f32 } else { 0.4 })
            .collect(),
    ];
    let results: Vec<Vec<ImageResult>> = volumes
        .iter()
        .zip(&scores)
        .map(|(v, s)| {
            v.slices
                .iter()
                .zip(s)
                .map(|(slice, &score)| {
                    result(
                        score,
                        slice.mask.iter().map(|&m| f32::from(m) / 255.0).collect(),
                    )
                })
                .collect()
        })
        .collect();
    let labels: Vec<bool> = volumes
        .iter()
        .flat_map(|v| v.slices.iter().map(|s| s.abnormal))
        .collect();
    let flat: Vec<f32> = scores.concat();
    let off = measure_context(SliceContext::Off, &volumes, &results, 1.0);
    assert!((off.image - roc_auc(&flat, &labels).unwrap()).abs() < 1e-12);
    assert_eq!(off.pixel, 1.0, "the maps are the masks");
    assert_eq!(off.series_max, 1.0);
    // Normal slices at or above 1.0: 1.5 and 1.1 of six.
    assert!((off.normal_flagged - 2.0 / 6.0).abs() < 1e-12);
    let max = measure_context(
        SliceContext::WeightedMax { weight: 0.5 },
        &volumes,
        &results,
        1.0,
    );
    assert!(max.normal_flagged >= off.normal_flagged);
}

#[test]
fn slice_context_measurement_runs_end_to_end_on_a_fresh_draw() {
    let task = VolumeTask {
        volumes: 4,
        slices: 6,
        shots: 2,
    };
    let m = measure_seed(3, task);
    assert_eq!(m.contexts.len(), CONTEXTS.len());
    for c in &m.contexts {
        for v in [
            c.image,
            c.pixel,
            c.series_max,
            c.series_top_mean,
            c.normal_flagged,
        ] {
            assert!((0.0..=1.0).contains(&v), "{c:?}");
        }
    }
    assert_eq!(
        m,
        measure_seed(3, task),
        "the same seed draws the same task"
    );
    let text = table(&[m]);
    assert!(text.contains("| mean | weighted max w=0.5 |"), "{text}");
}
