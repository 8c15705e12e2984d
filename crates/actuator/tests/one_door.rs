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

/// The modules a source file names: `crate::x` / `super::x` paths and `use crate::{x, y}` lists.
fn deps(rel: &str, text: &str) -> std::collections::BTreeSet<String> {
    let parent: Vec<&str> = rel.split("::").collect();
    let parent = parent[..parent.len().saturating_sub(1)].join("::");
    let mut out = std::collections::BTreeSet::new();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    for (base, rest) in [("crate::", ""), ("super::", "")] {
        let _ = rest;
        for (i, _) in code.match_indices(base) {
            let tail = &code[i + base.len()..];
            let names: Vec<String> = if let Some(list) = tail.strip_prefix('{') {
                list.split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                    .collect()
            } else {
                let n: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut parts = n.split("::");
                let first = parts.next().unwrap_or("").to_string();
                // v1::cpu and v2::cpu are modules of their own.
                match (first.as_str(), parts.next()) {
                    ("v1" | "v2", Some(second)) if !second.is_empty() => {
                        vec![format!("{first}::{second}")]
                    }
                    _ => vec![first],
                }
            };
            for n in names.into_iter().filter(|n| !n.is_empty() && n != "self") {
                let full = if base == "super::" && !parent.is_empty() {
                    format!("{parent}::{n}")
                } else {
                    n
                };
                out.insert(full);
            }
        }
    }
    out
}

#[test]
fn no_two_modules_import_each_other() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cycles = Vec::new();
    for c in std::fs::read_dir(crates).unwrap().flatten() {
        let src = c.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut graph = std::collections::BTreeMap::new();
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut rel = rel.to_string_lossy().replace('/', "::");
            if let Some(r) = rel.strip_suffix("::mod") {
                rel = r.to_string();
            }
            if rel == "lib" || rel == "main" {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            graph.insert(rel.clone(), deps(&rel, &text));
        }
        for (a, da) in &graph {
            for b in da {
                // A parent module naming its children is how Rust declares them; only siblings and
                // children reaching back up count.
                if a < b
                    && !b.starts_with(&format!("{a}::"))
                    && graph.get(b).is_some_and(|db| db.contains(a))
                {
                    cycles.push(format!("{}: {a} <-> {b}", c.path().display()));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules importing each other:\n{}",
        cycles.join("\n")
    );
}
