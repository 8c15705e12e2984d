//! The text of per-device IO limit files: v2 `io.max` (`MAJ:MIN rbps=N wbps=max riops=N wiops=max`)
//! and v1 `blkio.throttle.{read,write}_{bps,iops}_device` (`MAJ:MIN N`, `0` lifting the limit). The
//! kernel takes one device per write(2) and lists only limited devices; restoring such a file means
//! writing the original lines back and lifting the devices that were not in it.

use tidal_model::{canonical_io_limits, DevNum, IoLimit};

pub const V2_MAX: &str = "io.max";
pub const V1_READ_BPS: &str = "blkio.throttle.read_bps_device";
pub const V1_WRITE_BPS: &str = "blkio.throttle.write_bps_device";
pub const V1_READ_IOPS: &str = "blkio.throttle.read_iops_device";
pub const V1_WRITE_IOPS: &str = "blkio.throttle.write_iops_device";
/// v1 files in the order of [`IoLimit`]'s fields.
pub const V1_FILES: [&str; 4] = [V1_READ_BPS, V1_WRITE_BPS, V1_READ_IOPS, V1_WRITE_IOPS];
/// blk-iocost's switch, in the v2 root only (`MAJ:MIN enable=1 ctrl=auto …`).
pub const IOCOST_QOS: &str = "io.cost.qos";

/// Files the kernel reads one device line per write(2).
pub fn line_per_write(file: &str) -> bool {
    file == V2_MAX || file == IOCOST_QOS || V1_FILES.contains(&file)
}

fn v2_value(v: &str) -> Result<Option<u64>, String> {
    if v == "max" {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("expected a number or 'max', got '{v}'"))
}

/// Parses `io.max`.
pub fn decode_v2(text: &str) -> Result<Vec<IoLimit>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let dev: DevNum = words.next().unwrap_or_default().parse()?;
        let mut l = IoLimit::none(dev);
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("expected key=value in '{line}'"))?;
            let v = v2_value(v)?;
            match k {
                "rbps" => l.rbps = v,
                "wbps" => l.wbps = v,
                "riops" => l.riops = v,
                "wiops" => l.wiops = v,
                o => return Err(format!("unknown io.max key '{o}'")),
            }
        }
        out.push(l);
    }
    Ok(canonical_io_limits(&out))
}

/// `io.max` lines: every device given, limits as written (`max` lifts).
pub fn encode_v2(v: &[IoLimit]) -> String {
    let mut s = String::new();
    for l in v {
        s.push_str(&l.to_string());
        s.push('\n');
    }
    s
}

fn field(l: &mut IoLimit, i: usize) -> &mut Option<u64> {
    match i {
        0 => &mut l.rbps,
        1 => &mut l.wbps,
        2 => &mut l.riops,
        _ => &mut l.wiops,
    }
}

/// Parses the four v1 throttle files, in [`V1_FILES`] order.
pub fn decode_v1(contents: &[String]) -> Result<Vec<IoLimit>, String> {
    if contents.len() != V1_FILES.len() {
        return Err(format!("expected {} files", V1_FILES.len()));
    }
    let mut m: std::collections::BTreeMap<DevNum, IoLimit> = Default::default();
    for (i, text) in contents.iter().enumerate() {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (d, n) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("expected 'MAJ:MIN N', got '{line}'"))?;
            let dev: DevNum = d.parse()?;
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("expected a number in '{line}'"))?;
            let l = m.entry(dev).or_insert_with(|| IoLimit::none(dev));
            *field(l, i) = (n > 0).then_some(n);
        }
    }
    Ok(canonical_io_limits(&m.into_values().collect::<Vec<_>>()))
}

/// The four v1 files' lines: every device given in each (`0` lifts).
pub fn encode_v1(v: &[IoLimit]) -> Vec<String> {
    (0..V1_FILES.len())
        .map(|i| {
            let mut s = String::new();
            for l in v {
                let mut c = *l;
                let n = field(&mut c, i).unwrap_or(0);
                s.push_str(&format!("{} {n}\n", l.dev));
            }
            s
        })
        .collect()
}

fn devices(text: &str) -> Vec<DevNum> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// What restore writes to a per-device file so it holds `original` again, given what it holds now:
/// the original lines, then a lifting line for every device the original did not name. `None` when
/// nothing needs writing.
pub fn restore_text(file: &str, current: &str, original: &str) -> Option<String> {
    let had = devices(original);
    let mut out: Vec<String> = original
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if file == IOCOST_QOS {
                // Only the switch goes back: tidal writes nothing else there.
                let enable = l
                    .split_whitespace()
                    .find(|w| w.starts_with("enable="))
                    .unwrap_or("enable=0");
                format!("{} {enable}", l.split_whitespace().next().unwrap_or(""))
            } else {
                l.to_string()
            }
        })
        .collect();
    for d in devices(current) {
        if had.contains(&d) {
            continue;
        }
        out.push(match file {
            V2_MAX => IoLimit::none(d).to_string(),
            IOCOST_QOS => format!("{d} enable=0"),
            _ => format!("{d} 0"),
        });
    }
    let same = if file == IOCOST_QOS {
        enabled(current) == enabled(&out.join("\n"))
    } else if file == V2_MAX {
        decode_v2(current)
            .ok()
            .is_some_and(|c| Some(c) == decode_v2(original).ok())
    } else {
        normalise(current) == normalise(original)
    };
    (!same).then(|| out.join("\n"))
}

