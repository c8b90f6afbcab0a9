//! Dataset layouts: the MVFA layout (spec 8), shot files, plain folders. Temporary folders
//! with empty files stand in for images (only paths matter here).
use std::fs;
use std::path::{Path, PathBuf};

use mvfa_studio::io::dataset::{
    DatasetError, MvfaDataset, MvfaKey, PlainFolderOptions, ShotFile, Split, open_plain_folders,
    shot_file_path,
};

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"").unwrap();
}

/// A small Brain_AD: valid has 5 normal / 4 abnormal (+ masks), test 3 normal / 2 abnormal.
fn make_brain(root: &Path) -> PathBuf {
    let d = root.join("Brain_AD");
    for n in [
        "01325_99.png",
        "00250_60.png",
        "01555_60.png",
        "01181_99.png",
        "00001_60.png",
    ] {
        touch(&d.join("valid/good/img").join(n));
    }
    for n in [
        "01388_60.png",
        "01471_60.png",
        "00154_60.png",
        "01646_90.png",
    ] {
        touch(&d.join("valid/Ungood/img").join(n));
        touch(&d.join("valid/Ungood/anomaly_mask").join(n));
    }
    for n in ["b.png", "a.png", "c.png"] {
        touch(&d.join("test/good/img").join(n));
    }
    for n in ["z.png", "y.png"] {
        touch(&d.join("test/Ungood/img").join(n));
        touch(&d.join("test/Ungood/anomaly_mask").join(n));
    }
    // Hidden files are ignored.
    touch(&d.join("test/good/img/.DS_Store"));
    d
}

fn names(items: &[mvfa_studio::io::dataset::Sample]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.image.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

#[test]
fn keys_words_and_masks() {
    let words: Vec<_> = MvfaKey::ALL.iter().map(|k| k.organ_word()).collect();
    assert_eq!(
        words,
        [
            "Brain",
            "Liver",
            "retinal OCT",
            "retinal OCT",
            "Chest X-ray film",
            "histopathological image"
        ]
    );
    let masks: Vec<_> = MvfaKey::ALL.iter().map(|k| k.has_masks()).collect();
    assert_eq!(masks, [true, true, true, false, false, false]);
    assert_eq!(
        MvfaKey::parse("Retina_RESC_AD").unwrap(),
        MvfaKey::RetinaResc
    );
    assert_eq!(MvfaKey::parse("oct17").unwrap(), MvfaKey::RetinaOct2017);
    assert_eq!("chest".parse::<MvfaKey>().unwrap(), MvfaKey::Chest);
    assert_eq!(MvfaKey::Histopathology.dir_name(), "Histopathology_AD");
    let err = MvfaKey::parse("Knee").unwrap_err().to_string();
    assert!(
        err.contains("Knee") && err.contains("Retina_OCT2017"),
        "{err}"
    );
    assert_eq!(MvfaKey::PAPER_ORDER[0].paper_name(), "HIS");
}

#[test]
fn mvfa_test_order_masks_and_root_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_brain(tmp.path());
    let via_root = MvfaDataset::open(tmp.path(), MvfaKey::Brain).unwrap();
    let via_dir = MvfaDataset::open(&dir, MvfaKey::Brain).unwrap();
    let inferred = MvfaDataset::open_dir(&dir).unwrap();
    assert_eq!(via_root, via_dir);
    assert_eq!(inferred.key, MvfaKey::Brain);

    let test = via_root.test_set().unwrap();
    assert_eq!(
        names(&test.items),
        ["a.png", "b.png", "c.png", "y.png", "z.png"]
    );
    assert_eq!(test.labels(), [false, false, false, true, true]);
    assert_eq!(test.counts(), (3, 2));
    assert!(test.has_masks);
    assert_eq!(test.organ_word, "Brain");
    assert!(test.items[..3].iter().all(|s| s.mask.is_none()));
    assert_eq!(
        test.items[3].mask.as_deref(),
        Some(dir.join("test/Ungood/anomaly_mask/y.png").as_path())
    );
    let valid = via_root.split(Split::Valid).unwrap();
    assert_eq!(valid.counts(), (5, 4));

    // The other keys are not there.
    let err = MvfaDataset::open(tmp.path(), MvfaKey::Liver).unwrap_err();
    assert!(matches!(err, DatasetError::NoDatasetFolder { .. }));
    assert!(err.to_string().contains("Liver_AD"), "{err}");
}

