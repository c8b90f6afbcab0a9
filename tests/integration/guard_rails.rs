//! Issue 14: nothing the user feeds the program costs them their work. Outputs that would
//! replace an input or cannot be written are refused before any work, explicitly named inputs
//! are never dropped, absurd sizes and closed pipes end with a clear error instead of a panic,
//! and one bad file in a batch is reported while the rest are scored.
use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use crate::cli_commands::{make_checkpoint, write_inputs};
use crate::support::cli::{bin, csv_lines, dev_bin, no_temp_files, run};
use crate::support::tiny_clip as clip_fixture;

fn args<'a>(list: &'a [&'a OsStr]) -> impl Iterator<Item = &'a OsStr> {
    list.iter().copied()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A stand-in CLIP file: the output checks run before it is read.
fn fake_input(path: &Path) -> Vec<u8> {
    let bytes = b"precious weights, not to be overwritten".to_vec();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn assert_refused(stderr: &str, what: &str, o: &std::process::Output) {
    assert!(!o.status.success(), "expected a refusal: {stderr}");
    assert!(stderr.contains(what), "expected {what:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Refused before any work: the weights were never opened.
    assert!(!stderr.contains("CLIP:"), "{stderr}");
}

#[test]
fn train_refuses_outputs_that_are_inputs_or_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.safetensors");
    let bytes = fake_input(&clip);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("normal")).unwrap();
    std::fs::write(data.join("normal/a.png"), b"image bytes").unwrap();
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&clip, &link).unwrap();
    let train = |out: &Path| {
        run(bin().args(args(&[
            os("train"),
            os("--clip"),
            clip.as_os_str(),
            os("--data"),
            data.as_os_str(),
            os("--organ"),
            os("Brain"),
            os("--out"),
            out.as_os_str(),
        ])))
    };
    // The weights themselves, through a symlink, an image of the data folder.
    for out in [clip.clone(), link.clone(), data.join("normal/a.png")] {
        let (o, _, stderr) = train(&out);
        assert_refused(&stderr, "would overwrite an input", &o);
    }
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    assert_eq!(
        std::fs::read(data.join("normal/a.png")).unwrap(),
        b"image bytes"
    );
    // A folder where the file goes, a missing folder.
    let (o, _, stderr) = train(tmp.path());
    assert_refused(&stderr, "is a folder", &o);
    let (o, _, stderr) = train(&tmp.path().join("missing/x.safetensors"));
    assert_refused(&stderr, "does not exist", &o);
    // A read-only folder (refused even for root, who could write there).
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    set_mode(&ro, 0o555);
    let (o, _, stderr) = train(&ro.join("x.safetensors"));
    set_mode(&ro, 0o755);
    assert_refused(&stderr, "read-only", &o);
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn score_eval_and_synth_data_check_their_outputs_first() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.safetensors");
    let bytes = fake_input(&clip);
    let ckpt = tmp.path().join("ckpt.safetensors");
    let ckpt_bytes = fake_input(&ckpt);
    let image = tmp.path().join("a.png");
    std::fs::write(&image, b"image bytes").unwrap();
    // score: the output folder is the checkpoint, or an input image.
    for out in [&ckpt, &image] {
        let (o, _, stderr) = run(bin().args(args(&[
            os("score"),
            os("--clip"),
            clip.as_os_str(),
            os("--checkpoint"),
            ckpt.as_os_str(),
            image.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ])));
        assert_refused(&stderr, "would overwrite an input", &o);
    }
    // eval: the JSON report is the weights, or an existing folder.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let reports = tmp.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    for (out, what) in [
        (&clip, "would overwrite an input"),
        (&data, "is an input folder"),
        (&reports, "is a folder"),
    ] {
        let (o, _, stderr) = run(bin().args(args(&[
            os("eval"),
            os("--clip"),
            clip.as_os_str(),
            os("--data"),
            data.as_os_str(),
            os("--json"),
            out.as_os_str(),
        ])));
        assert_refused(&stderr, what, &o);
    }
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    assert_eq!(std::fs::read(&ckpt).unwrap(), ckpt_bytes);
    // synth-data: a file where the folder goes, a read-only parent.
    let (o, _, stderr) = run(bin().args([os("synth-data"), clip.as_os_str()]));
    assert_refused(&stderr, "is a file", &o);
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    set_mode(&ro, 0o555);
    let (o, _, stderr) = run(bin().args([os("synth-data"), ro.join("set").as_os_str()]));
    set_mode(&ro, 0o755);
    assert_refused(&stderr, "read-only", &o);
}

