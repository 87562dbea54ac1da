//! Entry signatures, as Nix's binary caches sign store paths: an ed25519 key pair per publisher, named, the public
//! half written `name:base64` (32 bytes) into the project config's `trusted_keys`, the secret half kept in a file
//! of its own (`name:base64` of its 32-byte seed) that never enters a manifest, a log or a report.
//!
//! A signature covers the message `mgat-entry-v1;<kind>;<key>;<sha256 of the manifest's bytes>`: the kind and key
//! an entry is published under and, through the manifest, every output's SHA-256 and the key's inputs. It proves
//! that whoever holds the secret key published exactly these outputs for exactly this key. It does not prove that
//! they were computed honestly or correctly, on the device the manifest names, or by the code the key's fingerprint
//! names: `mgat audit` is the check for that.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A key's name: what `trusted_keys` and signatures call it.
fn check_name(name: &str) -> Result<(), KeyError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    match valid {
        true => Ok(()),
        false => Err(KeyError::Name(name.to_string())),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "key name `{0}`: expected 1 to 64 letters, digits, `.`, `-` or `_` (for example `lab-cluster-1`)"
    )]
    Name(String),
    #[error("`{0}`: expected NAME:BASE64 (as `mgat cache keygen` prints it)")]
    Format(String),
    #[error("`{text}`: {reason}")]
    Bytes { text: String, reason: String },
}

/// `name:base64` split and decoded, `expected` bytes long; the text named in errors is `shown`.
fn parse_named(text: &str, expected: usize, shown: &str) -> Result<(String, Vec<u8>), KeyError> {
    let (name, encoded) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| KeyError::Format(shown.to_string()))?;
    check_name(name)?;
    let bytes = STANDARD.decode(encoded).map_err(|e| KeyError::Bytes {
        text: shown.to_string(),
        reason: format!("not base64: {e}"),
    })?;
    if bytes.len() != expected {
        return Err(KeyError::Bytes {
            text: shown.to_string(),
            reason: format!("{} bytes, expected {expected}", bytes.len()),
        });
    }
    Ok((name.to_string(), bytes))
}

/// A publisher's public key, as `trusted_keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = parse_named(text, 32, text)?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Format(text.into()))?;
        let key = VerifyingKey::from_bytes(&array).map_err(|e| KeyError::Bytes {
            text: text.to_string(),
            reason: format!("not an ed25519 public key: {e}"),
        })?;
        Ok(PublicKey { name, key })
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

/// A publisher's secret key. Its `Debug` and `Display` show only its name.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    /// A new key pair from the operating system's random source.
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Bytes {
            text: name.to_string(),
            reason: format!("no random bytes from the operating system: {e}"),
        })?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A secret key file's text; errors never quote the secret itself.
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = parse_named(text, 32, "the secret key")?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Format("the secret key".into()))?;
        Ok(SecretKey {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// What a secret key file holds.
    pub fn to_file_text(&self) -> String {
        format!("{}:{}\n", self.name, STANDARD.encode(self.key.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, message: &str) -> Signature {
        Signature {
            key: self.name.clone(),
            sig: STANDARD.encode(self.key.sign(message.as_bytes()).to_bytes()),
        }
    }
}

/// One signature on an entry: the signing key's name and the base64 ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

/// Why an entry's signatures do not make it trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("it is not signed (pull with --trust-unsigned to accept unsigned entries)")]
    Unsigned,
    #[error("its signature by `{0}` does not verify: the entry was changed after it was signed")]
    Invalid(String),
    #[error(
        "it is signed only by {0}, not by a key in the project config's trusted_keys (pull with --trust-unsigned to accept it anyway)"
    )]
    Untrusted(String),
}

/// The message an entry's signature covers.
pub fn message(kind: &str, key: &str, manifest: &[u8]) -> String {
    format!(
        "mgat-entry-v1;{kind};{key};{}",
        mgat_util::digest::sha256_bytes(manifest)
    )
}

/// The name of a trusted key whose signature on `message` verifies. A signature by a trusted name that does not
/// verify is refused even when another one does: the entry was changed after someone signed it.
pub fn verify(
    signatures: &[Signature],
    trusted: &[PublicKey],
    message: &str,
) -> Result<String, SignatureProblem> {
    if signatures.is_empty() {
        return Err(SignatureProblem::Unsigned);
    }
    let mut verified = None;
    for signature in signatures {
        let Some(public) = trusted.iter().find(|k| k.name == signature.key) else {
            continue;
        };
        let valid = STANDARD
            .decode(&signature.sig)
            .ok()
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .is_some_and(|sig| public.key.verify(message.as_bytes(), &sig).is_ok());
        match valid {
            true => verified = verified.or(Some(public.name.clone())),
            false => return Err(SignatureProblem::Invalid(signature.key.clone())),
        }
    }
    verified.ok_or_else(|| {
        let names: Vec<String> = signatures.iter().map(|s| format!("`{}`", s.key)).collect();
        SignatureProblem::Untrusted(names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_public_key_and_nothing_else() {
        let alice = SecretKey::generate("alice").unwrap();
        let bob = SecretKey::generate("bob").unwrap();
        let msg = message("train", "ab12", b"{\"manifest\": 1}");
        let sig = alice.sign(&msg);
        assert_eq!(
            verify(std::slice::from_ref(&sig), &[alice.public()], &msg),
            Ok("alice".into())
        );
        // Another message (another manifest, key or kind) does not verify.
        let other = message("train", "ab12", b"{\"manifest\": 2}");
        assert_eq!(
            verify(std::slice::from_ref(&sig), &[alice.public()], &other),
            Err(SignatureProblem::Invalid("alice".into()))
        );
        assert_eq!(
            verify(std::slice::from_ref(&sig), &[bob.public()], &msg),
            Err(SignatureProblem::Untrusted("`alice`".into()))
        );
        assert_eq!(
            verify(&[], &[alice.public()], &msg),
            Err(SignatureProblem::Unsigned)
        );
        // A forged signature under a trusted name is refused even beside a valid one.
        let forged = Signature {
            key: "bob".into(),
            sig: alice.sign(&msg).sig,
        };
        assert_eq!(
            verify(&[sig, forged], &[alice.public(), bob.public()], &msg),
            Err(SignatureProblem::Invalid("bob".into()))
        );
    }

    #[test]
    fn keys_round_trip_through_their_text_and_bad_text_is_named() {
        let key = SecretKey::generate("lab-1").unwrap();
        let again = SecretKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = key.public().to_string();
        assert_eq!(PublicKey::parse(&public).unwrap(), key.public());
        assert!(matches!(
            PublicKey::parse("nocolon"),
            Err(KeyError::Format(_))
        ));
        assert!(matches!(
            PublicKey::parse("bad name:AAAA"),
            Err(KeyError::Name(_))
        ));
        assert!(matches!(
            PublicKey::parse("k:AAAA"),
            Err(KeyError::Bytes { .. })
        ));
        // A secret key's error never quotes the secret.
        let err = SecretKey::parse("k:@@@@").unwrap_err().to_string();
        assert!(!err.contains("@@@@"), "{err}");
        assert!(!format!("{key:?}").contains(&key.to_file_text()[6..]));
    }
}
