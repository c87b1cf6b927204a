//! Every fuzz target (tests/fuzz) run once on every input of its corpus: the seeds taken
//! from real objects, and the inputs that once crashed or hung a target (kept as
//! `regression-*` files once fixed). Fast, so the ordinary test run guards the fixes; the
//! coverage-guided runs themselves are `tests/fuzz/run.sh`.

#[path = "fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_corpus_input_runs_through_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    for target in targets::TARGETS {
        let dir = corpus.join(target);
        let inputs = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert!(inputs > 0, "{target} has no seed inputs");
    }
    let ran = targets::replay(&corpus);
    assert!(ran >= targets::TARGETS.len(), "{ran}");
    assert!(!targets::run("no-such-target", b""));
}