#[test]
fn synth_data_writes_atomically_and_refuses_absurd_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    for (flags, what) in [
        (vec!["--size", "0"], "--size 0 is out of range"),
        (vec!["--size", "100000"], "out of range"),
        (
            vec!["--normal", "1000000000000", "--size", "4096"],
            "too many",
        ),
        (vec!["--normal", "18446744073709551615"], "too many"),
    ] {
        let (o, _, stderr) = run(bin().arg("synth-data").arg(&out).args(&flags));
        assert!(!o.status.success(), "{flags:?}");
        assert!(stderr.contains(what), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "nothing written for {flags:?}");
    }
    let (o, _, stderr) = run(bin().arg("synth-data").arg(&out).args([
        "--normal",
        "2",
        "--abnormal",
        "1",
        "--size",
        "64",
    ]));
    assert!(o.status.success(), "{stderr}");
    for sub in ["normal", "abnormal", "masks"] {
        no_temp_files(&out.join(sub));
    }
    assert_eq!(std::fs::read_dir(out.join("normal")).unwrap().count(), 2);
    assert_eq!(
        image::image_dimensions(out.join("masks/abnormal_000.png")).unwrap(),
        (64, 64)
    );
}

#[test]
fn absurd_sizes_are_clear_errors_not_panics() {
    for flags in [
        vec!["smoke", "--image-size", "0"],
        vec!["smoke", "--image-size", "1000000"],
        vec!["smoke", "--batch", "0"],
        vec!["smoke", "--width", "18446744073709551615"],
        vec!["bench", "--text-width", "99999999999"],
        vec!["weights", "x.safetensors", "--image-size", "4000000000"],
        vec![
            "score",
            "--clip",
            "c",
            "--checkpoint",
            "k",
            "--out",
            "o",
            "x",
            "--batch",
            "0",
        ],
    ] {
        let binary = match flags[0] {
            "smoke" | "bench" => dev_bin,
            _ => bin,
        };
        let (o, _, stderr) = run(binary().args(&flags));
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("error: invalid value"),
            "{flags:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Parsed, but rejected by the model configuration.
    let (o, _, stderr) = run(dev_bin().args([
        "smoke",
        "--cpu",
        "--image-size",
        "5",
        "--layers",
        "1",
        "--width",
        "64",
        "--heads",
        "1",
        "--embed-dim",
        "8",
    ]));
    assert!(!o.status.success());
    assert!(stderr.contains("holds no 14-pixel patch"), "{stderr}");
    // Parsed, but far beyond any machine's memory: refused before allocating (a failed
    // allocation aborts the process).
    let tiny = ["--layers", "1", "--heads", "1", "--embed-dim", "8"];
    for flags in [
        [
            "--image-size",
            "2048",
            "--batch",
            "1000000",
            "--width",
            "64",
        ],
        ["--image-size", "28", "--batch", "1", "--width", "1000000"],
    ] {
        let (o, _, stderr) = run(dev_bin().args(["smoke", "--cpu"]).args(tiny).args(flags));
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("GB of memory, more than this machine's"),
            "{flags:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("allocation"),
            "{stderr}"
        );
    }
}