#[test]
fn mvfa_classification_dataset_has_no_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("Retina_OCT2017_AD");
    for split in ["valid", "test"] {
        touch(&d.join(split).join("good/img/NORMAL-1-1.jpeg"));
        touch(&d.join(split).join("Ungood/img/CNV-2-1.jpeg"));
    }
    let ds = MvfaDataset::open(tmp.path(), MvfaKey::RetinaOct2017).unwrap();
    let test = ds.test_set().unwrap();
    assert!(!test.has_masks);
    assert_eq!(test.organ_word, "retinal OCT");
    assert!(test.items.iter().all(|s| s.mask.is_none()));
}

#[test]
fn mvfa_layout_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = make_brain(tmp.path());
    let ds = MvfaDataset::open(tmp.path(), MvfaKey::Brain).unwrap();

    // Missing mask.
    fs::remove_file(dir.join("test/Ungood/anomaly_mask/y.png")).unwrap();
    let err = ds.test_set().unwrap_err();
    assert!(matches!(err, DatasetError::MissingMask { .. }), "{err}");
    assert!(err.to_string().contains("y.png"), "{err}");

    // A mask without its image.
    touch(&dir.join("test/Ungood/anomaly_mask/y.png"));
    touch(&dir.join("test/Ungood/anomaly_mask/orphan.png"));
    let err = ds.test_set().unwrap_err().to_string();
    assert!(
        err.contains("orphan.png") && err.contains("matches no image"),
        "{err}"
    );
    fs::remove_file(dir.join("test/Ungood/anomaly_mask/orphan.png")).unwrap();
    assert!(ds.test_set().is_ok());

    // Missing and empty folders.
    fs::remove_dir_all(dir.join("test/good")).unwrap();
    let err = ds.test_set().unwrap_err();
    assert!(matches!(err, DatasetError::MissingFolder { .. }));
    assert!(err.to_string().contains("test/good/img"), "{err}");
    fs::create_dir_all(dir.join("test/good/img")).unwrap();
    let err = ds.test_set().unwrap_err();
    assert!(matches!(err, DatasetError::EmptyFolder { .. }), "{err}");
    assert!(err.to_string().contains("test/good/img"), "{err}");
}

