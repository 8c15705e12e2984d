//! Pressure stall information (`cpu.pressure`, `memory.pressure`, `io.pressure`).

use crate::error::{CgroupError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PsiResource {
    Cpu,
    Memory,
    Io,
}

impl PsiResource {
    pub const ALL: [PsiResource; 3] = [PsiResource::Cpu, PsiResource::Memory, PsiResource::Io];
    pub fn file(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu.pressure",
            PsiResource::Memory => "memory.pressure",
            PsiResource::Io => "io.pressure",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PsiResource::Cpu => "cpu",
            PsiResource::Memory => "memory",
            PsiResource::Io => "io",
        }
    }
}

/// One `some` or `full` line: averages in percent, total stall in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some: PsiLine,
    /// Absent from the system-wide cpu file on kernels before 5.13.
    pub full: Option<PsiLine>,
}

fn parse_line(rest: &str) -> std::result::Result<PsiLine, String> {
    let mut l = PsiLine::default();
    let mut seen = 0;
    for kv in rest.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("'{kv}' is not key=value"))?;
        let bad = || format!("bad number in '{kv}'");
        let pct = || -> std::result::Result<f64, String> {
            let x: f64 = v.parse().map_err(|_| bad())?;
            if x.is_finite() && (0.0..=100.0).contains(&x) {
                Ok(x)
            } else {
                Err(format!("'{kv}' is not a percentage"))
            }
        };
        match k {
            "avg10" => l.avg10 = pct()?,
            "avg60" => l.avg60 = pct()?,
            "avg300" => l.avg300 = pct()?,
            "total" => l.total_us = v.parse().map_err(|_| bad())?,
            _ => continue,
        }
        seen += 1;
    }
    if seen < 4 {
        return Err("missing avg10/avg60/avg300/total".to_string());
    }
    Ok(l)
}

pub fn parse_psi(text: &str) -> std::result::Result<Psi, String> {
    let mut psi = Psi::default();
    let mut some = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("some ") {
            psi.some = parse_line(rest)?;
            some = true;
        } else if let Some(rest) = line.strip_prefix("full ") {
            psi.full = Some(parse_line(rest)?);
        }
    }
    if !some {
        return Err("no 'some' line".to_string());
    }
    Ok(psi)
}

pub fn read_psi(path: &Path) -> Result<Psi> {
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_psi(&text).map_err(|reason| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_pressure_file() {
        let t = "some avg10=1.53 avg60=0.14 avg300=0.50 total=3730009\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let p = parse_psi(t).unwrap();
        assert_eq!(p.some.avg10, 1.53);
        assert_eq!(p.some.avg300, 0.5);
        assert_eq!(p.some.total_us, 3_730_009);
        assert_eq!(p.full.map(|f| f.total_us), Some(0));
        let old = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert!(old.full.is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_psi("").is_err());
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=0").is_err());
        assert!(parse_psi("some avg10=1.0").is_err());
        assert!(parse_psi("some avg10=nan avg60=0 avg300=0 total=0").is_err());
        assert!(parse_psi("some avg10=-1 avg60=0 avg300=0 total=0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_errors_name_the_content(t in "\\PC{0,120}") {
            let _ = parse_psi(&t);
        }

        #[test]
        fn well_formed_lines_parse(a in 0.0f64..100.0, total in 0u64..u64::MAX) {
            let t = format!("some avg10={a:.2} avg60=0.00 avg300=0.00 total={total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
            let p = parse_psi(&t).unwrap();
            proptest::prop_assert_eq!(p.some.total_us, total);
        }
    }
}
