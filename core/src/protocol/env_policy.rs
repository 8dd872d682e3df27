use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `process/start` `envPolicy`: how the child's environment is built from the server's own.
///
/// Shape: `{inherit, ignoreDefaultExcludes, exclude: [glob], set: {name: value},
/// includeOnly: [glob]}`. All five fields are required, as in the Codex exec-server: a missing
/// one fails to decode with serde's "missing field `set`" (→ `-32602`), a bad `inherit` with
/// "unknown variant `x`, expected one of `core`, `all`, `none`". Unknown keys are ignored.
/// `null` or absent means no policy: see [`build_child_env`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    /// Which server variables to start from (step 1).
    pub inherit: Inherit,
    /// Skip the default excludes `*KEY*`, `*SECRET*`, `*TOKEN*` (step 2).
    pub ignore_default_excludes: bool,
    /// Globs of names to drop (step 3).
    pub exclude: Vec<String>,
    /// Variables to insert (step 4).
    pub set: BTreeMap<String, String>,
    /// When non-empty, globs of the only names kept (step 5); `env` is not filtered.
    pub include_only: Vec<String>,
}

/// `envPolicy.inherit`. Declared in the reference's order, so serde's "expected one of `core`,
/// `all`, `none`" matches it word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Inherit {
    /// Only [`CORE_VARS`].
    Core,
    /// Every server variable.
    All,
    /// Nothing.
    None,
}

/// The variables `inherit: "core"` keeps (Unix list of the Codex exec-server).
pub const CORE_VARS: &[&str] = &[
    "PATH", "SHELL", "TMPDIR", "TEMP", "TMP", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME",
    "USER",
];

/// Globs dropped unless `ignoreDefaultExcludes` (step 2).
pub const DEFAULT_EXCLUDES: &[&str] = &["*KEY*", "*SECRET*", "*TOKEN*"];

/// Names never passed to a child, matched case-insensitively: removed from the inherited
/// variables, from `set`, from `env`, and also when there is no policy (matches the Codex
/// exec-server, which keeps its own credentials and control switches from children).
pub const ALWAYS_STRIPPED: &[&str] = &[
    "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
    "NODE_REPL_AUTH_TOKEN",
    "OPENAI_FEDERATION_RULE_ID",
    "OPENAI_IDENTITY_TOKEN_FILE",
    "OPENAI_WORKLOAD_IDENTITY_CONTEXT",
    "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE",
];

/// Builds a child's environment the way the Codex exec-server does.
///
/// Without a policy the child gets exactly `env` (nothing inherited, not even `PATH`). With
/// one, starting from `server_env`:
/// 1. `all`: every variable; `none`: nothing; `core`: only [`CORE_VARS`];
/// 2. unless `ignoreDefaultExcludes`, drop names matching [`DEFAULT_EXCLUDES`];
/// 3. drop names matching any `exclude`;
/// 4. insert `set`;
/// 5. if `includeOnly` is non-empty, keep only names matching one of its globs;
/// 6. overlay `env` (wins over `set`, not filtered by `includeOnly`).
///
/// In every case names in [`ALWAYS_STRIPPED`] are removed last. Name matching is
/// case-insensitive and patterns are globs ([`glob_matches`]); keys keep their case. The runtime
/// passes `std::env::vars_os()` restricted to UTF-8 pairs (the wire cannot carry others).
pub fn build_child_env<I, K, V>(
    server_env: I,
    policy: Option<&EnvPolicy>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let mut out = BTreeMap::new();
    if let Some(policy) = policy {
        for (name, value) in server_env {
            let name = name.into();
            let inherited = match policy.inherit {
                Inherit::All => true,
                Inherit::None => false,
                Inherit::Core => CORE_VARS.iter().any(|c| c.eq_ignore_ascii_case(&name)),
            };
            let default_excluded =
                !policy.ignore_default_excludes && matches_any(DEFAULT_EXCLUDES, &name);
            if inherited && !default_excluded && !matches_any(&policy.exclude, &name) {
                out.insert(name, value.into());
            }
        }
        out.extend(policy.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !policy.include_only.is_empty() {
            out.retain(|name, _| matches_any(&policy.include_only, name));
        }
    }
    out.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.retain(|name, _| !ALWAYS_STRIPPED.iter().any(|s| s.eq_ignore_ascii_case(name)));
    out
}

/// Whether `name` matches the glob `pattern`, case-insensitively: `*` matches any run of
/// characters (also none), `?` exactly one, everything else itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matcher with one backtrack point (the last `*`): linear in practice, no
    // recursion, so a hostile pattern cannot blow the stack.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn matches_any<S: AsRef<str>>(patterns: &[S], name: &str) -> bool {
    patterns.iter().any(|p| glob_matches(p.as_ref(), name))
}

