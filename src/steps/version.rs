//! Step versions: the text between `V` and `__` in a file name (or golang-migrate's leading
//! digits), parsed into numeric parts. Pure; never panics on any input.
//!
//! Rules (Flyway's, with golang-migrate's plain numbers as a special case):
//! - parts are runs of ASCII digits separated by `.` or `_` (`1_1` is version 1.1);
//! - parts compare numerically, part by part: `1.10` > `1.9`, `20240101120000` is one part;
//! - trailing zero parts do not count: `1`, `1.0` and `1_0_0` are one version;
//! - leading zeros do not count: `000001` is version 1;
//! - every part must fit a u64; anything else (empty parts, signs, letters) is an error.

use super::Version;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the version is empty")]
    Empty,
    #[error(
        "version {text:?} has an empty part (parts are numbers separated by `.` or `_`, e.g. 1.2 or 1_2)"
    )]
    EmptyPart { text: String },
    #[error(
        "version {text:?} has a part that is not a number: {part:?} (parts are digits separated by `.` or `_`)"
    )]
    NotANumber { text: String, part: String },
    #[error("version {text:?} has a part too large for a 64-bit number: {part} (at most {max})", max = u64::MAX)]
    TooLarge { text: String, part: String },
}

/// Parses a version as written in a file name; the text is kept as written for display.
pub fn parse(text: &str) -> Result<Version, VersionError> {
    if text.is_empty() {
        return Err(VersionError::Empty);
    }
    let mut parts = Vec::new();
    for part in text.split(['.', '_']) {
        if part.is_empty() {
            return Err(VersionError::EmptyPart {
                text: text.to_string(),
            });
        }
        // `u64::from_str` accepts a leading `+`; a version does not.
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VersionError::NotANumber {
                text: text.to_string(),
                part: part.to_string(),
            });
        }
        let n: u64 = part.parse().map_err(|_| VersionError::TooLarge {
            text: text.to_string(),
            part: part.to_string(),
        })?;
        parts.push(n);
    }
    while parts.last() == Some(&0) {
        parts.pop();
    }
    Ok(Version {
        parts,
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(text: &str) -> Version {
        match parse(text) {
            Ok(v) => v,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn parts_compare_numerically() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.999"));
        assert!(v("1.2.3") > v("1.2"));
        assert!(v("20240101120000") > v("20231231235959"));
        assert_eq!(v("20240101120000").parts, vec![20240101120000]);
    }

    #[test]
    fn trailing_zero_parts_do_not_count() {
        assert_eq!(v("1"), v("1.0"));
        assert_eq!(v("1"), v("1_0_0"));
        assert_eq!(v("1.0").parts, vec![1]);
        assert_eq!(v("0").parts, Vec::<u64>::new());
        assert!(v("0") < v("0.1"));
    }

    #[test]
    fn underscore_separates_like_a_dot_and_text_stays_as_written() {
        assert_eq!(v("1_1"), v("1.1"));
        assert_eq!(v("1_1").text, "1_1");
        assert_eq!(v("1_1").to_string(), "1_1");
        assert_eq!(v("1.2_3").parts, vec![1, 2, 3]);
    }

    #[test]
    fn leading_zeros_do_not_count() {
        assert_eq!(v("000001"), v("1"));
        assert_eq!(v("000001").text, "000001");
        assert_eq!(v("1.01"), v("1.1"));
    }

    #[test]
    fn bad_versions_are_errors_not_panics() {
        assert_eq!(parse(""), Err(VersionError::Empty));
        for bad in ["1.", ".1", "1..2", "1__2", "_", "."] {
            assert!(
                matches!(parse(bad), Err(VersionError::EmptyPart { .. })),
                "{bad}"
            );
        }
        for bad in ["a", "1.a", "+1", "-1", "1 2", "1e3", "١"] {
            assert!(
                matches!(parse(bad), Err(VersionError::NotANumber { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_part_too_large_for_u64_says_so() {
        assert_eq!(v("18446744073709551615").parts, vec![u64::MAX]);
        let err = parse("1.18446744073709551616").unwrap_err();
        assert!(matches!(err, VersionError::TooLarge { .. }));
        let msg = err.to_string();
        assert!(msg.contains("18446744073709551616"), "{msg}");
        assert!(msg.contains("too large"), "{msg}");
        // Leading zeros do not make a small number too large.
        assert_eq!(v("000000000000000000000000001").parts, vec![1]);
    }

    fn parts() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(prop_oneof![0u64..20, any::<u64>()], 1..5)
    }

    fn render(parts: &[u64], seps: &[bool], zeros: &[u8]) -> String {
        let mut s = String::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                s.push(if seps[i % seps.len()] { '.' } else { '_' });
            }
            for _ in 0..zeros[i % zeros.len()] {
                s.push('0');
            }
            s.push_str(&p.to_string());
        }
        s
    }

    fn trimmed(parts: &[u64]) -> Vec<u64> {
        let mut p = parts.to_vec();
        while p.last() == Some(&0) {
            p.pop();
        }
        p
    }

    proptest! {
        #[test]
        fn order_is_the_order_of_the_numbers(
            a in parts(), b in parts(),
            seps in prop::collection::vec(any::<bool>(), 1..4),
            zeros in prop::collection::vec(0u8..3, 1..4),
        ) {
            let va = parse(&render(&a, &seps, &zeros)).unwrap();
            let vb = parse(&render(&b, &seps, &zeros)).unwrap();
            prop_assert_eq!(va.cmp(&vb), trimmed(&a).cmp(&trimmed(&b)));
            prop_assert_eq!(va == vb, trimmed(&a) == trimmed(&b));
        }

        #[test]
        fn separators_and_leading_zeros_do_not_change_the_version(
            a in parts(),
            seps1 in prop::collection::vec(any::<bool>(), 1..4),
            seps2 in prop::collection::vec(any::<bool>(), 1..4),
            zeros in prop::collection::vec(0u8..3, 1..4),
            extra_zero_parts in 0usize..3,
        ) {
            let mut padded = a.clone();
            padded.extend(std::iter::repeat_n(0, extra_zero_parts));
            let x = parse(&render(&a, &seps1, &[0])).unwrap();
            let y = parse(&render(&padded, &seps2, &zeros)).unwrap();
            prop_assert_eq!(x, y);
        }

        #[test]
        fn any_text_parses_or_errs_without_panicking(text in ".{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn digit_like_text_never_panics(text in "[0-9._+]{0,40}") {
            if let Ok(v) = parse(&text) {
                prop_assert_eq!(v.text, text);
            }
        }
    }
}
