//! Checkpoints: the signed statement "the log had `size` events and this root hash".
//!
//! The format is the C2SP `tlog-checkpoint` body (origin line, decimal tree size, base64 root
//! hash, optional extension lines) wrapped in a C2SP `signed-note` with one Ed25519 signature.
//! Keys use the signed-note encodings, so other transparency tooling reads them too:
//!
//! - verifier key: `<name>+<key id as 8 hex digits>+<base64(0x01 ‖ 32-byte public key)>`
//! - signer key: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ 32-byte seed)>`
//! - key id: the first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`
//! - signature line: `— <name> <base64(key id ‖ signature over the note text)>`
//!
//! Loupe names its audit key after the log's origin, and a verifier only accepts checkpoints
//! whose origin equals its key's name: a signature by the right key for another log's origin
//! is no statement about this log.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::merkle::Hash;

/// The signed-note algorithm byte for Ed25519.
const ED25519_ALG: u8 = 0x01;
/// The prefix of every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// Notes larger than this are refused before any parsing.
const MAX_NOTE_BYTES: usize = 1 << 20;

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key string is not in the signed-note encoding.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// The key's name breaks the signed-note rules (empty, `+`, or whitespace).
    #[error("invalid key name {0:?}")]
    InvalidName(String),
    /// The note's text or signature block is not well formed.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// No signature line by the verifier's key (name and key id) is on the note.
    #[error("the note carries no signature by key {0}")]
    NoSignature(String),
    /// A signature by the verifier's key is there and does not verify.
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The checkpoint names another log.
    #[error("checkpoint origin {found:?} is not this log's origin {expected:?}")]
    WrongOrigin { expected: String, found: String },
    /// The system random number generator failed.
    #[error("no randomness available to generate a key")]
    Random,
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::InvalidName(name.to_owned()));
    }
    Ok(())
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ED25519_ALG]);
    ctx.update(public);
    let digest = ctx.finish();
    let d = digest.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Splits `<name>+<8 hex>+<base64>` into its parts, checking the key id's form.
fn split_key(text: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey("expected name+keyid+key"));
    };
    check_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key id is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::MalformedKey("key id"))?;
    let material = BASE64
        .decode(material)
        .map_err(|_| NoteError::MalformedKey("key material is not base64"))?;
    if material.len() != 33 || material[0] != ED25519_ALG {
        return Err(NoteError::MalformedKey("not an Ed25519 key"));
    }
    Ok((name, id, material[1..].to_vec()))
}

/// Signs notes with one Ed25519 key. The seed never appears in `Debug` output.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| NoteError::MalformedKey("Ed25519 seed rejected"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public),
            seed,
            pair,
        })
    }

    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| NoteError::Random)?;
        Self::from_seed(name, seed)
    }

    /// Parses a signer key `PRIVATE+KEY+<name>+<id>+<base64>`, checking the key id.
    pub fn from_private_key(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("missing PRIVATE+KEY+ prefix"))?;
        let (name, id, seed) = split_key(rest)?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedKey("seed length"))?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != id {
            return Err(NoteError::MalformedKey("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signer key in its text encoding (secret: store it like a private key).
    pub fn private_key(&self) -> String {
        let mut material = vec![ED25519_ALG];
        material.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(material)
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public,
        }
    }

    /// Signs `text` (non-empty, ending in a newline) and returns the signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let mut blob = self.key_id.to_be_bytes().to_vec();
        blob.extend_from_slice(self.pair.sign(text.as_bytes()).as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text must end in a newline"));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(NoteError::MalformedNote(
            "text must not contain a blank line",
        ));
    }
    Ok(())
}

