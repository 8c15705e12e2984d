//! The one door to the kernel, checked on the sources: outside the actuator no code removes cgroup
//! directories, writes cgroup files or signals tasks (the benchmark's signals to its own children go
//! through the one checked helper in its sandbox). The primitives are private to the actuator, so
//! this guards against someone writing their own.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn nothing_outside_the_actuator_changes_the_kernel() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for c in std::fs::read_dir(crates).unwrap().flatten() {
        let src = c.path().join("src");
        if src.is_dir() && !c.path().ends_with("actuator") {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests build fake trees: only the code above them counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut in_signal_own = false;
        for (i, line) in code.lines().enumerate() {
            if line.contains("fn signal_own(") {
                in_signal_own = true;
            } else if line.starts_with("    pub fn ") || line.starts_with("    fn ") {
                in_signal_own = false;
            }
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            let kernel_write = l.contains("fs::write(")
                && ["cgroup", "procs", "freeze", "cpuset", "cpu.", "memory."]
                    .iter()
                    .any(|w| l.contains(w));
            let offends = l.contains("remove_dir")
                || kernel_write
                || (l.contains("libc::kill(") && !in_signal_own);
            if offends {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, l));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "kernel changes outside the actuator:\n{}",
        bad.join("\n")
    );
}
