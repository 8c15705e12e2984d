//! The kubelet's CPU manager state (`/var/lib/kubelet/cpu_manager_state`): its policy and the CPUs it
//! gave exclusively to Guaranteed pods' containers, which never run offline work. Under the `static`
//! policy the kubelet rewrites container cpusets whenever the shared pool changes, so tidal confines
//! pods with a CPU-time cap there instead of cpusets.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tidal_model::CpuSet;

/// Largest state file read (it is a few KiB even on big nodes).
const MAX_STATE: u64 = 4 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuManager {
    /// `none` or `static`.
    pub policy: String,
    /// CPUs assigned to single containers.
    pub exclusive: CpuSet,
    /// The file read has no name on the host any more: the kubelet wrote a new one in its place
    /// (it writes a temporary file and renames it), and a mount of the file itself keeps showing
    /// the old one.
    pub replaced: bool,
}

impl CpuManager {
    pub fn is_static(&self) -> bool {
        self.policy == "static"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    policy_name: String,
    #[serde(default)]
    entries: BTreeMap<String, BTreeMap<String, String>>,
}

/// CPU ids all entries of a state file list at most, counted with repeats: a thousand
/// containers of a thousand CPUs each. Past it the file is refused, not read for minutes.
const MAX_LISTED: usize = 1 << 20;

/// Parses the state file's JSON; each entry's CPU list is checked.
pub fn parse(text: &str) -> Result<CpuManager, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut exclusive = CpuSet::new();
    let mut listed = 0usize;
    for (pod, containers) in &raw.entries {
        for (c, cpus) in containers {
            let set: CpuSet = cpus.parse().map_err(|e| format!("entry {pod}/{c}: {e}"))?;
            listed = listed.saturating_add(set.len());
            if listed > MAX_LISTED {
                return Err(format!(
                    "its entries list more than {MAX_LISTED} CPU ids (at {pod}/{c}): not a CPU manager state"
                ));
            }
            exclusive.union_with(&set);
        }
    }
    Ok(CpuManager {
        policy: raw.policy_name,
        exclusive,
        replaced: false,
    })
}

/// Reads the state file; a missing file means no CPU manager state (policy `none`).
pub fn read(path: &Path) -> Result<CpuManager, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CpuManager::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_STATE => {
            return Err(format!(
                "{}: {} bytes is no CPU manager state",
                path.display(),
                m.len()
            ))
        }
        Ok(_) => {}
    }
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut f, &mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut m = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    m.replaced = f
        .metadata()
        .is_ok_and(|md| std::os::unix::fs::MetadataExt::nlink(&md) == 0);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn static_policy_and_its_exclusive_cpus() {
        let t = r#"{"policyName":"static","defaultCpuSet":"0-1,6-7","entries":{"pod-a":{"app":"2-3"},"pod-b":{"db":"4,5"}},"checksum":1}"#;
        let m = parse(t).unwrap();
        assert!(m.is_static());
        assert_eq!(m.exclusive.to_string(), "2-5");
        let none = parse(r#"{"policyName":"none","defaultCpuSet":"","checksum":1}"#).unwrap();
        assert!(!none.is_static() && none.exclusive.is_empty());
        assert!(parse(r#"{"policyName":"static","entries":{"p":{"c":"x"}}}"#).is_err());
        assert!(read(Path::new("/nonexistent/cpu_manager_state"))
            .unwrap()
            .exclusive
            .is_empty());
    }

    #[test]
    fn a_state_file_replaced_under_a_mount_of_it_is_said_to_be() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cpu_manager_state");
        std::fs::write(&p, r#"{"policyName":"static","entries":{}}"#).unwrap();
        assert!(!read(&p).unwrap().replaced);
        // What a mount of the file shows once the kubelet renamed a new one over it: the old
        // file, with no name left (seen here through a descriptor held across the unlink).
        let held = std::fs::File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let via = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&held)
        ));
        let m = read(&via).unwrap();
        assert!(m.replaced && m.is_static());
    }

    #[test]
    fn a_file_listing_more_cpus_than_any_node_has_is_refused() {
        let entries: Vec<String> = (0..20)
            .map(|i| format!(r#""p{i}":{{"c":"0-65535"}}"#))
            .collect();
        let t = format!(
            r#"{{"policyName":"static","entries":{{{}}}}}"#,
            entries.join(",")
        );
        let e = parse(&t).unwrap_err();
        assert!(e.contains("more than 1048576 CPU ids"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(t in "\\PC{0,200}") {
            let _ = parse(&t);
        }
    }
}
