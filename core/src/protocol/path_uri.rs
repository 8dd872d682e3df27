use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A host path carried as a `file:` URI (`file:///abs/path`, percent-encoded), as in the Codex
/// exec-server.
///
/// Only valid `file:` URIs decode: a bare path, a relative reference or another scheme is a
/// decode error, so a request carrying one is answered with `-32602`. A URI with a host
/// (`file://server/share`, a UNC path) decodes but is not native to a Unix host, so
/// [`PathUri::to_host_path`] rejects it where it is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathUri {
    uri: String,
    /// Byte offset of the path part (after `file://host`).
    path_start: usize,
}

/// Why a string is not a usable `file:` URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathUriError {
    /// Not a `file:` URI (a bare path, a relative reference, another scheme).
    #[error("not a file: URI: {0:?}")]
    NotFileUri(String),
    /// A bad `%XX` escape, or an escape of a NUL byte.
    #[error("invalid percent-encoding in {0:?}")]
    BadEscape(String),
    /// The URI names another host (e.g. a UNC path), which this host cannot open.
    #[error("file: URI with host {host:?} is not a path on this host: {uri:?}")]
    ForeignHost {
        /// The authority in the URI.
        host: String,
        /// The URI.
        uri: String,
    },
}

/// Bytes a path keeps as they are in a PathUri: ASCII letters and digits and
/// `/-._~!$&'()*+,;=:@`; every other byte is percent-encoded.
const URI_KEEP: [bool; 256] = {
    let mut keep = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        keep[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"/-._~!$&'()*+,;=:@";
    let mut i = 0;
    while i < extra.len() {
        keep[extra[i] as usize] = true;
        i += 1;
    }
    keep
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

impl PathUri {
    /// Parses and validates `uri`.
    ///
    /// # Errors
    /// [`PathUriError::NotFileUri`] or [`PathUriError::BadEscape`].
    pub fn parse(uri: &str) -> Result<PathUri, PathUriError> {
        let not_file = || PathUriError::NotFileUri(uri.to_owned());
        let scheme_len = "file:".len();
        // Compare bytes: slicing the str at 5 would panic inside a multi-byte character.
        let scheme = uri.as_bytes().get(..scheme_len);
        if !scheme.is_some_and(|s| s.eq_ignore_ascii_case(b"file:")) {
            return Err(not_file());
        }
        let rest = &uri[scheme_len..];
        let path_start = if let Some(after) = rest.strip_prefix("//") {
            // file://authority/path; the path must be present and absolute.
            let slash = after.find('/').ok_or_else(not_file)?;
            scheme_len + 2 + slash
        } else if rest.starts_with('/') {
            // file:/abs/path (no authority), accepted by RFC 8089.
            scheme_len
        } else {
            return Err(not_file());
        };
        if uri.contains(['?', '#']) || uri.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(not_file());
        }
        let parsed = PathUri {
            uri: uri.to_owned(),
            path_start,
        };
        // Validate escapes now so that decode errors surface at decode time.
        percent_decode(parsed.path_part())
            .ok_or_else(|| PathUriError::BadEscape(uri.to_owned()))?;
        Ok(parsed)
    }

    /// Builds the URI of an absolute host path, percent-encoding what must be.
    ///
    /// # Errors
    /// [`PathUriError::NotFileUri`] when `path` is not absolute.
    pub fn from_host_path(path: &std::path::Path) -> Result<PathUri, PathUriError> {
        let bytes = path_bytes(path);
        if bytes.first() != Some(&b'/') {
            return Err(PathUriError::NotFileUri(path.display().to_string()));
        }
        let mut uri = String::with_capacity("file://".len() + bytes.len() + 8);
        uri.push_str("file://");
        // Runs of bytes kept as they are go in at once; the rest as `%XX` (a lookup table:
        // this is per entry of an `fs/walk`, 10,000 of them for a 100-directory tree).
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|&b| !URI_KEEP[usize::from(b)])
                .unwrap_or(rest.len());
            // Every kept byte is ASCII, so the run is valid UTF-8.
            uri.push_str(std::str::from_utf8(&rest[..run]).unwrap_or_default());
            let Some((&b, tail)) = rest[run..].split_first() else {
                break;
            };
            uri.push('%');
            uri.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            uri.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
            rest = tail;
        }
        Ok(PathUri {
            path_start: "file://".len(),
            uri,
        })
    }

    /// The URI text.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The decoded path on this (Unix) host.
    ///
    /// # Errors
    /// [`PathUriError::ForeignHost`] when the URI names a host other than `localhost`.
    pub fn to_host_path(&self) -> Result<PathBuf, PathUriError> {
        let host = self.host();
        if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
            return Err(PathUriError::ForeignHost {
                host: host.to_owned(),
                uri: self.uri.clone(),
            });
        }
        let bytes = percent_decode(self.path_part())
            .ok_or_else(|| PathUriError::BadEscape(self.uri.clone()))?;
        Ok(bytes_to_path(bytes))
    }

    fn host(&self) -> &str {
        let scheme_len = "file:".len();
        if self.path_start > scheme_len {
            &self.uri[scheme_len + 2..self.path_start]
        } else {
            ""
        }
    }

    fn path_part(&self) -> &str {
        &self.uri[self.path_start..]
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            let b = hi << 4 | lo;
            if b == 0 {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(unix)]
fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(unix)]
fn path_bytes(path: &std::path::Path) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(path.as_os_str().as_bytes())
}

