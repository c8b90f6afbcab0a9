//! `mvfa_studio._native`: the Python bindings. Thin on purpose: every call converts NumPy and
//! Python values and runs the workflow function the CLI runs (`open_scorer`, `score_files`,
//! `fit_to_checkpoint`, `series_csv`), with the GIL released, so results equal the CLI's bit
//! for bit. The Python layer (`python/mvfa_studio/__init__.py`) shapes arrays and results.
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use mvfa_studio::backend::probe;
use mvfa_studio::io::array::{ArrayImage, Samples, array_model_images};
use mvfa_studio::io::dataset::MvfaKey;
use mvfa_studio::io::input::collect_inputs;
use mvfa_studio::model::mvfa::detector::TaskKind;
use mvfa_studio::workflow::{
    DatasetShots, FileScorer, FitOptions, FitOutcome, FitProgress, FitSpec, LabelledImage,
    MapLayer, MaskSource, Schedule, ScoredFrame, ScorerSpec, ShotLabel, ShotSource, SliceContext,
    Streamed, fit_to_checkpoint, group_files, layer_or_zero_shot, map_at_original, open_scorer,
    raw_tensors, series_csv,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    _native,
    MvfaError,
    PyException,
    "An error of MVFA Studio, with the message the CLI prints."
);

/// The workflow error as a Python exception, with the message the CLI prints.
fn error(e: impl Into<anyhow::Error>) -> PyErr {
    MvfaError::new_err(e.into().to_string())
}

/// `(input, message)` per input that could not be read.
type Failures = Vec<(String, String)>;

/// `(path, frame, label, mask path)` of a labelled image.
type LabelledTuple = (PathBuf, usize, String, Option<PathBuf>);

/// A detector opened for scoring.
#[pyclass(module = "mvfa_studio._native", frozen)]
struct Detector {
    scorer: Mutex<Box<dyn FileScorer>>,
    backend: String,
}