/// Why a variable cannot be put in a child's environment.
///
/// execd refuses these before spawning; the core answers `-32602` with the message. The
/// reference differs: it accepts an empty name or one containing `=` and fails a NUL byte at
/// spawn with `-32603` "data provided contains a nul byte".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvNameError {
    /// An empty name.
    #[error("invalid environment variable name: empty")]
    Empty,
    /// A name containing `=` (it would end the name early).
    #[error("invalid environment variable name {0:?}: contains '='")]
    ContainsEquals(String),
    /// A name containing a NUL byte.
    #[error("invalid environment variable name {0:?}: contains a NUL byte")]
    NulInName(String),
    /// A value containing a NUL byte (it would end the value early).
    #[error("invalid value of environment variable {0:?}: contains a NUL byte")]
    NulInValue(String),
}

/// Checks every name and value of a child environment (the result of [`build_child_env`], or
/// `env` and `set` before it).
///
/// # Errors
/// The first offending variable, in name order.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), EnvNameError> {
    for (name, value) in env {
        if name.is_empty() {
            return Err(EnvNameError::Empty);
        }
        if name.contains('\0') {
            return Err(EnvNameError::NulInName(name.clone()));
        }
        if name.contains('=') {
            return Err(EnvNameError::ContainsEquals(name.clone()));
        }
        if value.contains('\0') {
            return Err(EnvNameError::NulInValue(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn policy(inherit: Inherit) -> EnvPolicy {
        EnvPolicy {
            inherit,
            ignore_default_excludes: false,
            exclude: vec![],
            set: BTreeMap::new(),
            include_only: vec![],
        }
    }

    const SERVER: &[(&str, &str)] = &[
        ("PATH", "/bin"),
        ("HOME", "/root"),
        ("lang", "C"),
        ("EDITOR", "vi"),
        ("API_KEY", "k"),
        ("my_secret_x", "s"),
        ("GH_Token", "t"),
        ("NODE_REPL_AUTH_TOKEN", "n"),
        ("openai_federation_rule_id", "r"),
    ];

    fn build(p: Option<&EnvPolicy>, env: &[(&str, &str)]) -> BTreeMap<String, String> {
        build_child_env(SERVER.iter().copied(), p, &map(env))
    }

    fn names(m: &BTreeMap<String, String>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn no_policy_gives_exactly_env_minus_always_stripped() {
        let out = build(None, &[("A", "1"), ("node_repl_auth_token", "x")]);
        assert_eq!(out, map(&[("A", "1")]));
    }

    #[test]
    fn step1_inherit_variants() {
        let all = build(Some(&policy(Inherit::All)), &[]);
        assert_eq!(names(&all), ["EDITOR", "HOME", "PATH", "lang"]);
        let core = build(Some(&policy(Inherit::Core)), &[]);
        assert_eq!(
            names(&core),
            ["HOME", "PATH", "lang"],
            "core match is case-insensitive"
        );
        assert!(build(Some(&policy(Inherit::None)), &[]).is_empty());
    }

    #[test]
    fn step2_default_excludes_case_insensitive_unless_ignored() {
        let mut p = policy(Inherit::All);
        p.ignore_default_excludes = true;
        let out = build(Some(&p), &[]);
        assert_eq!(
            names(&out),
            [
                "API_KEY",
                "EDITOR",
                "GH_Token",
                "HOME",
                "PATH",
                "lang",
                "my_secret_x"
            ],
            "always-stripped names still go"
        );
    }

    #[test]
    fn step3_exclude_globs() {
        let mut p = policy(Inherit::All);
        p.exclude = vec!["pat?".into(), "ED*".into()];
        assert_eq!(names(&build(Some(&p), &[])), ["HOME", "lang"]);
    }

    #[test]
    fn step4_set_is_inserted_even_if_it_matches_excludes() {
        let mut p = policy(Inherit::None);
        p.set = map(&[
            ("MY_TOKEN", "v"),
            ("Codex_Exec_Server_Exit_On_Stdin_Close", "1"),
        ]);
        p.exclude = vec!["*".into()];
        assert_eq!(build(Some(&p), &[]), map(&[("MY_TOKEN", "v")]));
    }

    #[test]
    fn step5_include_only_filters_inherited_and_set_not_env() {
        let mut p = policy(Inherit::All);
        p.set = map(&[("KEEP_ME", "1"), ("DROP_ME", "2")]);
        p.include_only = vec!["path".into(), "keep_*".into()];
        let out = build(Some(&p), &[("TERM", "dumb")]);
        assert_eq!(
            out,
            map(&[("KEEP_ME", "1"), ("PATH", "/bin"), ("TERM", "dumb")])
        );
    }

    #[test]
    fn step6_env_overlays_set_and_inherited() {
        let mut p = policy(Inherit::All);
        p.set = map(&[("X", "set")]);
        let out = build(Some(&p), &[("X", "env"), ("PATH", "/env/bin")]);
        assert_eq!(out["X"], "env");
        assert_eq!(out["PATH"], "/env/bin");
    }

    #[test]
    fn always_stripped_are_removed_from_env() {
        let p = policy(Inherit::None);
        let out = build(Some(&p), &[("OPENAI_IDENTITY_TOKEN_FILE", "f"), ("Y", "1")]);
        assert_eq!(out, map(&[("Y", "1")]));
    }

    #[test]
    fn globs() {
        let cases = [
            ("*KEY*", "api_key_x", true),
            ("*KEY*", "KEY", true),
            ("*KEY*", "KE", false),
            ("a?c", "ABC", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("**a", "bba", true),
            ("é*", "É1", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_matches(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn decode_errors_match_the_reference() {
        let err = |v: serde_json::Value| {
            serde_json::from_value::<EnvPolicy>(v)
                .expect_err("bad")
                .to_string()
        };
        let missing_set = err(
            serde_json::json!({"inherit":"all","ignoreDefaultExcludes":true,
            "exclude":[],"includeOnly":[]}),
        );
        assert_eq!(missing_set, "missing field `set`");
        let bad_inherit = err(serde_json::json!({"inherit":"x"}));
        assert_eq!(
            bad_inherit,
            "unknown variant `x`, expected one of `core`, `all`, `none`"
        );
        let codex: EnvPolicy = serde_json::from_value(serde_json::json!({"inherit":"all",
            "ignoreDefaultExcludes":true,"exclude":["CODEX_VERSION"],"set":{"A":"1"},
            "includeOnly":[],"extra":1}))
        .expect("Codex's shape decodes, unknown keys ignored");
        assert_eq!(codex.inherit, Inherit::All);
    }

    #[test]
    fn env_validation() {
        assert_eq!(validate_env(&map(&[("A", "1"), ("b_2", "")])), Ok(()));
        assert_eq!(validate_env(&map(&[("", "1")])), Err(EnvNameError::Empty));
        assert!(matches!(
            validate_env(&map(&[("A=B", "1")])),
            Err(EnvNameError::ContainsEquals(_))
        ));
        assert!(matches!(
            validate_env(&map(&[("A\0", "1")])),
            Err(EnvNameError::NulInName(_))
        ));
        assert!(matches!(
            validate_env(&map(&[("A", "x\0")])),
            Err(EnvNameError::NulInValue(_))
        ));
    }
}
