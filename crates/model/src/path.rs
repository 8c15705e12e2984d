//! Checked addresses of cgroups. A [`GroupPath`] names a group under the tidal root; a
//! [`ForeignGroup`] names a group that another manager owns (the kubelet's pods), relative to a cgroup
//! mount. Neither can be built, joined or deserialised without validation, so no path tidal acts on
//! can climb out of where it belongs: no absolute paths, no `.` or `..`, no empty components, no NUL
//! or control characters, bounded length and depth. [`Target`] is the one address type plans, the
//! actuator, the journal and `restore` share.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest component the kernel accepts in a cgroup directory name.
pub const MAX_COMPONENT: usize = 255;
/// Deepest path tidal will address below its root or a mount.
pub const MAX_DEPTH: usize = 32;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cgroup path '{path}': {reason}")]
pub struct BadPath {
    pub path: String,
    pub reason: &'static str,
}

/// Checks one directory name.
pub fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty component (leading, trailing or doubled '/')");
    }
    if c == "." || c == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if c.len() > MAX_COMPONENT {
        return Err("a component is longer than 255 bytes");
    }
    if c.contains('/') {
        return Err("a name may not contain '/'");
    }
    if c.chars().any(|ch| ch == '\0' || ch.is_control()) {
        return Err("NUL and control characters are not allowed");
    }
    Ok(())
}

/// Checks a `/`-separated relative path; `allow_empty` admits "" (the root itself).
fn check_relative(p: &str, allow_empty: bool) -> Result<(), BadPath> {
    let bad = |reason| BadPath {
        path: p.chars().take(300).collect(),
        reason,
    };
    if p.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(bad("empty path"))
        };
    }
    if p.starts_with('/') {
        return Err(bad("absolute paths are not allowed here"));
    }
    let mut depth = 0;
    for c in p.split('/') {
        check_component(c).map_err(bad)?;
        depth += 1;
    }
    if depth > MAX_DEPTH {
        return Err(bad("deeper than 32 levels"));
    }
    Ok(())
}

/// A group path relative to the tidal root, `/`-separated, without leading or trailing `/`. The empty
/// path is the tidal root itself. Shared, not copied, when cloned: every tick's policy state, plan
/// and snapshot name the same groups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupPath(Arc<str>);

impl Default for GroupPath {
    fn default() -> Self {
        GroupPath::root()
    }
}

impl GroupPath {
    pub fn root() -> Self {
        static ROOT: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
        GroupPath(Arc::clone(&ROOT))
    }

    /// Validates `p` (see the module docs).
    pub fn new(p: &str) -> Result<Self, BadPath> {
        check_relative(p, true)?;
        Ok(GroupPath(Arc::from(p)))
    }

    /// Built from names known to be valid (level groups): the caller guarantees validity.
    pub(crate) fn trusted(p: &str) -> Self {
        debug_assert!(check_relative(p, true).is_ok(), "{p}");
        GroupPath(Arc::from(p))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The child `name` of this group; `name` must be one valid component.
    pub fn join(&self, name: &str) -> Result<Self, BadPath> {
        check_component(name).map_err(|reason| BadPath {
            path: name.chars().take(300).collect(),
            reason,
        })?;
        let p = if self.0.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", self.0, name)
        };
        GroupPath::new(&p)
    }

    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((p, _)) => GroupPath(Arc::from(p)),
            None => GroupPath::root(),
        })
    }
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.split('/').count()
        }
    }
    /// True if `self` is `other` or below it.
    pub fn is_within(&self, other: &GroupPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&*other.0)
                && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
    /// This path and every ancestor below the root, outermost first (`a`, `a/b`, `a/b/c`).
    pub fn lineage(&self) -> Vec<GroupPath> {
        let mut out = Vec::new();
        let mut cur = Some(self.clone());
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }
}

impl TryFrom<String> for GroupPath {
    type Error = BadPath;
    fn try_from(s: String) -> Result<Self, BadPath> {
        check_relative(&s, true)?;
        Ok(GroupPath(Arc::from(s)))
    }
}

impl From<GroupPath> for String {
    fn from(g: GroupPath) -> String {
        g.0.to_string()
    }
}

