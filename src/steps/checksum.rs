//! Step checksums: SHA-256 of a step file with its line endings normalised (CRLF and a lone CR
//! become LF), so a checkout on Windows or a `core.autocrlf` change does not make every applied
//! step "changed". Labelled with the algorithm: `sha256:<64 lowercase hex>`. Reads files; writes
//! nothing. The encoding is persisted in every history table: changing it changes every step.

use super::Checksum;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::Path;

/// The label every checksum starts with.
pub const PREFIX: &str = "sha256:";

/// Feeds bytes to a hash with CRLF and lone CR turned into LF, across chunk boundaries.
#[derive(Default)]
pub(crate) struct Normalising {
    hash: Sha256,
    /// The last byte fed was a CR (already hashed as LF): an LF right after it is dropped.
    after_cr: bool,
}

impl Normalising {
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        if self.after_cr && !bytes.is_empty() {
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.after_cr = false;
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\r') {
            self.hash.update(&bytes[..i]);
            self.hash.update(b"\n");
            match bytes.get(i + 1) {
                Some(b'\n') => bytes = &bytes[i + 2..],
                Some(_) => bytes = &bytes[i + 1..],
                None => {
                    self.after_cr = true;
                    return;
                }
            }
        }
        self.hash.update(bytes);
    }

    pub(crate) fn finish(self) -> Checksum {
        // Written in place: `hex::encode` builds its String a char at a time, which showed in
        // discovery's profile (every step file is hashed at every start).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digest = self.hash.finalize();
        let mut out = String::with_capacity(PREFIX.len() + 2 * digest.len());
        out.push_str(PREFIX);
        for b in digest {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        Checksum(out)
    }
}

/// The checksum of a step's contents.
pub fn of_bytes(bytes: &[u8]) -> Checksum {
    let mut n = Normalising::default();
    n.update(bytes);
    n.finish()
}

/// The checksum of a step file, read in chunks (a script step may be large).
pub fn of_file(path: &Path) -> io::Result<Checksum> {
    let file = std::fs::File::open(path)?;
    Ok(of_reader(file, &mut [])?.0)
}

/// Hashes everything `r` yields, and copies the first bytes read into `head` (for the first-line
/// marker); returns the checksum and how much of `head` was filled. Reads through one buffer per
/// thread, reused from call to call (discovery hashes every file of DIR: a fresh buffer each
/// time cost more than hashing a small file), and allocates nothing else.
pub(crate) fn of_reader(mut r: impl Read, head: &mut [u8]) -> io::Result<(Checksum, usize)> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        // A re-entrant call (there is none) would get a buffer of its own.
        let mut own = Vec::new();
        let mut borrowed = cell.try_borrow_mut();
        let buf = match borrowed.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut own,
        };
        if buf.len() < CHUNK {
            buf.resize(CHUNK, 0);
        }
        let mut kept = 0;
        let mut n = Normalising::default();
        loop {
            let got = match r.read(&mut buf[..]) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &buf[..got];
            let take = (head.len() - kept).min(chunk.len());
            head[kept..kept + take].copy_from_slice(&chunk[..take]);
            kept += take;
            n.update(chunk);
        }
        Ok((n.finish(), kept))
    })
}

/// How much `of_reader` reads at a time.
const CHUNK: usize = 64 * 1024;

/// A short form for tables: the first 8 hex digits, without the label.
pub fn short(c: &Checksum) -> &str {
    let hex = c.0.strip_prefix(PREFIX).unwrap_or(&c.0);
    hex.get(..8).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The specification, written the obvious way.
    fn normalise(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\r' {
                out.push(b'\n');
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            } else {
                out.push(bytes[i]);
            }
            i += 1;
        }
        out
    }

    fn plain_sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn checksum_is_labelled_sha256_of_the_bytes() {
        // sha256("") is well known.
        assert_eq!(
            of_bytes(b"").0,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(of_bytes(b"select 1;\n").0, plain_sha(b"select 1;\n"));
    }

    #[test]
    fn crlf_and_lone_cr_hash_like_lf() {
        let lf = of_bytes(b"a\nb\n\nc");
        assert_eq!(of_bytes(b"a\r\nb\r\n\r\nc"), lf);
        assert_eq!(of_bytes(b"a\rb\r\rc"), lf);
        assert_eq!(of_bytes(b"a\r\nb\r\r\nc"), lf);
        // LF CR is two line ends, not one.
        assert_ne!(of_bytes(b"a\n\rb"), of_bytes(b"a\nb"));
        // Content still counts.
        assert_ne!(of_bytes(b"a\nb"), of_bytes(b"a\nc"));
    }

    #[test]
    fn a_crlf_split_across_reads_is_one_line_end() {
        let mut n = Normalising::default();
        n.update(b"a\r");
        n.update(b"");
        n.update(b"\nb\r");
        n.update(b"c\r");
        assert_eq!(n.finish(), of_bytes(b"a\nb\nc\n"));
    }

    #[test]
    fn of_file_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("V1__x.sql");
        std::fs::write(&path, b"create table t (id int);\r\n").unwrap();
        assert_eq!(
            of_file(&path).unwrap(),
            of_bytes(b"create table t (id int);\n")
        );
        assert!(of_file(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn short_is_eight_hex_digits() {
        let c = of_bytes(b"");
        assert_eq!(short(&c), "e3b0c442");
        assert_eq!(short(&Checksum("odd".into())), "odd");
    }

    proptest! {
        #[test]
        fn normalised_checksum_is_sha256_of_the_lf_text(
            bytes in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..300),
            cuts in prop::collection::vec(0usize..300, 0..6),
        ) {
            let want = plain_sha(&normalise(&bytes));
            prop_assert_eq!(&of_bytes(&bytes).0, &want);
            // Any split into reads gives the same digest.
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort();
            let mut n = Normalising::default();
            let mut at = 0;
            for c in cuts {
                n.update(&bytes[at..c]);
                at = c;
            }
            n.update(&bytes[at..]);
            prop_assert_eq!(&n.finish().0, &want);
        }

        #[test]
        fn line_ending_style_does_not_change_the_checksum(
            lines in prop::collection::vec("[^\r\n]{0,20}", 0..10),
            style in 0usize..3,
        ) {
            // One style per file: a CR line end followed by an empty LF line would read as CRLF.
            let lf = lines.join("\n");
            let mut mixed = String::new();
            for (i, l) in lines.iter().enumerate() {
                if i > 0 {
                    mixed.push_str(["\n", "\r\n", "\r"][style]);
                }
                mixed.push_str(l);
            }
            prop_assert_eq!(of_bytes(lf.as_bytes()), of_bytes(mixed.as_bytes()));
        }
    }
}