#[pymethods]
impl Detector {
    #[new]
    #[pyo3(signature = (clip, checkpoint, *, clip_config=None, organ=None, batch=8, fpr=None, cpu=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        clip: PathBuf,
        checkpoint: PathBuf,
        clip_config: Option<PathBuf>,
        organ: Option<String>,
        batch: usize,
        fpr: Option<f32>,
        cpu: bool,
    ) -> PyResult<Self> {
        if batch == 0 {
            return Err(MvfaError::new_err("batch must be at least 1"));
        }
        if let Some(rate) = fpr
            && !(rate > 0.0 && rate < 1.0)
        {
            return Err(MvfaError::new_err(format!(
                "{rate} is not a rate: give a share of normal images between 0 and 1, e.g. 0.05"
            )));
        }
        let spec = ScorerSpec {
            clip,
            clip_config,
            checkpoint,
            organ,
            batch,
            fpr,
        };
        let info = probe(cpu);
        let backend = format!("{} on {}", info.backend, info.device);
        let scorer = py.detach(|| open_scorer(&spec, &info)).map_err(error)?;
        Ok(Self {
            scorer: Mutex::new(scorer),
            backend,
        })
    }

    /// Facts of the detector, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let scorer = self.scorer.lock().expect("not poisoned");
        let i = scorer.info();
        let d = PyDict::new(py);
        d.set_item("organ", &i.organ)?;
        d.set_item("note", &i.note)?;
        d.set_item(
            "task",
            match i.task {
                TaskKind::Segmentation => "segmentation",
                TaskKind::Classification => "classification",
            },
        )?;
        d.set_item("normal_shots", i.bank_shots)?;
        d.set_item("model_size", i.model_size)?;
        d.set_item("batch", i.batch)?;
        d.set_item("calibrated", i.calibration.is_some())?;
        d.set_item("threshold", i.calibration.as_ref().map(|c| c.threshold))?;
        d.set_item(
            "threshold_meaning",
            i.calibration
                .as_ref()
                .and_then(|c| c.fpr.as_ref())
                .map(|t| t.describe()),
        )?;
        d.set_item("description", &i.description)?;
        d.set_item("backend", &self.backend)?;
        d.set_item("checkpoint", &i.facts.checkpoint)?;
        Ok(d)
    }

    /// Scores files and folders (walked as `score` walks them) in the detector's batches.
    /// Returns `(rows, failures, files)`: a dict per frame, `(path, message)` per input that
    /// could not be read, and every file found, in scoring order.
    #[pyo3(signature = (inputs, *, all_maps=false, original_size=false))]
    fn score_files<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PathBuf>,
        all_maps: bool,
        original_size: bool,
    ) -> PyResult<(Bound<'py, PyList>, Failures, Vec<String>)> {
        let (files, mut failures) = input_files(&inputs);
        let listed: Vec<(PathBuf, Option<Vec<usize>>)> =
            files.iter().map(|f| (f.clone(), None)).collect();
        let cancel = AtomicBool::new(false);
        let mut interrupted: Option<PyErr> = None;
        let mut scored: Vec<ScoredFrame> = Vec::new();
        let outcome = py.detach(|| {
            let scorer = self.scorer.lock().expect("not poisoned");
            scorer.score_files(&listed, &cancel, &mut |item| {
                match item {
                    Streamed::Scored(frame) => scored.push(*frame),
                    Streamed::Failed(_, e) => {
                        failures.push((e.path.display().to_string(), e.to_string()))
                    }
                }
                // Ctrl-C stops the run between batches.
                match Python::attach(|py| py.check_signals()) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        interrupted = Some(e);
                        cancel.store(true, Ordering::Relaxed);
                        ControlFlow::Break(())
                    }
                }
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        outcome.map_err(error)?;
        let scorer = self.scorer.lock().expect("not poisoned");
        let rows = PyList::empty(py);
        for s in &scored {
            rows.append(row(py, &**scorer, s, all_maps, original_size)?)?;
        }
        let files = files.iter().map(|f| f.display().to_string()).collect();
        Ok((rows, failures, files))
    }

    /// Scores frames held in memory. `samples` is the flat array (uint8, uint16 or float32),
    /// `shape` `(frames, height, width, channels)`; `integer` says whether float32 samples
    /// were integers; `window` is `(centre, width)`.
    #[pyo3(signature = (samples, shape, *, name="array".to_string(), integer=false, window=None, all_maps=false, original_size=false))]
    #[allow(clippy::too_many_arguments)]
    fn score_samples<'py>(
        &self,
        py: Python<'py>,
        samples: &Bound<'py, PyAny>,
        shape: (usize, usize, usize, usize),
        name: String,
        integer: bool,
        window: Option<(f64, f64)>,
        all_maps: bool,
        original_size: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let samples = if let Ok(a) = samples.extract::<PyReadonlyArray1<u8>>() {
            Samples::U8(a.as_slice()?.to_vec())
        } else if let Ok(a) = samples.extract::<PyReadonlyArray1<u16>>() {
            Samples::U16(a.as_slice()?.to_vec())
        } else if let Ok(a) = samples.extract::<PyReadonlyArray1<f32>>() {
            Samples::F32 {
                values: a.as_slice()?.to_vec(),
                integer,
            }
        } else {
            return Err(MvfaError::new_err(
                "samples must be a contiguous 1-D uint8, uint16 or float32 array",
            ));
        };
        let (frames, height, width, channels) = shape;
        let image = ArrayImage {
            name: PathBuf::from(&name),
            frames,
            height,
            width,
            channels,
            samples,
            window,
        };
        let scored = py
            .detach(|| -> Result<Vec<ScoredFrame>, anyhow::Error> {
                let scorer = self.scorer.lock().expect("not poisoned");
                let images = array_model_images(&image)?;
                let results = scorer.score_images(&images)?;
                Ok(images
                    .into_iter()
                    .zip(results)
                    .map(|(image, result)| ScoredFrame { image, result })
                    .collect())
            })
            .map_err(error)?;
        let scorer = self.scorer.lock().expect("not poisoned");
        let rows = PyList::empty(py);
        for s in &scored {
            rows.append(row(py, &**scorer, s, all_maps, original_size)?)?;
        }
        Ok(rows)
    }
}

/// The files of `inputs` as `score` finds them, and `(input, message)` per input that failed.
fn input_files(inputs: &[PathBuf]) -> (Vec<PathBuf>, Failures) {
    let (files, errors) = collect_inputs(inputs, None);
    let failures = errors
        .iter()
        .map(|e| (e.path.display().to_string(), e.to_string()))
        .collect();
    (files, failures)
}

