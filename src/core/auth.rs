//! Step 4: who is calling. Clients present a gateway key (`Authorization: Bearer ...`); the
//! router keeps only the keys' SHA-256 hashes (in a Worker secret) and compares in constant
//! time. Provider keys are never accepted from clients.

use sha2::{Digest, Sha256};

use super::caller::Caller;
use super::config::{decode_hex32, GatewayAuth, EXAMPLE_HASHES};
use super::error::RouterError;

/// Checks the client's `Authorization` header against the configured gateway keys.
pub fn check(auth: &GatewayAuth, authorization: Option<&str>) -> Result<(), RouterError> {
    matched(auth, authorization).map(|_| ())
}

/// Who presents a gateway key: the key by its id (the first 12 hex digits of its SHA-256), or
/// anyone when auth is off.
pub fn caller(auth: &GatewayAuth, authorization: Option<&str>) -> Result<Caller, RouterError> {
    Ok(match matched(auth, authorization)? {
        Some(digest) => Caller::Key {
            id: hex(&digest[..6]),
        },
        None => Caller::Open,
    })
}

/// The digest of the key that matched (`None` when auth is off).
fn matched(
    auth: &GatewayAuth,
    authorization: Option<&str>,
) -> Result<Option<[u8; 32]>, RouterError> {
    let (secret, hashes) = match auth {
        GatewayAuth::Disabled => return Ok(None),
        GatewayAuth::Broken { error } => {
            return Err(RouterError::InvalidConfig {
                path: error.path.clone(),
                detail: error.detail.clone(),
            })
        }
        GatewayAuth::Keys { secret, hashes } => (secret, hashes),
    };
    if hashes.is_empty() {
        return Err(RouterError::MissingSecret {
            names: vec![secret.clone()],
        });
    }
    let key = authorization
        .and_then(bearer)
        .ok_or(RouterError::Unauthorized { presented: false })?;
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    // Every hash is compared in full, whatever matches, so timing says nothing about which.
    let matched = hashes
        .iter()
        .fold(false, |acc, h| acc | constant_time_eq(h, &digest));
    if matched {
        Ok(Some(digest))
    } else {
        Err(RouterError::Unauthorized { presented: true })
    }
}

/// Whether `authorization` carries a key whose SHA-256 is among `hashes` (hex, separated by
/// commas or whitespace; unreadable entries are skipped): the admin check for when the
/// configuration itself could not be read.
pub fn admits(hashes: &str, authorization: Option<&str>) -> bool {
    let hashes: Vec<[u8; 32]> = hashes
        .split(|c: char| c == ',' || c.is_whitespace())
        // The published example hashes open nothing here (local development is let in before
        // this check is made).
        .filter(|h| !EXAMPLE_HASHES.iter().any(|e| e.eq_ignore_ascii_case(h)))
        .filter_map(decode_hex32)
        .collect();
    !hashes.is_empty()
        && check(
            &GatewayAuth::Keys {
                secret: String::new(),
                hashes,
            },
            authorization,
        )
        .is_ok()
}

/// The token of `Bearer <token>` (scheme case-insensitive), if non-empty.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The hex SHA-256 of a gateway key, as the operator stores it.
pub fn hash_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> GatewayAuth {
        GatewayAuth::Keys {
            secret: "GATEWAY_KEY_HASHES".into(),
            hashes: list
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        }
    }

    #[test]
    fn known_sha256() {
        assert_eq!(
            hash_hex("1"),
            "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
        );
    }

    #[test]
    fn auth_table() {
        let auth = keys(&["sk-gw-one", "sk-gw-two"]);
        let cases: &[(Option<&str>, Result<(), RouterError>)] = &[
            (Some("Bearer sk-gw-one"), Ok(())),
            (Some("bearer sk-gw-two"), Ok(())),
            (Some("  Bearer   sk-gw-two  "), Ok(())),
            (None, Err(RouterError::Unauthorized { presented: false })),
            (
                Some(""),
                Err(RouterError::Unauthorized { presented: false }),
            ),
            (
                Some("Bearer "),
                Err(RouterError::Unauthorized { presented: false }),
            ),
            (
                Some("sk-gw-one"),
                Err(RouterError::Unauthorized { presented: false }),
            ),
            (
                Some("Basic sk-gw-one"),
                Err(RouterError::Unauthorized { presented: false }),
            ),
            (
                Some("Bearer sk-gw-three"),
                Err(RouterError::Unauthorized { presented: true }),
            ),
            (Some("Bearer sk-gw-one "), Ok(())),
            (
                Some("Bearer SK-GW-ONE"),
                Err(RouterError::Unauthorized { presented: true }),
            ),
        ];
        for (header, want) in cases {
            assert_eq!(&check(&auth, *header), want, "{header:?}");
        }
    }

    #[test]
    fn admits_reads_hashes_as_the_secret_holds_them() {
        let hashes = format!("junk, {}\n{}", hash_hex("sk-a"), hash_hex("sk-b"));
        assert!(admits(&hashes, Some("Bearer sk-a")));
        assert!(admits(&hashes, Some("Bearer sk-b")));
        assert!(!admits(&hashes, Some("Bearer sk-c")));
        assert!(!admits(&hashes, None));
        assert!(!admits("", Some("Bearer sk-a")));
        // The example admin hash from .dev.vars.example is of a published key.
        assert!(!admits(
            &hash_hex("sk-local-admin"),
            Some("Bearer sk-local-admin")
        ));
    }

    #[test]
    fn disabled_lets_everyone_in() {
        assert_eq!(check(&GatewayAuth::Disabled, None), Ok(()));
    }

    #[test]
    fn no_hashes_names_the_secret() {
        let err = check(&keys(&[]), Some("Bearer x")).unwrap_err();
        assert_eq!(
            err,
            RouterError::MissingSecret {
                names: vec!["GATEWAY_KEY_HASHES".into()]
            }
        );
    }
}
