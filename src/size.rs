//! Volume sizes: parsing what users type after `-o size=` and printing sizes back.
//!
//! Units are binary (`10G`, `10GB` and `10GiB` all mean 10 × 2^30 bytes), as in the original plugin
//! (reference/flocker-upstream.md §1.12), but unlike it a size that cannot be parsed, or that is below
//! Flocker's 64 MiB minimum, is an error instead of a silent 75 GiB default.

use std::fmt;

/// Flocker's smallest dataset (`maximum_size` schema minimum, flocker-upstream.md §5.3).
pub const MIN_SIZE: u64 = 64 * 1024 * 1024;

/// The original plugin's default: 75 GiB (flocker-upstream.md §1.2).
pub const DEFAULT_SIZE: u64 = 75 * 1024 * 1024 * 1024;

/// A dataset size in bytes, always a multiple of 1024 and at least [`MIN_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(u64);

/// Why a size string was refused; the text is shown to Docker users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number followed by an optional unit.
    #[error("'{0}' is not a size: use a number with an optional unit, e.g. 10G, 512MiB, 1.5T or 1073741824")]
    Unparsable(String),
    /// Parsed, but smaller than Flocker accepts.
    #[error("'{0}' is smaller than the 64 MiB minimum Flocker accepts")]
    TooSmall(String),
    /// Parsed, but does not fit in 64 bits.
    #[error("'{0}' is too large")]
    TooLarge(String),
}

impl Size {
    /// Parses `10G`, `10GiB`, `10gb`, `512MiB`, `1.5T`, `1073741824` (bytes) and rounds up to 1 KiB.
    pub fn parse(text: &str) -> Result<Size, SizeError> {
        let trimmed = text.trim();
        let unparsable = || SizeError::Unparsable(text.to_string());
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier = unit_multiplier(unit.trim()).ok_or_else(unparsable)?;
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unparsable());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 18 {
            return Err(unparsable());
        }
        let too_large = || SizeError::TooLarge(text.to_string());
        let whole: u128 = whole.parse().map_err(|_| too_large())?;
        let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let scale = 10u128.pow(fraction.len() as u32);
            let fraction: u128 = fraction.parse().map_err(|_| unparsable())?;
            // Round the fractional part up: "1.5K" must never shrink below what was asked for.
            bytes += (fraction * multiplier).div_ceil(scale);
        }
        let rounded = bytes.div_ceil(1024) * 1024;
        let bytes = u64::try_from(rounded).map_err(|_| too_large())?;
        if bytes < MIN_SIZE {
            return Err(SizeError::TooSmall(text.to_string()));
        }
        Ok(Size(bytes))
    }

    /// Wraps a byte count already known to be valid (e.g. read back from Flocker).
    pub const fn from_bytes(bytes: u64) -> Size {
        Size(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

fn unit_multiplier(unit: &str) -> Option<u128> {
    let lower = unit.to_ascii_lowercase();
    let prefix = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let power = match prefix {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    // "ib" alone ("10ib") is not a unit.
    if prefix.is_empty() && lower.ends_with("ib") {
        return None;
    }
    Some(1024u128.pow(power))
}

impl fmt::Display for Size {
    /// The largest binary unit that keeps the number whole, e.g. `10GiB`, `1536MiB`, `67109888B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("PiB", 1 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{}", self.0 / unit, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn binary_units_in_every_spelling() {
        for text in [
            "10G", "10g", "10GB", "10gb", "10Gb", "10GiB", "10gib", "10 GiB",
        ] {
            assert_eq!(Size::parse(text).unwrap().bytes(), 10 * GIB, "{text}");
        }
        assert_eq!(Size::parse("512MiB").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("1T").unwrap().bytes(), 1 << 40);
        assert_eq!(Size::parse("65536K").unwrap().bytes(), 64 << 20);
    }

    #[test]
    fn fractions_and_plain_bytes() {
        assert_eq!(Size::parse("1.5T").unwrap().bytes(), 3 << 39);
        assert_eq!(Size::parse("0.5G").unwrap().bytes(), 512 << 20);
        assert_eq!(Size::parse("1073741824").unwrap().bytes(), GIB);
        assert_eq!(Size::parse("1073741824B").unwrap().bytes(), GIB);
    }

    #[test]
    fn rounds_up_to_a_kibibyte() {
        assert_eq!(Size::parse("67108865").unwrap().bytes(), 67108864 + 1024);
        assert_eq!(Size::parse("0.1G").unwrap().bytes() % 1024, 0);
        assert!(Size::parse("0.1G").unwrap().bytes() >= GIB / 10);
    }

    #[test]
    fn refuses_what_the_original_plugin_silently_defaulted() {
        for text in [
            "", "lots", "foo10Gb", "10bar10", "10foogib", "10Gfoo", "GIB", "10ib", "1.2.3G", ".5G",
            "10G10",
        ] {
            assert!(
                matches!(Size::parse(text), Err(SizeError::Unparsable(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_below_the_flocker_minimum() {
        assert_eq!(Size::parse("1M"), Err(SizeError::TooSmall("1M".into())));
        assert_eq!(Size::parse("0"), Err(SizeError::TooSmall("0".into())));
        assert!(Size::parse("64M").is_ok());
    }

    #[test]
    fn refuses_overflow() {
        assert!(matches!(
            Size::parse("99999999999999999999P"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn error_text_names_the_input_and_the_fix() {
        let text = Size::parse("lots").unwrap_err().to_string();
        assert!(text.contains("'lots'") && text.contains("10G"), "{text}");
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(Size::from_bytes(10 * GIB).to_string(), "10GiB");
        assert_eq!(Size::from_bytes(1536 << 20).to_string(), "1536MiB");
        assert_eq!(Size::from_bytes(DEFAULT_SIZE).to_string(), "75GiB");
        assert_eq!(Size::from_bytes(67109888).to_string(), "65537KiB");
    }
}
