//! Step 3: the client's body, checked once before anything is sent upstream.
//!
//! The body is forwarded byte for byte, so this module only proves it is one JSON object; it
//! checks the bytes are UTF-8 and walks the document without building it (values are skipped
//! with `IgnoredAny`), so the check allocates nothing but the keys' escapes.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::error::RouterError;

/// Accepts exactly one JSON object (surrounding whitespace allowed), or says what is wrong and
/// where.
pub fn check_json_object(body: &[u8]) -> Result<(), RouterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RouterError::InvalidJson {
            detail: "the body is empty".to_owned(),
        });
    }
    // JSON text is UTF-8 (RFC 8259); skipped string values are not validated by the walk below.
    let text = std::str::from_utf8(body).map_err(|e| RouterError::InvalidJson {
        detail: format!(
            "the body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let checked = de
        .deserialize_map(ObjectVisitor)
        .and_then(|()| de.end())
        .map_err(|e| RouterError::InvalidJson {
            detail: e.to_string(),
        });
    checked
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<de::IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects() {
        for ok in [
            &br#"{}"#[..],
            br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#,
            b" \n{\"a\":{\"b\":[1,2,{\"c\":null}]}}\n ",
            br#"{"k\u00e9y":"v\"q"}"#,
        ] {
            assert_eq!(
                check_json_object(ok),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
    }

    #[test]
    fn rejects_everything_else_with_a_position() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"   ", "empty"),
            (b"{", "EOF"),
            (b"{\"a\":1,}", "line 1"),
            (b"[]", "expected a JSON object"),
            (b"\"text\"", "expected a JSON object"),
            (b"42", "expected a JSON object"),
            (b"null", "expected a JSON object"),
            (b"{} {}", "trailing characters"),
            (b"model=auto", "line 1 column 1"),
            (b"{\"a\":\"\xff\"}", "not UTF-8 (invalid byte at offset 6)"),
        ];
        for (body, want) in cases {
            match check_json_object(body) {
                Err(RouterError::InvalidJson { detail }) => assert!(
                    detail.contains(want),
                    "{:?}: {detail}",
                    String::from_utf8_lossy(body)
                ),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
