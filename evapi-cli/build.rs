//! The commit the binaries were built from, for `--version`: `git describe` of the
//! source tree when it is a git checkout, else "unknown commit" (a source tarball).

fn main() {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=EVAPI_COMMIT={commit}");
    // Built again when the commit changes (HEAD moved to another branch, or the branch
    // to another commit), not on every `git add` or `git status` (the index changes with
    // those, and everything downstream of this crate would be rebuilt). `-dirty` is
    // therefore as of the last build after a commit; release builds come from clean
    // checkouts.
    let mut watched = vec!["../.git/HEAD".to_owned(), "../.git/packed-refs".to_owned()];
    if let Ok(head) = std::fs::read_to_string("../.git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            watched.push(format!("../.git/{branch}"));
        }
    }
    for path in watched {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
