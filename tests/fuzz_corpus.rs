//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! checks its fuzz targets run, so that plain `cargo test`, without
//! cargo-fuzz or a nightly compiler, keeps every input that ever mattered
//! to the fuzzer passing.

// A test that meets a broken precondition should fail loudly, right there.
#![allow(clippy::expect_used)]

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use integration_service::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_passes_its_targets_checks() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "the corpus of {target} is empty");
        let mut accepted = 0;
        for file in &corpus {
            let data = fs::read(file).expect("a corpus file");
            match panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
                Ok(true) => accepted += 1,
                Ok(false) => {}
                Err(_) => failures.push(file.display().to_string()),
            }
        }
        // An input the parser accepts takes the paths that check the most.
        assert!(
            accepted > 0,
            "no input in the corpus of {target} is accepted: add a valid one"
        );
    }
    assert!(failures.is_empty(), "failing corpus inputs: {failures:#?}");
}

#[test]
fn every_fuzz_target_has_a_check_and_a_corpus() {
    let mut targets: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|file| Some(file.file_stem()?.to_str()?.to_owned()))
        .collect();
    let mut corpora: Vec<String> = files(&fuzz_dir().join("corpus"))
        .iter()
        .filter_map(|dir| Some(dir.file_name()?.to_str()?.to_owned()))
        .collect();
    let mut checks: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    targets.sort();
    corpora.sort();
    checks.sort();
    assert_eq!(targets, checks, "fuzz/fuzz_targets/ and fuzzing::TARGETS");
    assert_eq!(corpora, checks, "fuzz/corpus/ and fuzzing::TARGETS");
}
