//! Parsers for `/proc/<pid>/mountinfo` (cgroup mounts) and `/proc/<pid>/cgroup` (membership).

use std::path::PathBuf;

/// One cgroup or cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// The mount's root inside the hierarchy (not `/` inside some containers).
    pub root: String,
    pub v2: bool,
    /// v1: controllers from the super options (`cpu,cpuacct`; `name=systemd` is kept as-is). Empty for v2.
    pub controllers: Vec<String>,
}

/// Unescapes mountinfo's octal escapes (`\040` for space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text, keeping the cgroup and cgroup2 mounts. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let post: Vec<&str> = post.split_whitespace().collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let fstype = post[0];
        let root = unescape(pre[3]);
        let mount_point = PathBuf::from(unescape(pre[4]));
        match fstype {
            "cgroup2" => out.push(CgroupMount {
                mount_point,
                root,
                v2: true,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let controllers = post[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro"
                                | "relatime"
                                | "noatime"
                                | "nosuid"
                                | "nodev"
                                | "noexec"
                                | "clone_children"
                                | "noprefix"
                                | "xattr"
                        ) && !o.starts_with("release_agent=")
                    })
                    .map(str::to_string)
                    .collect();
                out.push(CgroupMount {
                    mount_point,
                    root,
                    v2: false,
                    controllers,
                })
            }
            _ => {}
        }
    }
    out
}

/// One line of `/proc/<pid>/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub id: u32,
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctrls = it.next()?;
            let path = it.next()?.to_string();
            Some(Membership {
                id,
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_mountinfo() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 7);
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert!(m.iter().any(|x| x.controllers == vec!["name=systemd"]));
        let v2: Vec<_> = m.iter().filter(|x| x.v2).collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn v1_host_with_comounted_controllers() {
        let t = "\
25 24 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
29 24 0:26 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,net_cls,net_prio
30 24 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].controllers, vec!["name=systemd"]);
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(m.iter().all(|x| !x.v2));
    }

    #[test]
    fn v2_host_and_container_root() {
        let t = "\
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
300 290 0:23 /kubepods.slice/x /sys/fs/cgroup\\040x ro - cgroup2 cgroup2 rw
";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert!(m[0].v2 && m[0].root == "/");
        assert_eq!(m[1].root, "/kubepods.slice/x");
        assert_eq!(m[1].mount_point, PathBuf::from("/sys/fs/cgroup x"));
    }

    #[test]
    fn proc_cgroup_lines() {
        let t = "9:name=systemd:/\n4:memory:/process_api/f0\n2:cpu,cpuacct:/a\n0::/\n";
        let m = parse_proc_cgroup(t);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].controllers, vec!["memory"]);
        assert_eq!(m[1].path, "/process_api/f0");
        assert_eq!(m[2].controllers, vec!["cpu", "cpuacct"]);
        assert!(m[3].controllers.is_empty() && m[3].id == 0);
    }

    proptest::proptest! {
        #[test]
        fn mountinfo_never_panics(t in "\\PC{0,400}") {
            let _ = parse_mountinfo(&t);
        }

        #[test]
        fn mountinfo_lines_with_escapes_never_panic(
            fields in proptest::collection::vec("[a-z0-9/\\\\,=:-]{0,12}", 0..12),
        ) {
            let line = format!("{} - cgroup cgroup rw,cpu\n", fields.join(" "));
            let _ = parse_mountinfo(&line);
        }

        #[test]
        fn proc_cgroup_never_panics(t in "\\PC{0,300}") {
            let _ = parse_proc_cgroup(&t);
        }
    }
}
