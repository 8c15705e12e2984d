//! v1 `cpuacct` controller: cumulative CPU time (`cpuacct.usage`, nanoseconds). It has no knobs.

use crate::spec::int;

pub const USAGE: &str = "cpuacct.usage";

/// `cpuacct.usage` content → nanoseconds.
pub fn parse_usage_ns(text: &str) -> Result<u64, String> {
    int(text, "nanoseconds")
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_is_nanoseconds() {
        assert_eq!(super::parse_usage_ns("123456789\n"), Ok(123_456_789));
        assert!(super::parse_usage_ns("").is_err());
    }
}
