//! The fault matrix's deliberate defects (`tools/chaos/mutants/`, applied by
//! `scripts/chaos-mutant.sh` to a copy) must keep applying to the current source: a patch
//! that no longer applies would leave the "does it catch bugs?" demonstration silently
//! broken.

use std::process::Command;

#[test]
fn every_mutant_patch_applies_to_the_current_source() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(root).join("tools/chaos/mutants");
    let mut patches: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    assert!(!patches.is_empty(), "no patches in {}", dir.display());
    for patch in patches {
        let out = Command::new("git")
            .args(["apply", "--check"])
            .arg(&patch)
            .current_dir(root)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "{} no longer applies: {}",
            patch.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