fn normalise(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.ends_with(" 0"))
        .collect();
    v.sort();
    v
}

/// Devices on which `io.cost.qos` has blk-iocost enabled.
pub fn enabled(text: &str) -> Vec<DevNum> {
    let mut v: Vec<DevNum> = text
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "enable=1"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(a: u32, b: u32) -> DevNum {
        DevNum { major: a, minor: b }
    }

    #[test]
    fn kernel_io_max_text_decodes() {
        let v = decode_v2("8:16 rbps=2097152 wbps=max riops=max wiops=120\n254:0 rbps=max wbps=max riops=max wiops=max\n").unwrap();
        assert_eq!(
            v,
            vec![IoLimit {
                rbps: Some(2_097_152),
                wiops: Some(120),
                ..IoLimit::none(dev(8, 16))
            }]
        );
        assert_eq!(decode_v2("").unwrap(), vec![]);
        assert!(decode_v2("8:16 rbps=fast").is_err());
        assert!(decode_v2("8:16 speed=1").is_err());
        assert!(decode_v2("sda rbps=1").is_err());
    }

    #[test]
    fn v1_throttle_files_decode_into_one_limit_per_device() {
        let c = [
            "8:0 1048576\n254:0 0\n".to_string(),
            String::new(),
            "8:0 100\n".to_string(),
            "254:0 50\n".to_string(),
        ];
        assert_eq!(
            decode_v1(&c).unwrap(),
            vec![
                IoLimit {
                    rbps: Some(1 << 20),
                    riops: Some(100),
                    ..IoLimit::none(dev(8, 0))
                },
                IoLimit {
                    wiops: Some(50),
                    ..IoLimit::none(dev(254, 0))
                },
            ]
        );
        assert!(decode_v1(&c[..2]).is_err());
        assert!(decode_v1(&["8:0".into(), String::new(), String::new(), String::new()]).is_err());
    }

    #[test]
    fn restore_lifts_devices_the_original_did_not_limit() {
        assert_eq!(
            restore_text(V2_MAX, "8:0 rbps=1 wbps=max riops=max wiops=max\n", "").as_deref(),
            Some("8:0 rbps=max wbps=max riops=max wiops=max")
        );
        assert_eq!(
            restore_text(
                V2_MAX,
                "8:0 rbps=1 wbps=max riops=max wiops=max\n8:16 rbps=5 wbps=max riops=max wiops=max",
                "8:16 rbps=7 wbps=max riops=max wiops=max"
            )
            .as_deref(),
            Some("8:16 rbps=7 wbps=max riops=max wiops=max\n8:0 rbps=max wbps=max riops=max wiops=max")
        );
        assert_eq!(restore_text(V2_MAX, "", ""), None);
        assert_eq!(
            restore_text(V1_READ_BPS, "8:0 100\n", "").as_deref(),
            Some("8:0 0")
        );
        assert_eq!(restore_text(V1_READ_BPS, "8:0 100\n", "8:0 100"), None);
        assert_eq!(
            restore_text(IOCOST_QOS, "254:0 enable=1 ctrl=auto rpct=0.00\n", "").as_deref(),
            Some("254:0 enable=0")
        );
        assert_eq!(
            restore_text(
                IOCOST_QOS,
                "254:0 enable=1 ctrl=auto\n",
                "254:0 enable=0 ctrl=user rpct=95.00"
            )
            .as_deref(),
            Some("254:0 enable=0")
        );
        assert_eq!(
            restore_text(
                IOCOST_QOS,
                "254:0 enable=1 ctrl=auto\n",
                "254:0 enable=1 ctrl=auto"
            ),
            None
        );
        assert!(
            line_per_write(V2_MAX) && line_per_write(V1_WRITE_IOPS) && !line_per_write("io.weight")
        );
    }

    fn limit() -> impl Strategy<Value = IoLimit> {
        let o = || proptest::option::of(1u64..u64::MAX);
        ((0u32..300, 0u32..64), o(), o(), o(), o()).prop_map(
            |((a, b), rbps, wbps, riops, wiops)| IoLimit {
                dev: dev(a, b),
                rbps,
                wbps,
                riops,
                wiops,
            },
        )
    }

    proptest! {
        #[test]
        fn limits_round_trip_through_both_formats(v in proptest::collection::vec(limit(), 0..6)) {
            let want = canonical_io_limits(&v);
            let mut unique = v.clone();
            unique.sort_by_key(|l| l.dev);
            unique.dedup_by_key(|l| l.dev);
            let want_unique = canonical_io_limits(&unique);
            prop_assert_eq!(decode_v2(&encode_v2(&want)).unwrap(), want.clone());
            prop_assert_eq!(decode_v1(&encode_v1(&want)).unwrap(), want);
            prop_assert_eq!(decode_v2(&encode_v2(&unique)).unwrap(), want_unique);
        }

        #[test]
        fn io_text_never_panics(t in "\\PC{0,200}") {
            let _ = decode_v2(&t);
            let _ = decode_v1(&[t.clone(), t.clone(), String::new(), t.clone()]);
            let _ = restore_text(V2_MAX, &t, "");
            let _ = restore_text(IOCOST_QOS, &t, &t);
        }
    }
}