/// Verifies notes signed by one Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public: [u8; 32],
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<id>+<base64>`, checking that the id matches the key.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, public) = split_key(text.trim_end())?;
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| NoteError::MalformedKey("public key length"))?;
        if key_id(name, &public) != id {
            return Err(NoteError::MalformedKey("key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            public,
        })
    }

    /// The key's name (for Loupe's audit key, also the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key in its text encoding `<name>+<id>+<base64>`: what a reviewer pins.
    pub fn key_text(&self) -> String {
        let mut material = vec![ED25519_ALG];
        material.extend_from_slice(&self.public);
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(material)
        )
    }

    /// Checks `note`'s signature by this key and returns the signed text.
    ///
    /// Signatures by other keys are allowed (a note may be cosigned) and ignored.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::MalformedNote("note too large"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::MalformedNote("no blank line before signatures"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        check_text(text)?;
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::MalformedNote(
                "signature block must end in a newline",
            ));
        }
        let mut found = false;
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(NoteError::MalformedNote("signature line without em dash"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or(NoteError::MalformedNote("signature line without a name"))?;
            let blob = BASE64
                .decode(blob)
                .map_err(|_| NoteError::MalformedNote("signature is not base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::MalformedNote("signature too short"));
            }
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.key_id {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(text.as_bytes(), &blob[4..])
                .map_err(|_| NoteError::BadSignature(self.to_string()))?;
            found = true;
        }
        if found {
            Ok(text)
        } else {
            Err(NoteError::NoSignature(self.to_string()))
        }
    }

    /// Checks a signed checkpoint and returns its contents; its origin must be this key's name.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint::parse(self.open(note)?)?;
        if checkpoint.origin != self.name {
            return Err(NoteError::WrongOrigin {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut material = vec![ED25519_ALG];
        material.extend_from_slice(&self.public);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(material)
        )
    }
}

/// What a checkpoint states: the log `origin` had `size` events with Merkle root `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, a schema-less URL such as `loupe.example.com/audit`.
    pub origin: String,
    /// The number of events (leaves) in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of those events.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body (the signed text), ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// Signs this checkpoint, giving the note to publish and store.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.body())
    }

    /// Parses a checkpoint body. Extension lines after the root are allowed and ignored.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(NoteError::MalformedCheckpoint("missing origin"))?;
        let size = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("missing tree size"))?;
        let canonical_number = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !canonical_number {
            return Err(NoteError::MalformedCheckpoint("tree size is not a decimal"));
        }
        let size = size
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("tree size out of range"))?;
        let root = lines
            .next()
            .and_then(|l| BASE64.decode(l).ok())
            .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "root is not a base64 SHA-256",
            ))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of the signed-note specification and its Go reference
    // implementation, so that key ids, encodings and signatures interoperate byte for byte.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reference_key_and_signature_match_byte_for_byte() {
        let signer = NoteSigner::from_private_key(SKEY).expect("reference signer key");
        assert_eq!(signer.verifier().to_string(), VKEY);
        assert_eq!(signer.private_key(), SKEY);
        assert_eq!(signer.sign(TEXT).expect("sign"), SIGNED);
        let verifier = NoteVerifier::parse(VKEY).expect("reference verifier key");
        assert_eq!(verifier.open(SIGNED), Ok(TEXT));
    }

    #[test]
    fn a_changed_text_or_signature_fails_and_a_foreign_key_is_not_enough() {
        let verifier = NoteVerifier::parse(VKEY).expect("key");
        let edited = SIGNED.replace("problem,", "problem;");
        assert!(matches!(
            verifier.open(&edited),
            Err(NoteError::BadSignature(_))
        ));
        let other = NoteSigner::generate("PeterNeumann").expect("key");
        let forged = other.sign(TEXT).expect("sign");
        assert!(matches!(
            verifier.open(&forged),
            Err(NoteError::NoSignature(_))
        ));
    }

    #[test]
    fn verifier_keys_round_trip_through_their_text() {
        let signer = NoteSigner::generate("loupe.test/audit").expect("key");
        let verifier = signer.verifier();
        assert_eq!(NoteVerifier::parse(&verifier.key_text()), Ok(verifier));
    }

    #[test]
    fn key_ids_are_checked_and_names_follow_the_rules() {
        let wrong_id = VKEY.replace("c74f20a3", "c74f20a4");
        assert!(NoteVerifier::parse(&wrong_id).is_err());
        for bad in ["", "a+b", "a b", "tab\tname"] {
            assert!(NoteSigner::generate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checkpoints_round_trip_and_origin_is_enforced() {
        let signer = NoteSigner::generate("loupe.test/audit").expect("key");
        let checkpoint = Checkpoint {
            origin: "loupe.test/audit".into(),
            size: 42,
            root: crate::merkle::leaf_hash(b"x"),
        };
        let note = checkpoint.sign(&signer).expect("sign");
        assert_eq!(
            signer.verifier().open_checkpoint(&note),
            Ok(checkpoint.clone())
        );
        let elsewhere = Checkpoint {
            origin: "elsewhere/audit".into(),
            ..checkpoint
        };
        let note = elsewhere.sign(&signer).expect("sign");
        assert!(matches!(
            signer.verifier().open_checkpoint(&note),
            Err(NoteError::WrongOrigin { .. })
        ));
        for bad in ["o\n01\nAAAA\n", "o\n-1\n", "o\n1\nnot base64\n", "\n1\n"] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
