//! The sandbox-denial classifier: was a failed command probably blocked by its sandbox?
//!
//! The rules are the Codex exec-server's, applied once per sandboxed process after its exit
//! and the output grace period:
//! 1. exit code 0 → not denied;
//! 2. any of the [`DENIAL_MARKERS`] (case-insensitive) in stdout, stderr or the combined output
//!    → denied;
//! 3. otherwise exit code 2, 126 or 127 → not denied (usage errors, not executable, not found);
//! 4. exit code 128 + SIGSYS (159, a seccomp kill on Linux) → denied.
//!
//! Anything else is not denied. Unsandboxed processes are never classified.

/// Phrases that mark a denial when found in the output (matched case-insensitively).
pub const DENIAL_MARKERS: &[&str] = &[
    "operation not permitted",
    "permission denied",
    "read-only file system",
    "seccomp",
    "sandbox",
    "landlock",
    "failed to write file",
];

/// Exit code of a process killed by SIGSYS on Linux (128 + 31).
pub const SIGSYS_EXIT_CODE: i32 = 128 + 31;

/// Classifies one exit. `output` yields the retained output chunks in seq order (any mix of
/// streams); markers split across chunk boundaries are found.
pub fn is_sandbox_denied<'a>(exit_code: i32, output: impl IntoIterator<Item = &'a [u8]>) -> bool {
    if exit_code == 0 {
        return false;
    }
    if contains_marker(output) {
        return true;
    }
    if matches!(exit_code, 2 | 126 | 127) {
        return false;
    }
    exit_code == SIGSYS_EXIT_CODE
}

/// Whether any marker occurs in the concatenation of `chunks`, ignoring ASCII case.
fn contains_marker<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let longest = DENIAL_MARKERS.iter().map(|m| m.len()).max().unwrap_or(0);
    // A sliding window: the tail of the previous chunks (enough to complete a marker) plus
    // the current chunk, lower-cased.
    let mut window: Vec<u8> = Vec::new();
    for chunk in chunks {
        let keep_from = window.len().saturating_sub(longest - 1);
        window.drain(..keep_from);
        window.extend(chunk.iter().map(u8::to_ascii_lowercase));
        if DENIAL_MARKERS
            .iter()
            .any(|m| contains(&window, m.as_bytes()))
        {
            return true;
        }
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(code: i32, out: &str) -> bool {
        is_sandbox_denied(code, [out.as_bytes()])
    }

    #[test]
    fn table() {
        let cases: &[(i32, &str, bool)] = &[
            (0, "Permission denied", false),
            (1, "", false),
            (1, "touch: cannot touch 'x': Permission denied", true),
            (1, "OPERATION NOT PERMITTED", true),
            (1, "mkdir: Read-only file system", true),
            (1, "killed by seccomp", true),
            (1, "blocked by the sandbox", true),
            (1, "landlock refused", true),
            (1, "error: failed to write file /x", true),
            (2, "usage: foo", false),
            (2, "permission denied", true),
            (126, "not executable", false),
            (127, "command not found", false),
            (127, "sh: 1: x: Permission denied", true),
            (159, "", true),
            (137, "", false),
            (1, "permission granted", false),
        ];
        for (code, out, want) in cases {
            assert_eq!(denied(*code, out), *want, "code {code} output {out:?}");
        }
    }

    #[test]
    fn finds_markers_split_across_chunks() {
        let chunks: [&[u8]; 3] = [b"cannot open: Permis", b"sion de", b"nied\n"];
        assert!(is_sandbox_denied(1, chunks));
        let chunks: [&[u8]; 2] = [b"permission", b" granted"];
        assert!(!is_sandbox_denied(1, chunks));
    }
}
