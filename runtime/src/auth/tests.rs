use std::io::Write as _;

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-secret";
const NOW: u64 = 1_800_000_000;

/// A file under a fresh temporary directory holding `contents`.
fn temp_file(contents: &[u8]) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("secret");
    let mut file = std::fs::File::create(&path).expect("create temp file");
    file.write_all(contents).expect("write temp file");
    (dir, path)
}

mod tempdir {
    use std::path::PathBuf;

    /// A directory removed on drop.
    pub(super) struct Dir(pub(super) PathBuf);

    impl Dir {
        pub(super) fn new() -> Dir {
            let mut bytes = [0u8; 8];
            getrandom::getrandom(&mut bytes).expect("OS randomness");
            let name = format!("execd-auth-test-{}", u64::from_le_bytes(bytes));
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir(&path).expect("create temp dir");
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn jwt_settings(path: PathBuf) -> AuthSettings {
    AuthSettings {
        mode: Some(AuthMode::SignedBearerToken),
        shared_secret_file: Some(path),
        issuer: Some("issuer".into()),
        audience: Some("execd".into()),
        ..AuthSettings::default()
    }
}

fn jwt_config() -> (tempdir::Dir, AuthConfig) {
    let (dir, path) = temp_file(SECRET);
    let config = AuthConfig::from_settings(&jwt_settings(path))
        .expect("valid settings")
        .expect("auth configured");
    (dir, config)
}

fn sign(claims: &Value) -> String {
    sign_with(Header::new(Algorithm::HS256), claims, SECRET)
}

fn sign_with(header: Header, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("encode jwt")
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn check(config: &AuthConfig, token: &str) -> Result<Principal, Unauthorized> {
    config.authenticate(Some(&bearer(token)), NOW)
}

fn good_claims() -> Value {
    json!({"exp": NOW + 300, "iss": "issuer", "aud": "execd", "sub": "alice"})
}

fn refusal(settings: &AuthSettings) -> String {
    match AuthConfig::from_settings(settings) {
        Ok(config) => panic!("settings accepted: {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn no_flags_means_no_authentication() {
    assert!(AuthConfig::from_settings(&AuthSettings::default())
        .expect("no flags is valid")
        .is_none());
}

#[test]
fn capability_token_from_a_file_is_trimmed_and_matched() {
    let (_dir, path) = temp_file(b"  s3cret-token \n");
    let settings = AuthSettings {
        mode: Some(AuthMode::CapabilityToken),
        token_file: Some(path),
        ..AuthSettings::default()
    };
    let config = AuthConfig::from_settings(&settings)
        .expect("valid")
        .expect("configured");
    assert_eq!(config.mode(), AuthMode::CapabilityToken);
    let principal = config
        .authenticate(Some(b"bearer   s3cret-token  "), NOW)
        .expect("token accepted");
    assert_eq!(principal.as_str(), "capability-token");
    assert_eq!(
        config.authenticate(Some(b"BEARER s3cret-token"), NOW),
        Ok(principal)
    );
    assert_eq!(
        config.authenticate(Some(b"Bearer s3cret-tokeN"), NOW),
        Err(Unauthorized::InvalidToken)
    );
}

#[test]
fn capability_token_digest_accepts_either_case() {
    let digest = hex(&sha256(b"tok"));
    for given in [digest.clone(), digest.to_uppercase(), format!(" {digest} ")] {
        let settings = AuthSettings {
            mode: Some(AuthMode::CapabilityToken),
            token_sha256: Some(given),
            ..AuthSettings::default()
        };
        let config = AuthConfig::from_settings(&settings)
            .expect("valid")
            .expect("configured");
        assert!(config.authenticate(Some(b"Bearer tok"), NOW).is_ok());
        assert_eq!(
            config.authenticate(Some(b"Bearer tok2"), NOW),
            Err(Unauthorized::InvalidToken)
        );
    }
}

#[test]
fn header_shapes_map_to_the_reference_causes() {
    let config = AuthConfig::capability_token("tok");
    let cases: [(Option<&[u8]>, Unauthorized); 7] = [
        (None, Unauthorized::MissingToken),
        (Some(b"Basic dG9rOg=="), Unauthorized::InvalidHeader),
        (Some(b"Bearer"), Unauthorized::InvalidHeader),
        (Some(b"Bearer    "), Unauthorized::InvalidHeader),
        (Some(b"tok"), Unauthorized::InvalidHeader),
        (Some(b""), Unauthorized::InvalidHeader),
        (Some(b"Bearer \xff\xfe"), Unauthorized::InvalidHeader),
    ];
    for (header, expected) in cases {
        assert_eq!(
            config.authenticate(header, NOW),
            Err(expected),
            "{header:?}"
        );
    }
}

#[test]
fn unauthorized_bodies_are_the_reference_texts() {
    let bodies = [
        (Unauthorized::MissingToken, "missing websocket bearer token"),
        (Unauthorized::InvalidHeader, "invalid authorization header"),
        (Unauthorized::InvalidToken, "invalid websocket bearer token"),
        (Unauthorized::InvalidJwt, "invalid websocket jwt"),
        (Unauthorized::ExpiredJwt, "expired websocket jwt"),
        (
            Unauthorized::JwtNotYetValid,
            "websocket jwt is not valid yet",
        ),
        (
            Unauthorized::IssuerMismatch,
            "websocket jwt issuer mismatch",
        ),
        (
            Unauthorized::AudienceMismatch,
            "websocket jwt audience mismatch",
        ),
    ];
    for (cause, body) in bodies {
        assert_eq!(cause.body(), body);
        assert_eq!(cause.to_string(), body);
    }
}

#[test]
fn good_jwt_yields_its_subject() {
    let (_dir, config) = jwt_config();
    let principal = check(&config, &sign(&good_claims())).expect("accepted");
    assert_eq!(principal.as_str(), "alice");
}

#[test]
fn jwt_without_subject_yields_a_token_hash() {
    let (_dir, config) = jwt_config();
    let token = sign(&json!({"exp": NOW + 1, "iss": "issuer", "aud": ["x", "execd"]}));
    let principal = check(&config, &token).expect("accepted");
    assert_eq!(
        principal.as_str(),
        format!("jwt-sha256:{}", hex(&sha256(token.as_bytes())))
    );
}

#[test]
fn jwt_time_claims_are_checked_with_the_skew() {
    let (_dir, config) = jwt_config();
    let at = |exp: u64, nbf: Option<u64>| {
        let mut claims = good_claims();
        claims["exp"] = json!(exp);
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        check(&config, &sign(&claims)).map(|_| ())
    };
    let skew = DEFAULT_MAX_CLOCK_SKEW_SECS;
    assert_eq!(at(NOW - skew, None), Ok(()));
    assert_eq!(at(NOW - skew - 1, None), Err(Unauthorized::ExpiredJwt));
    assert_eq!(at(NOW + 60, Some(NOW + skew)), Ok(()));
    assert_eq!(
        at(NOW + 600, Some(NOW + skew + 1)),
        Err(Unauthorized::JwtNotYetValid)
    );
    // exp is checked before nbf, as in the reference.
    assert_eq!(
        at(NOW - 3600, Some(NOW + 3600)),
        Err(Unauthorized::ExpiredJwt)
    );
}

#[test]
fn configured_skew_replaces_the_default() {
    let (_dir, path) = temp_file(SECRET);
    let settings = AuthSettings {
        mode: Some(AuthMode::SignedBearerToken),
        shared_secret_file: Some(path),
        max_clock_skew_secs: Some(0),
        ..AuthSettings::default()
    };
    let config = AuthConfig::from_settings(&settings)
        .expect("valid")
        .expect("configured");
    assert!(check(&config, &sign(&json!({"exp": NOW}))).is_ok());
    assert_eq!(
        check(&config, &sign(&json!({"exp": NOW - 1}))),
        Err(Unauthorized::ExpiredJwt)
    );
    // Without --ws-issuer/--ws-audience those claims are not looked at.
    assert!(check(
        &config,
        &sign(&json!({"exp": NOW, "iss": 5, "aud": "other"}))
    )
    .is_ok());
}

#[test]
fn jwt_identity_claims_must_match_when_configured() {
    let (_dir, config) = jwt_config();
    let with = |key: &str, value: Option<Value>| {
        let mut claims = good_claims();
        match value {
            Some(value) => claims[key] = value,
            None => {
                claims.as_object_mut().expect("object").remove(key);
            }
        }
        check(&config, &sign(&claims)).map(|_| ())
    };
    assert_eq!(
        with("iss", Some(json!("other"))),
        Err(Unauthorized::IssuerMismatch)
    );
    assert_eq!(with("iss", None), Err(Unauthorized::IssuerMismatch));
    assert_eq!(
        with("aud", Some(json!("other"))),
        Err(Unauthorized::AudienceMismatch)
    );
    assert_eq!(
        with("aud", Some(json!(["a", "b"]))),
        Err(Unauthorized::AudienceMismatch)
    );
    assert_eq!(with("aud", None), Err(Unauthorized::AudienceMismatch));
    assert_eq!(with("aud", Some(json!(["a", "execd"]))), Ok(()));
    // iss is checked before aud, and expiry before both, as in the reference.
    let claims = json!({"exp": NOW + 1, "iss": "other", "aud": "other"});
    assert_eq!(
        check(&config, &sign(&claims)),
        Err(Unauthorized::IssuerMismatch)
    );
    let claims = json!({"exp": NOW - 3600, "iss": "other", "aud": "execd"});
    assert_eq!(
        check(&config, &sign(&claims)),
        Err(Unauthorized::ExpiredJwt)
    );
}

#[test]
fn malformed_or_foreign_jwts_are_invalid() {
    let (_dir, config) = jwt_config();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good_claims())
    );
    let hs512 = sign_with(Header::new(Algorithm::HS512), &good_claims(), SECRET);
    let wrong_key = sign_with(
        Header::new(Algorithm::HS256),
        &good_claims(),
        b"another secret of at least thirty-two bytes",
    );
    let mut no_exp = good_claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    let mut string_exp = good_claims();
    string_exp["exp"] = json!((NOW + 300).to_string());
    let mut float_exp = good_claims();
    float_exp["exp"] = json!(NOW as f64 + 300.5);
    let tokens = [
        unsigned,
        hs512,
        wrong_key,
        sign(&no_exp),
        sign(&string_exp),
        sign(&float_exp),
        "not.a.jwt".to_owned(),
        "garbage".to_owned(),
    ];
    for token in tokens {
        assert_eq!(
            check(&config, &token),
            Err(Unauthorized::InvalidJwt),
            "{token}"
        );
    }
}

#[test]
fn startup_refusals_match_the_reference() {
    let (_dir, secret) = temp_file(SECRET);
    let (_dir2, short) = temp_file(b"  0123456789012345678901234567890  \n");
    let (_dir3, empty) = temp_file(b" \n\t");
    let missing = std::env::temp_dir().join("execd-auth-test-no-such-file");
    let cap = |f: &dyn Fn(&mut AuthSettings)| {
        let mut s = AuthSettings {
            mode: Some(AuthMode::CapabilityToken),
            ..AuthSettings::default()
        };
        f(&mut s);
        refusal(&s)
    };
    let jwt = |f: &dyn Fn(&mut AuthSettings)| {
        let mut s = AuthSettings {
            mode: Some(AuthMode::SignedBearerToken),
            ..AuthSettings::default()
        };
        f(&mut s);
        refusal(&s)
    };
    let none = |f: &dyn Fn(&mut AuthSettings)| {
        let mut s = AuthSettings::default();
        f(&mut s);
        refusal(&s)
    };
    let without_mode = "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`";
    assert_eq!(none(&|s| s.token_file = Some(secret.clone())), without_mode);
    assert_eq!(none(&|s| s.token_sha256 = Some("ab".into())), without_mode);
    assert_eq!(
        none(&|s| s.shared_secret_file = Some(secret.clone())),
        without_mode
    );
    assert_eq!(none(&|s| s.issuer = Some("i".into())), without_mode);
    assert_eq!(none(&|s| s.max_clock_skew_secs = Some(5)), without_mode);

    assert_eq!(
        cap(&|_| {}),
        "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set"
    );
    assert_eq!(
        cap(&|s| {
            s.token_file = Some(secret.clone());
            s.token_sha256 = Some("ab".into());
        }),
        "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive"
    );
    let jwt_flags = "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`";
    assert_eq!(cap(&|s| s.issuer = Some("i".into())), jwt_flags);
    assert_eq!(cap(&|s| s.audience = Some("a".into())), jwt_flags);
    assert_eq!(
        cap(&|s| {
            s.token_file = Some(secret.clone());
            s.shared_secret_file = Some(secret.clone());
        }),
        jwt_flags
    );
    assert_eq!(
        cap(&|s| s.token_file = Some(missing.clone())),
        format!(
            "failed to read websocket auth secret {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert_eq!(
        cap(&|s| s.token_file = Some(empty.clone())),
        format!(
            "websocket auth secret {} must not be empty",
            empty.display()
        )
    );
    let bad_digest = "--ws-token-sha256 must be a 64-character hex SHA-256 digest";
    assert_eq!(cap(&|s| s.token_sha256 = Some("abcd".into())), bad_digest);
    assert_eq!(cap(&|s| s.token_sha256 = Some(String::new())), bad_digest);
    assert_eq!(cap(&|s| s.token_sha256 = Some("zz".repeat(32))), bad_digest);
    assert_eq!(cap(&|s| s.token_sha256 = Some("é".repeat(32))), bad_digest);

    assert_eq!(
        jwt(&|_| {}),
        "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
    );
    assert_eq!(
        jwt(&|s| {
            s.shared_secret_file = Some(secret.clone());
            s.token_sha256 = Some("ab".into());
        }),
        "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`"
    );
    assert_eq!(
        jwt(&|s| s.shared_secret_file = Some(short.clone())),
        format!(
            "signed websocket bearer secret {} must be at least 32 bytes",
            short.display()
        )
    );
    assert_eq!(
        jwt(&|s| s.shared_secret_file = Some(empty.clone())),
        format!(
            "websocket auth secret {} must not be empty",
            empty.display()
        )
    );
}

#[test]
fn relative_paths_are_reported_absolute() {
    let settings = AuthSettings {
        mode: Some(AuthMode::CapabilityToken),
        token_file: Some(PathBuf::from("execd-no-such-token-file")),
        ..AuthSettings::default()
    };
    let cwd = std::env::current_dir().expect("cwd");
    assert!(refusal(&settings).starts_with(&format!(
        "failed to read websocket auth secret {}: ",
        cwd.join("execd-no-such-token-file").display()
    )));
}

#[test]
fn debug_output_holds_no_secret() {
    let config = AuthConfig::capability_token("super-secret-token");
    let shown = format!("{config:?}");
    assert!(!shown.contains("super"), "{shown}");
    let (_dir, config) = jwt_config();
    let shown = format!("{config:?}");
    assert!(shown.contains("SignedBearerToken"), "{shown}");
}