impl std::str::FromStr for GroupPath {
    type Err = BadPath;
    fn from_str(s: &str) -> Result<Self, BadPath> {
        GroupPath::new(s)
    }
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A group that another manager owns (the kubelet's pod and container groups), as a path relative to
/// the root of a cgroup mount; on v1 the same relative path exists under every controller's mount.
/// Never empty: the mount root itself is nobody's to tune. tidal only sets values here (a pod's
/// freezer state among them, as the ladder does): it never creates, removes, joins or kills such a
/// group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ForeignGroup(Arc<str>);

impl ForeignGroup {
    /// Validates `p`; a leading `/` (as `/proc/<pid>/cgroup` prints it) is accepted and dropped.
    pub fn new(p: &str) -> Result<Self, BadPath> {
        let rel = p.strip_prefix('/').unwrap_or(p);
        check_relative(rel, false)?;
        Ok(ForeignGroup(Arc::from(rel)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
    /// Whether `self` is `other` or one of the groups above it.
    pub fn contains(&self, other: &ForeignGroup) -> bool {
        other
            .as_str()
            .strip_prefix(self.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
    pub fn parent(&self) -> Option<ForeignGroup> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| ForeignGroup(Arc::from(p)))
    }
    /// The child `name` of this group.
    /// A child group: `name` is one directory name.
    pub fn join(&self, name: &str) -> Result<Self, BadPath> {
        check_component(name).map_err(|reason| BadPath {
            path: name.chars().take(300).collect(),
            reason,
        })?;
        ForeignGroup::new(&format!("{}/{}", self.0, name))
    }
}

impl TryFrom<String> for ForeignGroup {
    type Error = BadPath;
    fn try_from(s: String) -> Result<Self, BadPath> {
        ForeignGroup::new(&s)
    }
}

impl From<ForeignGroup> for String {
    fn from(g: ForeignGroup) -> String {
        g.0.to_string()
    }
}

impl fmt::Display for ForeignGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Where a value is set: a group under the tidal root (any operation) or a group another manager owns
/// (set values only; see [`crate::Op`]). In JSON a tidal group is its path as a string and a foreign
/// one is `{"foreign": "kubepods/…"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "RawTarget", into = "RawTarget")]
pub enum Target {
    Tidal(GroupPath),
    Foreign(ForeignGroup),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawTarget {
    Tidal(GroupPath),
    Foreign { foreign: ForeignGroup },
}

impl From<RawTarget> for Target {
    fn from(r: RawTarget) -> Target {
        match r {
            RawTarget::Tidal(g) => Target::Tidal(g),
            RawTarget::Foreign { foreign } => Target::Foreign(foreign),
        }
    }
}

impl From<Target> for RawTarget {
    fn from(t: Target) -> RawTarget {
        match t {
            Target::Tidal(g) => RawTarget::Tidal(g),
            Target::Foreign(foreign) => RawTarget::Foreign { foreign },
        }
    }
}

impl Target {
    pub fn tidal(&self) -> Option<&GroupPath> {
        match self {
            Target::Tidal(g) => Some(g),
            Target::Foreign(_) => None,
        }
    }
}

impl From<GroupPath> for Target {
    fn from(g: GroupPath) -> Self {
        Target::Tidal(g)
    }
}

impl From<ForeignGroup> for Target {
    fn from(g: ForeignGroup) -> Self {
        Target::Foreign(g)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tidal(g) => g.fmt(f),
            Target::Foreign(g) => write!(f, "foreign {g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_foreign_group_contains_itself_and_what_is_below_it_only() {
        let g = |s| ForeignGroup::new(s).unwrap();
        assert!(g("kubepods").contains(&g("kubepods")));
        assert!(g("kubepods").contains(&g("kubepods/besteffort")));
        assert!(!g("kubepods").contains(&g("kubepods.slice")));
        assert!(!g("kubepods/besteffort").contains(&g("kubepods")));
        assert!(!g("kubepods/besteffort").contains(&g("kubepods/besteffort2")));
    }

    #[test]
    fn group_paths_refuse_every_escape() {
        for bad in [
            "..",
            "../esc-sibling",
            "a/../b",
            "/etc",
            "a//b",
            "a/",
            ".",
            "a/./b",
            "a\0b",
            "a\nb",
        ] {
            assert!(GroupPath::new(bad).is_err(), "{bad:?} accepted");
            assert!(
                serde_json::from_str::<GroupPath>(&serde_json::to_string(bad).unwrap()).is_err(),
                "{bad:?} deserialised"
            );
        }
        assert!(GroupPath::new(&"x".repeat(256)).is_err());
        assert!(GroupPath::new(&vec!["a"; 33].join("/")).is_err());
        assert!(GroupPath::root().join("..").is_err());
        assert!(GroupPath::root().join("a/b").is_err());
        assert!(GroupPath::root().join("").is_err());
    }

    #[test]
    fn group_path_navigation() {
        let p = GroupPath::new("offline/offline/job").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "offline/offline");
        assert_eq!(p.name(), "job");
        assert_eq!(p.depth(), 3);
        let l: Vec<_> = p.lineage().iter().map(|g| g.as_str().to_string()).collect();
        assert_eq!(l, vec!["offline", "offline/offline", "offline/offline/job"]);
        assert_eq!(GroupPath::root().join("x").unwrap().as_str(), "x");
        assert!(GroupPath::new("x").unwrap().parent().unwrap().is_root());
        assert!(p.is_within(&GroupPath::new("offline").unwrap()));
        assert!(!GroupPath::new("offline-x")
            .unwrap()
            .is_within(&GroupPath::new("offline").unwrap()));
    }

    #[test]
    fn foreign_groups_are_relative_and_never_the_mount_root() {
        let g = ForeignGroup::new("/kubepods/besteffort/pod1").unwrap();
        assert_eq!(g.as_str(), "kubepods/besteffort/pod1");
        assert_eq!(g.to_string(), "/kubepods/besteffort/pod1");
        assert!(ForeignGroup::new("/").is_err());
        assert!(ForeignGroup::new("").is_err());
        assert!(ForeignGroup::new("/kubepods/../etc").is_err());
        let t: Target = serde_json::from_str(r#"{"foreign":"kubepods/x"}"#).unwrap();
        let g: Target = serde_json::from_str(r#""online/web""#).unwrap();
        assert_eq!(g, Target::Tidal(GroupPath::new("online/web").unwrap()));
        assert!(serde_json::from_str::<Target>(r#""../web""#).is_err());
        assert_eq!(t, Target::Foreign(ForeignGroup::new("kubepods/x").unwrap()));
        assert!(serde_json::from_str::<Target>(r#"{"foreign":"../x"}"#).is_err());
    }

    proptest! {
        #[test]
        fn any_accepted_path_stays_below_its_root(s in "[a-z./\\-]{0,40}") {
            if let Ok(g) = GroupPath::new(&s) {
                let joined = std::path::Path::new("/root").join(g.as_str());
                let mut depth = 0i32;
                for c in joined.components().skip(2) {
                    match c {
                        std::path::Component::Normal(_) => depth += 1,
                        _ => depth -= 100,
                    }
                }
                prop_assert!(depth >= 0, "{} escapes", s);
                prop_assert!(joined.starts_with("/root"));
            }
        }
    }
}
