//! The fine-tuning guarantee over fresh draws of the synthetic task (issue 20): for each seed
//! a new tiny random CLIP, new shots and new held-out images; the detector before fine-tuning
//! against the one the fit installs, under the quick schedule and a 15-epoch paper run.
//!
//! ```text
//! cargo run --release --example fit_guarantee [-- FIRST_SEED SEEDS]   # default: 1 10
//! ```
use mvfa_studio::eval::fit_check::{CheckSchedule, TaskSize, run_seed, table};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("seed numbers"))
        .collect();
    let first = args.first().copied().unwrap_or(1);
    let count = args.get(1).copied().unwrap_or(10);
    for (name, schedule) in [
        (
            "quick schedule (3 augmentations, 5 epochs)",
            CheckSchedule::QUICK,
        ),
        ("paper augmentations, 15 epochs", CheckSchedule::PAPER_15),
    ] {
        let outcomes: Vec<_> = (first..first + count)
            .map(|seed| {
                let o = run_seed(seed, schedule, TaskSize::default());
                if let Some(report) = &o.report {
                    eprintln!("seed {seed}: {}", report.message);
                }
                o
            })
            .collect();
        println!("== {name} ==");
        print!("{}", table(&outcomes));
        println!();
    }
}
