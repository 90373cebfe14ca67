//! Helpers shared by the store's integration tests.

use std::path::Path;

/// Copies a directory tree (a data directory, in tests) with `fs_extra`, as the integration
/// harness's `copy_dir` does.
pub fn copy_dir(from: &Path, to: &Path) {
    let options = fs_extra::dir::CopyOptions::new()
        .content_only(true)
        .overwrite(true);
    std::fs::create_dir_all(to).unwrap();
    fs_extra::dir::copy(from, to, &options).unwrap();
}