/// One frame's dict: `scores.csv`'s columns, the frame's place, the drawn map and, when asked,
/// every raw map under `--raw`'s names.
fn row<'py>(
    py: Python<'py>,
    scorer: &dyn FileScorer,
    scored: &ScoredFrame,
    all_maps: bool,
    original_size: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let info = scorer.info();
    let (image, result) = (&scored.image, &scored.result);
    let s = info.model_size;
    let cal = info.calibration.as_ref();
    let d = PyDict::new(py);
    d.set_item("path", image.label())?;
    d.set_item("file", image.source.display().to_string())?;
    d.set_item("frame", image.frame)?;
    d.set_item("frames", image.frames)?;
    d.set_item("score", result.score)?;
    d.set_item("zero_shot_score", result.raw.zero_image)?;
    d.set_item("few_shot_score", result.raw.few_image)?;
    d.set_item(
        "abnormal",
        match (cal, result.score) {
            (Some(c), Some(v)) => Some(v >= c.threshold),
            _ => None,
        },
    )?;
    d.set_item("note", &image.note)?;
    let (layer, map) = layer_or_zero_shot(result, cal, MapLayer::Fused);
    if let Some(map) = map {
        d.set_item("map_layer", layer.label())?;
        let (w, h) = (image.display.width, image.display.height);
        let array = if original_size {
            let values = py
                .detach(|| {
                    map_at_original::<mvfa_studio::backend::CpuBackend>(
                        &map.values,
                        s,
                        w as usize,
                        h as usize,
                        &Default::default(),
                    )
                })
                .map_err(error)?;
            PyArray1::from_vec(py, values).reshape([h as usize, w as usize])?
        } else {
            PyArray1::from_vec(py, map.values).reshape([s, s])?
        };
        d.set_item("map", array)?;
    }
    if all_maps {
        let maps = PyDict::new(py);
        for (name, shape, values) in raw_tensors(result, s) {
            maps.set_item(name, PyArray1::from_vec(py, values).reshape(shape)?)?;
        }
        d.set_item("maps", maps)?;
    }
    Ok(d)
}

/// The image files of `inputs` in the order `score` scores them, and `(input, message)` for
/// each input that could not be read.
#[pyfunction]
fn list_files(py: Python<'_>, inputs: Vec<PathBuf>) -> (Vec<String>, Failures) {
    py.detach(|| {
        let (files, failures) = input_files(&inputs);
        (
            files.iter().map(|f| f.display().to_string()).collect(),
            failures,
        )
    })
}

/// `series.csv` for the frames scored: `files` in the order they were scored, `scores`
/// `(file, frame, score)` and `frames` `(file, frame count)`.
#[pyfunction]
#[pyo3(signature = (files, scores, frames, threshold=None))]
fn series_table(
    py: Python<'_>,
    files: Vec<PathBuf>,
    scores: Vec<(PathBuf, usize, f32)>,
    frames: Vec<(PathBuf, usize)>,
    threshold: Option<f32>,
) -> String {
    py.detach(|| {
        let score: HashMap<(PathBuf, usize), f32> =
            scores.into_iter().map(|(f, i, v)| ((f, i), v)).collect();
        let frames: HashMap<PathBuf, usize> = frames.into_iter().collect();
        let series = group_files(&files);
        series_csv(
            &series,
            |file, frame| score.get(&(file.to_path_buf(), frame)).copied(),
            |file| frames.get(file).copied().unwrap_or(0),
            threshold,
            SliceContext::Off,
        )
    })
}