#[cfg(not(unix))]
fn path_bytes(path: &std::path::Path) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(path.to_string_lossy().as_bytes().to_vec())
}

impl fmt::Display for PathUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl Serialize for PathUri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for PathUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        PathUri::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn decodes_file_uris() {
        let cases = [
            ("file:///tmp/a%20b", "/tmp/a b"),
            ("file:/tmp", "/tmp"),
            ("file://localhost/etc", "/etc"),
            ("FILE:///", "/"),
            ("file:///%C3%A9", "/é"),
        ];
        for (uri, path) in cases {
            let parsed = PathUri::parse(uri).expect(uri);
            assert_eq!(parsed.to_host_path().expect(uri), Path::new(path), "{uri}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "/tmp",
            "tmp",
            "",
            "file:",
            "file:tmp",
            "file://",
            "http:///tmp",
            "file:///a%2",
            "file:///a%zz",
            "file:///a%00b",
            "file:///a?b",
            "/%a/é",
            "fileé",
            "é",
        ] {
            assert!(PathUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn foreign_hosts_decode_but_are_not_host_paths() {
        let unc = PathUri::parse("file://server/share/x").expect("decodes");
        assert!(matches!(
            unc.to_host_path(),
            Err(PathUriError::ForeignHost { .. })
        ));
    }

    #[test]
    fn host_paths_round_trip() {
        for p in ["/", "/tmp/a b", "/x/%y", "/é/ü"] {
            let uri = PathUri::from_host_path(Path::new(p)).expect("absolute");
            let again = PathUri::parse(uri.as_str()).expect("re-parses");
            assert_eq!(again.to_host_path().expect("local"), Path::new(p));
        }
        assert!(PathUri::from_host_path(Path::new("rel")).is_err());
        assert_eq!(
            PathUri::from_host_path(Path::new("/a b/%/é/x~y@z"))
                .expect("absolute")
                .as_str(),
            "file:///a%20b/%25/%C3%A9/x~y@z"
        );
    }

    proptest::proptest! {
        /// Any absolute path of any bytes round-trips, and is encoded byte by byte: kept
        /// bytes as they are, every other one as `%XX`.
        #[test]
        fn any_host_path_round_trips_and_encodes_byte_by_byte(
            tail in proptest::collection::vec(1u8.., 0..40),
        ) {
            use std::os::unix::ffi::OsStrExt;
            let bytes = [&b"/"[..], &tail].concat();
            let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
            let uri = PathUri::from_host_path(path).expect("absolute");
            let mut want = String::from("file://");
            for &b in &bytes {
                if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
                    want.push(char::from(b));
                } else {
                    want.push_str(&format!("%{b:02X}"));
                }
            }
            proptest::prop_assert_eq!(uri.as_str(), want.as_str());
            let again = PathUri::parse(uri.as_str()).expect("re-parses");
            proptest::prop_assert_eq!(again.to_host_path().expect("local"), path);
        }
    }
}