#[test]
fn shot_files_parse_and_select_in_list_order() {
    let text = "n-0: 01325_99.png 00250_60.png 01555_60.png 01181_99.png\n\
                a-0: 01388_60.png 01471_60.png 00154_60.png 01646_90.png\n\
                \n\
                a-3: 01471_60.png 00154_60.png\n\
                n-3: 00001_60.png 01181_99.png\n";
    let path = Path::new("fewshot_seed/Brain/4-shot.txt");
    let file = ShotFile::parse(text, path).unwrap();
    assert_eq!(file.iterates(), [0, 3]);
    let list0 = file.list(0).unwrap();
    assert_eq!(list0.abnormal[0], "01388_60.png");
    assert_eq!(list0.normal.len(), 4);
    let err = file.list(1).unwrap_err().to_string();
    assert!(err.contains("a-1:") && err.contains("4-shot.txt"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    make_brain(tmp.path());
    let ds = MvfaDataset::open(tmp.path(), MvfaKey::Brain).unwrap();
    let shots = ds.shots_from_list(&list0, 4).unwrap();
    assert_eq!(
        names(&shots.abnormal),
        [
            "01388_60.png",
            "01471_60.png",
            "00154_60.png",
            "01646_90.png"
        ]
    );
    assert_eq!(
        names(&shots.normal),
        [
            "01325_99.png",
            "00250_60.png",
            "01555_60.png",
            "01181_99.png"
        ]
    );
    assert!(shots.abnormal.iter().all(|s| s.label && s.mask.is_some()));
    assert!(shots.normal.iter().all(|s| !s.label && s.mask.is_none()));
    // k smaller than the list: the first k names.
    let two = ds.shots_from_list(&file.list(3).unwrap(), 2).unwrap();
    assert_eq!(names(&two.normal), ["00001_60.png", "01181_99.png"]);
    // k larger than the list, and a name not in the pool.
    let err = ds.shots_from_list(&file.list(3).unwrap(), 4).unwrap_err();
    assert!(matches!(
        err,
        DatasetError::NotEnoughShots {
            needed: 4,
            available: 2,
            ..
        }
    ));
    let mut bad = list0.clone();
    bad.normal[1] = "99999_60.png".into();
    let err = ds.shots_from_list(&bad, 4).unwrap_err().to_string();
    assert!(
        err.contains("99999_60.png") && err.contains("valid/good/img"),
        "{err}"
    );

    // Reading from disk at the reference's place.
    let seed_root = tmp.path().join("fewshot_seed");
    let p = shot_file_path(&seed_root, MvfaKey::Brain, 4);
    assert!(p.ends_with("fewshot_seed/Brain/4-shot.txt"));
    touch(&p);
    fs::write(&p, text).unwrap();
    assert_eq!(ShotFile::read(&p).unwrap().list(0).unwrap(), list0);
    let err = ShotFile::read(&seed_root.join("Brain/16-shot.txt")).unwrap_err();
    assert!(err.to_string().contains("16-shot.txt"), "{err}");

    // Syntax errors name the line.
    let err = ShotFile::parse("n-0: a.png\nx-0: b.png\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("x-0:"), "{err}");
    let err = ShotFile::parse("a-0: a.png\na-0: b.png\n", path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("second"), "{err}");
}

#[test]
fn random_shots_are_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    make_brain(tmp.path());
    let ds = MvfaDataset::open(tmp.path(), MvfaKey::Brain).unwrap();
    let a = ds.shots_random(3, 7).unwrap();
    assert_eq!(a, ds.shots_random(3, 7).unwrap());
    assert_eq!(a.normal.len(), 3);
    assert_eq!(a.abnormal.len(), 3);
    assert!(a.abnormal.iter().all(|s| s.label && s.mask.is_some()));
    let mut seen: Vec<_> = names(&a.normal);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    // Different seeds give different groups (for at least one of a few seeds).
    assert!((8..20).any(|s| ds.shots_random(3, s).unwrap() != a));
    let err = ds.shots_random(5, 1).unwrap_err();
    assert!(matches!(
        err,
        DatasetError::NotEnoughShots {
            needed: 5,
            available: 4,
            ..
        }
    ));
}

fn make_plain(root: &Path, with_masks: bool) {
    for n in ["n2.png", "n1.dcm"] {
        touch(&root.join("normal").join(n));
    }
    // A DICOM file without extension is recognised by its content.
    fs::copy(
        crate::support::fixture_dir("dicom/ct_rescale_windows.dcm"),
        root.join("normal/1.2.840.10008"),
    )
    .unwrap();
    touch(&root.join("normal/notes.txt"));
    for n in ["a1.png", "a2.jpg"] {
        touch(&root.join("abnormal").join(n));
    }
    if with_masks {
        touch(&root.join("masks/a1.png"));
        touch(&root.join("masks/a2.png"));
    }
}

#[test]
fn plain_folders_with_masks() {
    let tmp = tempfile::tempdir().unwrap();
    make_plain(tmp.path(), true);
    let opts = PlainFolderOptions::new("Brain");
    let ds = open_plain_folders(tmp.path(), &opts).unwrap();
    assert_eq!(
        names(&ds.items),
        ["1.2.840.10008", "n1.dcm", "n2.png", "a1.png", "a2.jpg"]
    );
    assert!(ds.has_masks);
    assert_eq!(ds.organ_word, "Brain");
    assert_eq!(ds.counts(), (3, 2));
    assert_eq!(
        ds.items[4].mask.as_deref(),
        Some(tmp.path().join("masks/a2.png").as_path())
    );
    assert!(ds.items[..3].iter().all(|s| s.mask.is_none()));

    // Split helpers: shots drawn, the rest held out, reproducibly.
    let (shots, rest) = ds.draw_shots(2, 1, 3).unwrap();
    assert_eq!((shots.normal.len(), shots.abnormal.len()), (2, 1));
    assert_eq!(rest.counts(), (1, 1));
    assert_eq!(ds.draw_shots(2, 1, 3).unwrap().0, shots);
    let all = ds.to_few_shot();
    assert_eq!((all.normal.len(), all.abnormal.len()), (3, 2));
}

#[test]
fn plain_folders_without_masks_and_normal_only() {
    let tmp = tempfile::tempdir().unwrap();
    make_plain(tmp.path(), false);
    let ds = open_plain_folders(tmp.path(), &PlainFolderOptions::new("Chest X-ray film")).unwrap();
    assert!(!ds.has_masks);
    assert!(ds.items.iter().all(|s| s.mask.is_none()));

    fs::remove_dir_all(tmp.path().join("abnormal")).unwrap();
    let strict = PlainFolderOptions::new("Chest X-ray film");
    let err = open_plain_folders(tmp.path(), &strict).unwrap_err();
    assert!(matches!(err, DatasetError::MissingFolder { .. }));
    assert!(err.to_string().contains("abnormal"), "{err}");
    let lenient = PlainFolderOptions {
        allow_normal_only: true,
        ..strict
    };
    let ds = open_plain_folders(tmp.path(), &lenient).unwrap();
    assert_eq!(ds.counts(), (3, 0));
}

#[test]
fn plain_folder_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_plain(root, true);
    let opts = PlainFolderOptions::new("Liver");

    // Abnormal image without a mask.
    fs::remove_file(root.join("masks/a2.png")).unwrap();
    let err = open_plain_folders(root, &opts).unwrap_err();
    assert!(matches!(err, DatasetError::MissingMask { .. }));
    assert!(err.to_string().contains("a2.jpg"), "{err}");
    // ... accepted as an image-level label when allowed.
    let lenient = PlainFolderOptions {
        allow_unmasked_abnormal: true,
        ..opts.clone()
    };
    let ds = open_plain_folders(root, &lenient).unwrap();
    assert!(
        ds.items
            .iter()
            .find(|s| s.image.ends_with("a2.jpg"))
            .unwrap()
            .mask
            .is_none()
    );
    touch(&root.join("masks/a2.png"));

    // A mask without an image.
    touch(&root.join("masks/ghost.png"));
    let err = open_plain_folders(root, &opts).unwrap_err();
    assert!(matches!(err, DatasetError::UnmatchedMask { .. }));
    assert!(err.to_string().contains("ghost.png"), "{err}");
    fs::remove_file(root.join("masks/ghost.png")).unwrap();

    // Two masks for one stem, and two images with one stem.
    touch(&root.join("masks/a1.bmp"));
    let err = open_plain_folders(root, &opts).unwrap_err().to_string();
    assert!(err.contains("a1.bmp") && err.contains("a1.png"), "{err}");
    fs::remove_file(root.join("masks/a1.bmp")).unwrap();
    touch(&root.join("abnormal/n2.tif"));
    let err = open_plain_folders(root, &opts).unwrap_err().to_string();
    assert!(err.contains("n2.tif") && err.contains("n2.png"), "{err}");
    fs::remove_file(root.join("abnormal/n2.tif")).unwrap();
    assert!(open_plain_folders(root, &opts).is_ok());

    // Empty and missing folders.
    for n in ["n2.png", "n1.dcm", "1.2.840.10008"] {
        fs::remove_file(root.join("normal").join(n)).unwrap();
    }
    let err = open_plain_folders(root, &opts).unwrap_err();
    assert!(matches!(err, DatasetError::EmptyFolder { .. }), "{err}");
    assert!(err.to_string().contains("normal"), "{err}");
    let err = open_plain_folders(&root.join("nope"), &opts).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