#[test]
fn a_closed_output_pipe_ends_inspect_without_a_panic() {
    let fixtures = crate::support::fixture_dir("dicom");
    for _ in 0..3 {
        let mut child = bin()
            .args([os("inspect"), fixtures.as_os_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -0`: the reader goes away before the first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_ne!(out.status.code(), Some(101), "{stderr}");
    }
}

#[test]
fn score_keeps_named_inputs_inside_the_output_folder_and_survives_link_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let inputs = write_inputs(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // An input the user keeps in the output folder and names explicitly.
    let inside = out.join("inside.png");
    std::fs::copy(&inputs[0], &inside).unwrap();
    // A folder that links back to itself.
    let images = tmp.path().join("images");
    std::os::unix::fs::symlink(&images, images.join("loop")).unwrap();
    let (o, _, stderr) = run(bin().args(args(&[
        os("score"),
        os("--clip"),
        clip_fixture().as_os_str(),
        os("--checkpoint"),
        ckpt.as_os_str(),
        inside.as_os_str(),
        images.as_os_str(),
        out.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ])));
    let csv = csv_lines(&out.join("scores.csv"));
    // inside.png (named), case_a and case_b (walked); the earlier outputs of the walked
    // output folder are skipped, and the loop is reported, not followed.
    assert_eq!(csv.len(), 4, "{csv:?}\n{stderr}");
    assert!(csv.iter().any(|l| l.contains("inside.png")), "{csv:?}");
    assert!(out.join("inside.heatmap.png").is_file());
    assert!(stderr.contains("loop"), "{stderr}");
    assert!(
        !o.status.success(),
        "the loop is reported as a problem: {stderr}"
    );
    no_temp_files(&out);
}

/// A minimal NIfTI-1 single file (`.nii`) of float32 voxels, `nx` x `ny` x `nz`.
fn write_float_nifti(path: &Path, [nx, ny, nz]: [usize; 3], values: &[f32]) {
    assert_eq!(values.len(), nx * ny * nz);
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3, nx, ny, nz, 1, 1, 1, 1].into_iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&(d as i16).to_le_bytes());
    }
    h[70..72].copy_from_slice(&16i16.to_le_bytes()); // float32
    h[72..74].copy_from_slice(&32i16.to_le_bytes());
    for i in 0..8 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352.0f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, h).unwrap();
}

fn grey_levels(data: &[u8]) -> usize {
    data.iter().collect::<std::collections::HashSet<_>>().len()
}

#[test]
fn float_volumes_are_windowed_from_their_own_range_and_constant_ones_reported() {
    use mvfa_studio::io::input::load_model_images;
    let tmp = tempfile::tempdir().unwrap();
    let (nx, ny, nz) = (32, 24, 2);
    let mut along_x = Vec::new();
    let mut along_y = Vec::new();
    for _z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                // Values in [0, 1): a narrow float range, as probability maps and normalised
                // volumes have.
                along_x.push(x as f32 / nx as f32);
                along_y.push(0.25 + 0.5 * y as f32 / ny as f32);
            }
        }
    }
    let a = tmp.path().join("a.nii");
    let b = tmp.path().join("b.nii");
    let c = tmp.path().join("constant.nii");
    write_float_nifti(&a, [nx, ny, nz], &along_x);
    write_float_nifti(&b, [nx, ny, nz], &along_y);
    write_float_nifti(&c, [nx, ny, nz], &vec![0.3; nx * ny * nz]);
    let a = load_model_images(&a).unwrap();
    let b = load_model_images(&b).unwrap();
    assert_eq!(a.len(), nz);
    // Stretched over the display range, not thresholded to black and white.
    for frame in [&a[0], &b[0]] {
        assert!(
            grey_levels(&frame.display.data) > 16,
            "{:?}",
            frame.display.data
        );
        assert!(frame.note.is_none());
    }
    assert_ne!(a[0].display.data, b[0].display.data);
    assert_ne!(a[0].input, b[0].input);
    let c = load_model_images(&c).unwrap();
    for frame in &c {
        let note = frame.note.as_deref().expect("a constant frame is reported");
        assert!(note.contains("constant image"), "{note}");
        assert_eq!(grey_levels(&frame.display.data), 1);
    }
}

#[test]
fn training_checks_masks_stops_on_divergence_and_says_when_untrained() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (o, _, stderr) = run(bin().arg("synth-data").arg(&data).args([
        "--normal",
        "2",
        "--abnormal",
        "2",
        "--size",
        "64",
    ]));
    assert!(o.status.success(), "{stderr}");
    let ckpt = tmp.path().join("ckpt.safetensors");
    let clip = clip_fixture();
    let train = |extra: &[&str]| {
        run(bin()
            .args([os("train"), os("--cpu"), os("--clip"), clip.as_os_str()])
            .args([os("--data"), data.as_os_str(), os("--organ"), os("Brain")])
            .args([os("--out"), ckpt.as_os_str()])
            .args(extra))
    };
    // A loss that becomes infinite or NaN stops the run and writes nothing.
    let (o, _, stderr) = train(&["--lr", "1e30", "--epochs", "3"]);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("training diverged at epoch 1, step"),
        "{stderr}"
    );
    assert!(!ckpt.exists());
    for lr in ["0", "NaN", "inf"] {
        let (o, _, stderr) = train(&["--lr", lr, "--epochs", "1"]);
        assert!(!o.status.success(), "{stderr}");
        assert!(
            stderr.contains("learning rate must be a positive"),
            "{stderr}"
        );
        assert!(!ckpt.exists());
    }
    // --epochs 0 fits the memory bank and calibration and says the adapters are untrained.
    let (o, stdout, stderr) = train(&["--epochs", "0"]);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("--epochs 0, so the adapters are untrained"),
        "{stdout}"
    );
    // A mask of another size than its image is an error naming both sizes.
    let mask = data.join("masks/abnormal_001.png");
    image::GrayImage::new(32, 48).save(&mask).unwrap();
    let (o, _, stderr) = train(&["--epochs", "1"]);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("abnormal_001.png: the mask is 32x48 pixels, the image 64x64"),
        "{stderr}"
    );
}

/// A BMP header that claims `width` x `height` 24-bit pixels and holds none of them.
fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    for v in [54u32, 0, 54, 40] {
        b.extend(v.to_le_bytes());
    }
    b.extend(width.to_le_bytes());
    b.extend(height.to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    for v in [0u32, 0, 2835, 2835, 0, 0] {
        b.extend(v.to_le_bytes());
    }
    b
}

#[test]
fn raster_size_is_checked_from_the_header_and_read_errors_name_the_os_reason_once() {
    use mvfa_studio::io::input::load_stack;
    use mvfa_studio::io::raster::{RasterLimits, load_raster_bytes_with};
    let tmp = tempfile::tempdir().unwrap();
    let huge = tmp.path().join("huge.bmp");
    std::fs::write(&huge, bmp_header(60_000, 60_000)).unwrap();
    let e = load_stack(&huge).unwrap_err().to_string();
    assert!(e.contains("60000 x 60000 pixels exceeds the"), "{e}");
    assert!(e.contains("MVFA_MAX_IMAGE_PIXELS"), "{e}");
    assert_eq!(e.matches("huge.bmp").count(), 1, "{e}");
    // A configurable limit: a small image under a smaller one.
    let small = write_inputs(tmp.path());
    let bytes = std::fs::read(&small[0]).unwrap();
    let limits = RasterLimits { max_pixels: 1000 };
    let e = load_raster_bytes_with(&bytes, &small[0], &limits).unwrap_err();
    assert!(e.to_string().contains("240 x 240 pixels"), "{e}");
    load_raster_bytes_with(&bytes, &small[0], &RasterLimits { max_pixels: 57_600 }).unwrap();
    // Missing paths: the system's reason, the path once, whatever the extension.
    for name in ["missing.dcm", "missing.png", "missing.nii.gz", "IM0001"] {
        let e = load_stack(&tmp.path().join(name)).unwrap_err().to_string();
        assert!(e.contains("cannot read: No such file"), "{e}");
        assert_eq!(e.matches(name).count(), 1, "{e}");
    }
    let e = load_stack(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("is a folder"), "{e}");
    // inspect: a missing file named on the command line is an error, not "not DICOM".
    let missing = tmp.path().join("missing.dcm");
    let (o, stdout, _) = run(bin().arg("inspect").arg(&missing));
    assert!(!o.status.success());
    assert!(
        stdout.contains("missing.dcm: error: cannot read: No such file"),
        "{stdout}"
    );
}

#[test]
fn score_skips_an_oversized_or_unreadable_file_and_scores_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let inputs = write_inputs(tmp.path());
    let truncated = tmp.path().join("images/truncated.bmp");
    std::fs::write(&truncated, bmp_header(640, 480)).unwrap();
    let out = tmp.path().join("out");
    // case_a is 240 x 240 = 57 600 pixels, case_b 200 x 160 = 32 000.
    let (o, _, stderr) = run(bin().env("MVFA_MAX_IMAGE_PIXELS", "50000").args(args(&[
        os("score"),
        os("--clip"),
        clip_fixture().as_os_str(),
        os("--checkpoint"),
        ckpt.as_os_str(),
        tmp.path().join("images").as_os_str(),
        os("--out"),
        out.as_os_str(),
    ])));
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("case_a.png: cannot read raster image: image of 240 x 240"),
        "{stderr}"
    );
    assert!(stderr.contains("truncated.bmp"), "{stderr}");
    assert!(
        stderr.contains("2 input(s) could not be scored"),
        "{stderr}"
    );
    let csv = csv_lines(&out.join("scores.csv"));
    assert_eq!(csv.len(), 2, "{csv:?}");
    assert!(csv[1].contains("case_b.png"), "{csv:?}");
    assert!(inputs[1].is_file());
}

#[cfg(unix)]
/// Whether the tests run as root, who reads files without read permission.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn unreadable_paths_are_read_errors_with_the_os_reason_naming_the_path_once() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = clip_fixture();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let data = tmp.path().join("data");
    let (o, _, stderr) = run(bin().arg("synth-data").arg(&data).args([
        "--normal",
        "2",
        "--abnormal",
        "1",
        "--size",
        "32",
    ]));
    assert!(o.status.success(), "{stderr}");
    // Each bad path has a name of its own, to count it in the messages.
    let missing = tmp.path().join("missing_x.safetensors");
    let folder = tmp.path().join("folder_x");
    std::fs::create_dir(&folder).unwrap();
    let looped = tmp.path().join("loop_x");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let mut cases = vec![
        (missing, "No such file or directory"),
        (folder.clone(), "Is a directory"),
        (looped, "Too many levels of symbolic links"),
    ];
    if !running_as_root() {
        let locked = tmp.path().join("locked_x.safetensors");
        std::fs::copy(&clip, &locked).unwrap();
        set_mode(&locked, 0o000);
        cases.push((locked, "Permission denied"));
    }
    let out = tmp.path().join("out");
    let x_ckpt = tmp.path().join("x.safetensors");
    let check = |what: &str, output: &str, name: &str, reason: &str| {
        let lines: Vec<&str> = output.lines().filter(|l| l.contains(reason)).collect();
        assert!(
            !lines.is_empty(),
            "{what}: expected {reason:?} in:\n{output}"
        );
        for line in lines {
            assert!(line.contains("cannot read"), "{what}: {line}");
            assert_eq!(
                line.matches(name).count(),
                1,
                "{what}: the path once: {line}"
            );
            assert_eq!(
                line.matches(reason).count(),
                1,
                "{what}: the reason once: {line}"
            );
        }
        assert!(!output.contains("not a DICOM file"), "{what}: {output}");
        assert!(!output.contains("panicked"), "{what}: {output}");
    };
    for (path, reason) in &cases {
        let name = path.file_name().unwrap().to_str().unwrap();
        let p = path.as_os_str();
        let score = [os("score"), os("--cpu"), os("--clip")];
        let train = [os("train"), os("--cpu"), os("--clip")];
        let organ_out = [os("--organ"), os("Brain"), os("--out"), x_ckpt.as_os_str()];
        let (c, k, d, od) = (
            clip.as_os_str(),
            ckpt.as_os_str(),
            data.as_os_str(),
            out.as_os_str(),
        );
        let mut runs: Vec<(&str, Vec<&OsStr>)> = vec![
            ("weights", vec![os("weights"), p]),
            (
                "score --clip",
                [&score[..], &[p, os("--checkpoint"), k, d, os("--out"), od]].concat(),
            ),
            (
                "score --checkpoint",
                [&score[..], &[c, os("--checkpoint"), p, d, os("--out"), od]].concat(),
            ),
            (
                "train --clip",
                [&train[..], &[p, os("--data"), d], &organ_out].concat(),
            ),
            (
                "train --init",
                [
                    &train[..],
                    &[c, os("--init"), p, os("--data"), d],
                    &organ_out,
                ]
                .concat(),
            ),
        ];
        if path != &folder {
            // A folder is a valid input to inspect and score.
            runs.push(("inspect", vec![os("inspect"), p]));
            runs.push((
                "score input",
                [&score[..], &[c, os("--checkpoint"), k, p, os("--out"), od]].concat(),
            ));
        }
        if path != &folder && !name.starts_with("locked") {
            // train --data wants a folder (a locked one is tried below).
            runs.push((
                "train --data",
                [&train[..], &[c, os("--data"), p], &organ_out].concat(),
            ));
        }
        for (what, argv) in &runs {
            let (o, stdout, stderr) = run(bin().args(argv));
            let what = format!("{what} {name}");
            assert!(!o.status.success(), "{what}: {stderr}");
            check(&what, &format!("{stdout}{stderr}"), name, reason);
        }
        let _ = std::fs::remove_dir_all(&out);
        assert!(!x_ckpt.exists());
    }
    // A file where train expects its data folder, and a folder without read permission.
    let file = tmp.path().join("file_x.png");
    std::fs::write(&file, b"not a folder").unwrap();
    let mut folders = vec![(file, "Not a directory")];
    if !running_as_root() {
        let locked = tmp.path().join("locked_x");
        std::fs::create_dir(&locked).unwrap();
        set_mode(&locked, 0o000);
        folders.push((locked, "Permission denied"));
    }
    for (path, reason) in &folders {
        let (o, _, stderr) = run(bin().args(args(&[
            os("train"),
            os("--cpu"),
            os("--clip"),
            clip.as_os_str(),
            os("--data"),
            path.as_os_str(),
            os("--organ"),
            os("Brain"),
            os("--out"),
            x_ckpt.as_os_str(),
        ])));
        assert!(!o.status.success());
        let name = path.file_name().unwrap().to_str().unwrap();
        check(&format!("train --data {name}"), &stderr, name, reason);
    }
    if !running_as_root() {
        set_mode(&tmp.path().join("locked_x"), 0o755);
    }
}

#[cfg(unix)]
/// Names in `dir` (none when it does not exist yet).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(unix)]
/// Starts `cmd`, waits until a temporary file of an atomic write (`.<name>.<pid>-<hex>.tmp`)
/// whose target starts with `prefix` appears in `dir`, sends `signal`, and returns the
/// exit status and stderr.
fn interrupt_mid_write(
    cmd: &mut std::process::Command,
    dir: &Path,
    prefix: &str,
    signal: i32,
) -> (std::process::ExitStatus, String) {
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let pattern = format!(".{prefix}");
    loop {
        if names(dir)
            .iter()
            .any(|n| n.starts_with(&pattern) && n.ends_with(".tmp"))
        {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished ({status}) before a write of {prefix}* was seen");
        }
        assert!(Instant::now() < deadline, "no write of {prefix}* seen");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill has no memory preconditions; the pid is our child, not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_no_temporary_file_and_whole_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    // synth-data, Ctrl+C while the second image is being written: the first stays whole.
    let set = tmp.path().join("set");
    let (status, stderr) = interrupt_mid_write(
        bin().arg("synth-data").arg(&set).args([
            "--normal",
            "8",
            "--abnormal",
            "0",
            "--size",
            "2048",
        ]),
        &set.join("normal"),
        "normal_001.png",
        libc::SIGINT,
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: removed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for sub in ["normal", "abnormal", "masks"] {
        no_temp_files(&set.join(sub));
    }
    let written = names(&set.join("normal"));
    assert!(
        written.contains(&"normal_000.png".to_string()),
        "{written:?}"
    );
    for name in &written {
        let img = image::open(set.join("normal").join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (2048, 2048), "{name}");
    }

    // score over earlier outputs, SIGTERM mid-write: every earlier output is still whole
    // (the old file, or the new one, which has the same bytes), and no temporary file.
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for i in 0..4 {
        let img = image::GrayImage::from_fn(1536, 1536, |x, y| {
            image::Luma([((x * (i + 3) + y * 7) % 251) as u8])
        });
        img.save(images.join(format!("case_{i}.png"))).unwrap();
    }
    let out = tmp.path().join("out");
    let score = || {
        let mut c = bin();
        c.args(args(&[
            os("score"),
            os("--cpu"),
            os("--clip"),
            clip_fixture().as_os_str(),
            os("--checkpoint"),
            ckpt.as_os_str(),
            images.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ]));
        c
    };
    let (o, _, stderr) = run(&mut score());
    assert!(o.status.success(), "{stderr}");
    let before: Vec<(String, Vec<u8>)> = names(&out)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(out.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    assert!(before.len() > 4, "{before:?}");
    let (status, stderr) = interrupt_mid_write(&mut score(), &out, "case_", libc::SIGTERM);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("terminated: removed"), "{stderr}");
    no_temp_files(&out);
    for (name, bytes) in &before {
        assert!(
            std::fs::read(out.join(name)).unwrap() == *bytes,
            "{name} changed"
        );
    }
}

/// A NIfTI-1 header (`.nii`, int16 voxels) with the given `dim` array and `extra` bytes of
/// voxel data after it.
fn nifti_header(dim: [i16; 8], extra: usize) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in dim.into_iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&4i16.to_le_bytes()); // int16
    h[72..74].copy_from_slice(&16i16.to_le_bytes());
    for i in 0..8 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352.0f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.resize(352 + extra, 0);
    h
}

#[test]
fn absurd_sizes_in_file_headers_are_clear_errors() {
    use mvfa_studio::io::input::load_stack;
    let tmp = tempfile::tempdir().unwrap();
    // NIfTI: dimensions whose product overflows, or is far beyond memory, or negative ones.
    for (name, dim, what) in [
        (
            "huge.nii",
            [3, 32767, 32767, 32767, 1, 1, 1, 1],
            "exceeds the 1073741824-voxel limit",
        ),
        (
            "seven_d.nii",
            [7, 32767, 32767, 32767, 32767, 32767, 32767, 32767],
            "overflows",
        ),
        ("negative.nii", [3, -1, -1, -1, 1, 1, 1, 1], "exceeds the"),
        (
            "frames.nii",
            [4, 512, 512, 300, 500, 1, 1, 1],
            "exceeds the 8589934592-byte limit",
        ),
        // Under the limits: the data the header promises is missing.
        (
            "wide.nii",
            [2, 32767, 32767, 1, 1, 1, 1, 1],
            "are incompatible",
        ),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, nifti_header(dim, 64)).unwrap();
        let e = load_stack(&path).unwrap_err().to_string();
        assert!(e.contains("cannot read NIfTI volume"), "{e}");
        assert!(e.contains(what), "{name}: {e}");
        assert_eq!(e.matches(name).count(), 1, "{e}");
    }
    // A small volume still reads.
    let path = tmp.path().join("small.nii");
    std::fs::write(&path, nifti_header([3, 4, 3, 2, 1, 1, 1, 1], 4 * 3 * 2 * 2)).unwrap();
    assert_eq!(load_stack(&path).unwrap().frames.len(), 2);
}

/// A small native DICOM image (explicit VR little endian): `attrs` over an 8-bit 2 x 4
/// greyscale image, with `pixels` as its pixel data.
fn dicom_image(attrs: &[(dicom_core::Tag, dicom_core::VR, &str)], pixels: Vec<u8>) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::InMemDicomObject;
    use dicom_object::meta::FileMetaTableBuilder;
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        us(tags::ROWS, 2),
        us(tags::COLUMNS, 4),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    for &(tag, vr, value) in attrs {
        let value = match vr {
            VR::US => PrimitiveValue::from(value.parse::<u16>().unwrap()),
            VR::SV => PrimitiveValue::from(value.parse::<i64>().unwrap()),
            _ => PrimitiveValue::from(value),
        };
        obj.put(DataElement::new(tag, vr, value));
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    let mut out = Vec::new();
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.3.4"),
    )
    .unwrap()
    .write_all(&mut out)
    .unwrap();
    out
}

#[test]
fn absurd_dicom_sizes_and_values_are_clear_errors() {
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    use mvfa_studio::io::dicom::{DicomErrorKind, load_dicom_bytes};
    let load = |attrs: &[(dicom_core::Tag, VR, &str)], pixels: Vec<u8>| {
        load_dicom_bytes(&dicom_image(attrs, pixels), Path::new("odd.dcm"))
    };
    // The base image reads.
    assert_eq!(load(&[], vec![7; 8]).unwrap().frames.len(), 1);
    // Rows x Columns x NumberOfFrames x SamplesPerPixel beyond the limit, or beyond u64.
    for frames in ["2147483647", "9223372036854775807"] {
        let e = load(
            &[
                (tags::ROWS, VR::US, "65535"),
                (tags::COLUMNS, VR::US, "65535"),
                (tags::SAMPLES_PER_PIXEL, VR::US, "3"),
                (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
                (tags::NUMBER_OF_FRAMES, VR::IS, frames),
            ],
            vec![7; 8],
        )
        .unwrap_err();
        assert_eq!(e.kind, DicomErrorKind::TooLarge, "{e}");
        assert!(
            e.message.contains("exceeds the 1073741824-sample limit"),
            "{e}"
        );
    }
    let e = load(
        &[(tags::NUMBER_OF_FRAMES, VR::IS, "99999999999999999999")],
        vec![7; 8],
    )
    .unwrap_err();
    assert!(e.message.contains("invalid NumberOfFrames"), "{e}");
    // A HighBit at the top of i64 is inconsistent, hence read as BitsStored - 1 (it
    // overflowed the consistency check before).
    let stack = load(
        &[(tags::HIGH_BIT, VR::SV, "9223372036854775807")],
        vec![7; 8],
    )
    .unwrap();
    assert_eq!(stack.frames[0].data, vec![7.0; 8]);
    // YBR_FULL_422 pairs pixels along a row: an odd column count is malformed (it indexed
    // past the samples before).
    let e = load(
        &[
            (tags::SAMPLES_PER_PIXEL, VR::US, "3"),
            (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "YBR_FULL_422"),
            (tags::COLUMNS, VR::US, "3"),
        ],
        vec![128; 12],
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("needs an even number of columns, the file has 3"),
        "{e}"
    );
    assert!(!e.message.contains("internally"), "{e}");
}
