use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Bytes carried as a base64 string (standard alphabet, with padding), as in the Codex
/// exec-server.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    /// SIMD base64 into a JSON string emitted as is (a [`RawValue`]): the base64 alphabet
    /// holds nothing JSON escapes, and serde_json's escaper, which looks at every byte, was
    /// half the cost of a streamed `http/request` body or an `fs/readFile` result.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut json = String::with_capacity(self.0.len().div_ceil(3) * 4 + 2);
        json.push('"');
        base64_simd::STANDARD.encode_append(&self.0, &mut json);
        json.push('"');
        match RawValue::from_string(json) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_str(&base64_simd::STANDARD.encode_to_string(&self.0)),
        }
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    /// Decodes with the SIMD decoder (a 64 KiB `process/write` chunk is the largest cost of a
    /// stdin write); on failure the `base64` crate decodes again, to word the error with the
    /// offending symbol and offset. Both accept exactly the same strings (tested below).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        if let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(s.as_bytes()) {
            return Ok(Base64Bytes(bytes));
        }
        STANDARD
            .decode(s.as_bytes())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Base64Bytes(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_verdict(s: &[u8]) -> Result<(), TestCaseError> {
        let simd = base64_simd::STANDARD.decode_to_vec(s).ok();
        let reference = STANDARD.decode(s).ok();
        prop_assert_eq!(simd, reference, "{:?}", String::from_utf8_lossy(s));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The fast decoder accepts exactly what the `base64` crate accepts, with the same
        /// bytes (padding required, no whitespace, canonical trailing bits).
        #[test]
        fn simd_decoder_agrees_with_the_base64_crate(s in "[A-Za-z0-9+/=_\\- \n]{0,14}") {
            same_verdict(s.as_bytes())?;
        }

        /// The same on valid encodings with one byte replaced.
        #[test]
        fn simd_decoder_agrees_on_near_valid_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<usize>(),
            with in prop::sample::select(b"AQRSgw+/=_ \n".to_vec()),
        ) {
            let mut s = STANDARD.encode(&bytes).into_bytes();
            same_verdict(&s)?;
            if !s.is_empty() {
                let i = at % s.len();
                s[i] = with;
                same_verdict(&s)?;
            }
        }
    }

    #[test]
    fn serializes_as_a_json_string_through_text_and_value() {
        let bytes = Base64Bytes(vec![0, 1, 2, 250, 251, 252, 253, 254, 255]);
        let text =
            serde_json::to_string(&serde_json::json!({"data": bytes.clone()})).expect("serialize");
        assert_eq!(text, r#"{"data":"AAEC+vv8/f7/"}"#);
        let direct = serde_json::to_string(&bytes).expect("serialize");
        assert_eq!(direct, r#""AAEC+vv8/f7/""#);
        let value = serde_json::to_value(&bytes).expect("to_value");
        assert_eq!(value, serde_json::Value::String("AAEC+vv8/f7/".to_owned()));
        let back: Base64Bytes = serde_json::from_str(&direct).expect("deserialize");
        assert_eq!(back, bytes);
        assert_eq!(
            serde_json::to_string(&Base64Bytes(Vec::new())).expect("empty"),
            r#""""#
        );
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        for bad in ["QR==", "QUJ=", "Q===", "QQ=", "QQ"] {
            let err = serde_json::from_str::<Base64Bytes>(&format!("{bad:?}"))
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("invalid base64: "), "{err}");
        }
        let ok: Base64Bytes = serde_json::from_str(r#""QQ==""#).expect("valid");
        assert_eq!(ok.0, b"A");
    }
}