/// Fits a detector from labelled files and writes its checkpoint, as `train` does. `source`
/// is `"folders"` (`data` holds normal/, abnormal/, masks/, held_out/), `"dataset"` (an MVFA
/// dataset) or `"images"` (`images`: `(path, frame, label, mask path or None)` tuples).
#[pyfunction]
#[pyo3(signature = (clip, out, source, *, data=None, images=None, organ=None, clip_config=None, dataset=None, shots=4, shot_file=None, iterate=0, allow_unmasked=false, init=None, schedule="paper".to_string(), epochs=None, learning_rate=1e-3, train_batch=1, batch=8, seed=111, fpr=0.05, folds=2, cpu=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    clip: PathBuf,
    out: PathBuf,
    source: &str,
    data: Option<PathBuf>,
    images: Option<Vec<LabelledTuple>>,
    organ: Option<String>,
    clip_config: Option<PathBuf>,
    dataset: Option<String>,
    shots: usize,
    shot_file: Option<PathBuf>,
    iterate: u32,
    allow_unmasked: bool,
    init: Option<PathBuf>,
    schedule: String,
    epochs: Option<usize>,
    learning_rate: f64,
    train_batch: usize,
    batch: usize,
    seed: u64,
    fpr: f32,
    folds: usize,
    cpu: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let need_data = || {
        data.clone()
            .ok_or_else(|| MvfaError::new_err(format!("source {source:?} needs data=FOLDER")))
    };
    let source = match source {
        "folders" => ShotSource::PlainFolders {
            root: need_data()?,
            allow_unmasked,
        },
        "dataset" => ShotSource::Dataset(DatasetShots {
            root: need_data()?,
            key: dataset
                .as_deref()
                .map(MvfaKey::parse)
                .transpose()
                .map_err(error)?,
            shots,
            shot_file: shot_file.map(|p| (p, iterate)),
            seed,
        }),
        "images" => {
            let images =
                images.ok_or_else(|| MvfaError::new_err("source \"images\" needs images=[...]"))?;
            let labelled = images
                .into_iter()
                .map(|(path, frame, label, mask)| {
                    let label = match label.as_str() {
                        "normal" => ShotLabel::Normal,
                        "abnormal" => ShotLabel::Abnormal,
                        "held_out" => ShotLabel::HeldOutNormal,
                        other => {
                            return Err(MvfaError::new_err(format!(
                                "{}: label {other:?}: give normal, abnormal or held_out",
                                path.display()
                            )));
                        }
                    };
                    Ok(LabelledImage {
                        path,
                        frame,
                        label,
                        mask: mask.map(MaskSource::File),
                    })
                })
                .collect::<PyResult<Vec<_>>>()?;
            ShotSource::Labelled(labelled)
        }
        other => {
            return Err(MvfaError::new_err(format!(
                "source {other:?}: give \"folders\", \"dataset\" or \"images\""
            )));
        }
    };
    let schedule = match schedule.as_str() {
        "paper" => Schedule::Paper,
        "quick" => Schedule::Quick,
        other => {
            return Err(MvfaError::new_err(format!(
                "schedule {other:?}: give \"paper\" or \"quick\""
            )));
        }
    };
    if !(fpr > 0.0 && fpr < 1.0) {
        return Err(MvfaError::new_err(format!(
            "{fpr} is not a rate: give a share of normal images between 0 and 1, e.g. 0.05"
        )));
    }
    if batch == 0 || train_batch == 0 {
        return Err(MvfaError::new_err("batch sizes must be at least 1"));
    }
    let spec = FitSpec {
        clip,
        clip_config,
        source,
        organ,
        options: FitOptions {
            schedule,
            epochs,
            learning_rate,
            train_batch,
            batch,
            seed,
            fpr,
            folds,
            init,
        },
        out,
    };
    let info = probe(cpu);
    let cancel = AtomicBool::new(false);
    let mut interrupted: Option<PyErr> = None;
    let outcome = py.detach(|| {
        fit_to_checkpoint(
            &spec,
            &info,
            &mut |step| {
                let report = Python::attach(|py| -> PyResult<()> {
                    py.check_signals()?;
                    if let Some(callback) = &progress {
                        let event = PyDict::new(py);
                        match step {
                            FitProgress::Shots { collected, organ } => {
                                event.set_item("step", "shots")?;
                                event.set_item("normal", collected.shots.normal.len())?;
                                event.set_item("abnormal", collected.shots.abnormal.len())?;
                                event.set_item("held_out", collected.shots.held_out.len())?;
                                event.set_item("organ", organ)?;
                            }
                            FitProgress::Opened { time, .. } => {
                                event.set_item("step", "weights")?;
                                event.set_item("seconds", time.as_secs_f64())?;
                            }
                            FitProgress::Fit(e) => {
                                event.set_item("step", "fit")?;
                                event.set_item("event", format!("{e:?}"))?;
                            }
                        }
                        callback.call1(py, (event,))?;
                    }
                    Ok(())
                });
                if let Err(e) = report {
                    interrupted.get_or_insert(e);
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
    });
    if let Some(e) = interrupted {
        return Err(e);
    }
    let d = PyDict::new(py);
    match outcome.map_err(error)? {
        FitOutcome::Cancelled { steps_done } => {
            return Err(MvfaError::new_err(format!(
                "training was cancelled after {steps_done} step(s); nothing was written"
            )));
        }
        FitOutcome::Saved(report) => {
            d.set_item("checkpoint", spec.out.display().to_string())?;
            d.set_item("mode", format!("{:?}", report.mode))?;
            d.set_item("organ", &report.organ)?;
            d.set_item("epochs", report.epochs)?;
            d.set_item("epoch_losses", report.epoch_losses.clone())?;
            d.set_item("note", &report.note)?;
            d.set_item("shots", (report.shots[0], report.shots[1], report.shots[2]))?;
            if let Some(cal) = &report.calibration {
                d.set_item("threshold", cal.threshold)?;
                d.set_item("threshold_meaning", cal.fpr.as_ref().map(|t| t.describe()))?;
            }
            if let Some(sel) = &report.selection {
                d.set_item("selection", &sel.message)?;
                d.set_item("selection_table", sel.table())?;
            }
        }
    }
    Ok(d)
}

/// Keeps glibc from returning the heap's top to the system after every forward pass. Inside
/// CPython the scoring loop spent more time in the kernel (growing and trimming the heap, and
/// faulting the pages in again) than in the model: 40 synthetic frames took 18 s (12.8 s of it
/// system time) against 6 s with this pad. The CLI binary is not affected; the pad only
/// reserves address space.
fn keep_heap_top() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_TOP_PAD takes any size.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_heap_top();
    m.add_class::<Detector>()?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(series_table, m)?)?;
    m.add_function(wrap_pyfunction!(list_files, m)?)?;
    m.add("MvfaError", m.py().get_type::<MvfaError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
