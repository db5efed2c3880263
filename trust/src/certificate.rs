//! The few fields of an X.509 certificate (RFC 5280) that peer identity reads, from DER.
//!
//! Why a reader of its own instead of a general X.509 library: identity needs the URI SANs,
//! basic constraints, key usage, validity, the subject's CN, the issuer's and subject's names
//! as bytes, and the signed bytes — nothing else. Every certificate this reads on a connection
//! has already been parsed and chain-verified by the TLS handshake (`rustls`/`webpki`), so this
//! only has to read fields, strictly. A general library brought some twenty crates (ASN.1
//! frameworks, big numbers, OID registries) into every agent for that.
//!
//! It is strict DER and fails closed: definite, minimal lengths; single-byte tags; no bytes
//! after the certificate or inside a field past what the field holds; an extension present
//! twice is an error (RFC 5280 §4.2), as is a SAN, basic-constraints or key-usage extension
//! that does not parse. Nothing here panics on any input: every read is bounds-checked.

use rustls::pki_types::SignatureVerificationAlgorithm;

/// Why bytes are not a certificate this reader accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("{field}: {problem}")]
    Malformed {
        field: &'static str,
        problem: &'static str,
    },
}

fn malformed(field: &'static str, problem: &'static str) -> CertificateError {
    CertificateError::Malformed { field, problem }
}

/// DER tags this reader meets.
mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    /// `[0] EXPLICIT Version`.
    pub const VERSION: u8 = 0xa0;
    /// `[1] IMPLICIT issuerUniqueID`.
    pub const ISSUER_UID: u8 = 0x81;
    /// `[2] IMPLICIT subjectUniqueID`.
    pub const SUBJECT_UID: u8 = 0x82;
    /// `[3] EXPLICIT Extensions`.
    pub const EXTENSIONS: u8 = 0xa3;
    /// `uniformResourceIdentifier [6] IA5String` in a GeneralName.
    pub const URI_NAME: u8 = 0x86;
}

/// Object identifiers, as DER content bytes.
mod oid {
    /// id-ce-subjectAltName, 2.5.29.17.
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// id-ce-basicConstraints, 2.5.29.19.
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    /// id-ce-keyUsage, 2.5.29.15.
    pub const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    /// id-at-commonName, 2.5.4.3.
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
}

/// One DER element: its tag, its content, and all of its bytes (tag and length included).
#[derive(Clone, Copy)]
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads DER elements one after another from a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn element(&mut self, field: &'static str) -> Result<Element<'a>, CertificateError> {
        let bytes = self.rest;
        let (&tag, after_tag) = bytes
            .split_first()
            .ok_or_else(|| malformed(field, "ends early"))?;
        if tag & 0x1f == 0x1f {
            return Err(malformed(field, "has a multi-byte tag"));
        }
        let (length, after_length) = read_length(after_tag, field)?;
        if after_length.len() < length {
            return Err(malformed(field, "is longer than the bytes that hold it"));
        }
        let header = bytes.len() - after_length.len();
        let (whole, rest) = bytes.split_at(header + length);
        self.rest = rest;
        Ok(Element {
            tag,
            content: &whole[header..],
            whole,
        })
    }

    /// The next element, which must have tag `expected`; its content.
    fn expect(&mut self, expected: u8, field: &'static str) -> Result<&'a [u8], CertificateError> {
        let element = self.element(field)?;
        if element.tag != expected {
            return Err(malformed(field, "has an unexpected type"));
        }
        Ok(element.content)
    }

    /// The next element if it has tag `wanted`.
    fn optional(
        &mut self,
        wanted: u8,
        field: &'static str,
    ) -> Result<Option<&'a [u8]>, CertificateError> {
        match self.peek_tag() {
            Some(tag) if tag == wanted => self.expect(wanted, field).map(Some),
            _ => Ok(None),
        }
    }

    fn finish(&self, field: &'static str) -> Result<(), CertificateError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(malformed(field, "has trailing bytes"))
        }
    }
}

/// A definite, minimally encoded DER length (at most four length bytes).
fn read_length<'a>(
    bytes: &'a [u8],
    field: &'static str,
) -> Result<(usize, &'a [u8]), CertificateError> {
    let (&first, rest) = bytes
        .split_first()
        .ok_or_else(|| malformed(field, "ends early"))?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 {
        return Err(malformed(field, "has an indefinite length (BER, not DER)"));
    }
    if count > 4 {
        return Err(malformed(field, "has a length too large for a certificate"));
    }
    if rest.len() < count {
        return Err(malformed(field, "ends early"));
    }
    let (length_bytes, rest) = rest.split_at(count);
    if length_bytes[0] == 0 {
        return Err(malformed(field, "has a non-minimal length"));
    }
    let length = length_bytes
        .iter()
        .fold(0usize, |length, &b| (length << 8) | usize::from(b));
    if length < 0x80 {
        return Err(malformed(field, "has a non-minimal length"));
    }
    Ok((length, rest))
}

/// The fields of a certificate identity reads. Borrowed from the DER it was read from.
#[derive(Debug, Clone)]
pub(crate) struct Certificate<'a> {
    /// The whole `tbsCertificate` element: the bytes the issuer signed.
    signed: &'a [u8],
    /// The content of the outer `signatureAlgorithm` (OID and parameters).
    signature_algorithm: &'a [u8],
    /// The signature bits.
    signature: &'a [u8],
    /// The whole issuer `Name` element.
    pub issuer: &'a [u8],
    /// The whole subject `Name` element.
    pub subject: &'a [u8],
    /// The content of the subject public key's `AlgorithmIdentifier`.
    public_key_algorithm: &'a [u8],
    /// The subject public key's bits.
    public_key: &'a [u8],
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub extensions: Extensions<'a>,
}

/// What the extensions identity reads say.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extensions<'a> {
    /// Every `uniformResourceIdentifier` in the subject alternative names, in order.
    pub uri_sans: Vec<&'a str>,
    /// Basic constraints say `cA: TRUE`.
    pub is_ca: bool,
    /// The key usage bits (bit 0 is digitalSignature), or `None` without the extension.
    pub key_usage: Option<KeyUsage>,
}

/// The key usage bits of RFC 5280 §4.2.1.3 that identity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyUsage(u16);

impl KeyUsage {
    const DIGITAL_SIGNATURE: u16 = 0;
    const KEY_CERT_SIGN: u16 = 5;
    const CRL_SIGN: u16 = 6;

    fn has(self, bit: u16) -> bool {
        self.0 & (1 << bit) != 0
    }

    pub fn digital_signature(self) -> bool {
        self.has(KeyUsage::DIGITAL_SIGNATURE)
    }

    pub fn key_cert_sign(self) -> bool {
        self.has(KeyUsage::KEY_CERT_SIGN)
    }

    pub fn crl_sign(self) -> bool {
        self.has(KeyUsage::CRL_SIGN)
    }
}

impl<'a> Certificate<'a> {
    /// Reads `der`, which must be exactly one certificate.
    pub fn from_der(der: &'a [u8]) -> Result<Certificate<'a>, CertificateError> {
        let mut outer = Reader::new(der);
        let certificate = outer.expect(tag::SEQUENCE, "certificate")?;
        outer.finish("certificate")?;

        let mut parts = Reader::new(certificate);
        let tbs = parts.element("tbsCertificate")?;
        if tbs.tag != tag::SEQUENCE {
            return Err(malformed("tbsCertificate", "is not a SEQUENCE"));
        }
        let signature_algorithm = parts.expect(tag::SEQUENCE, "signatureAlgorithm")?;
        let signature = bit_string(parts.expect(tag::BIT_STRING, "signatureValue")?)
            .ok_or_else(|| malformed("signatureValue", "is not a whole number of bytes"))?;
        parts.finish("certificate")?;

        let mut fields = Reader::new(tbs.content);
        fields.optional(tag::VERSION, "version")?;
        fields.expect(tag::INTEGER, "serialNumber")?;
        fields.expect(tag::SEQUENCE, "signature")?;
        let issuer = fields.element("issuer")?;
        let mut validity = Reader::new(fields.expect(tag::SEQUENCE, "validity")?);
        let not_before = read_time(&mut validity, "notBefore")?;
        let not_after = read_time(&mut validity, "notAfter")?;
        validity.finish("validity")?;
        let subject = fields.element("subject")?;
        if issuer.tag != tag::SEQUENCE || subject.tag != tag::SEQUENCE {
            return Err(malformed("issuer or subject", "is not a Name"));
        }
        let mut key_info = Reader::new(fields.expect(tag::SEQUENCE, "subjectPublicKeyInfo")?);
        let public_key_algorithm = key_info.expect(tag::SEQUENCE, "subjectPublicKeyInfo")?;
        let public_key = bit_string(key_info.expect(tag::BIT_STRING, "subjectPublicKey")?)
            .ok_or_else(|| malformed("subjectPublicKey", "is not a whole number of bytes"))?;
        key_info.finish("subjectPublicKeyInfo")?;
        fields.optional(tag::ISSUER_UID, "issuerUniqueID")?;
        fields.optional(tag::SUBJECT_UID, "subjectUniqueID")?;
        let extensions = match fields.optional(tag::EXTENSIONS, "extensions")? {
            Some(explicit) => {
                let mut wrapper = Reader::new(explicit);
                let list = wrapper.expect(tag::SEQUENCE, "extensions")?;
                wrapper.finish("extensions")?;
                read_extensions(list)?
            }
            None => Extensions::default(),
        };
        fields.finish("tbsCertificate")?;

        Ok(Certificate {
            signed: tbs.whole,
            signature_algorithm,
            signature,
            issuer: issuer.whole,
            subject: subject.whole,
            public_key_algorithm,
            public_key,
            not_before,
            not_after,
            extensions,
        })
    }

    /// The subject's common names that are strings (UTF8String, PrintableString or
    /// IA5String), and `None` for one encoded otherwise.
    pub fn subject_common_names(&self) -> Result<Vec<Option<&'a str>>, CertificateError> {
        let mut names = Vec::new();
        let mut name = Reader::new(element_content(self.subject));
        while !name.is_empty() {
            let mut rdn = Reader::new(name.expect(tag::SET, "subject")?);
            while !rdn.is_empty() {
                let mut attribute = Reader::new(rdn.expect(tag::SEQUENCE, "subject")?);
                let kind = attribute.expect(tag::OID, "subject")?;
                let value = attribute.element("subject")?;
                attribute.finish("subject")?;
                if kind == oid::COMMON_NAME {
                    let text = match value.tag {
                        tag::UTF8_STRING | tag::PRINTABLE_STRING | tag::IA5_STRING => {
                            std::str::from_utf8(value.content).ok()
                        }
                        _ => None,
                    };
                    names.push(text);
                }
            }
        }
        Ok(names)
    }

    /// Whether `issuer`'s key made this certificate's signature, by an algorithm the TLS
    /// provider accepts for certificates.
    pub fn is_signed_by(
        &self,
        issuer: &Certificate<'_>,
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> bool {
        algorithms
            .iter()
            .filter(|alg| alg.signature_alg_id().as_ref() == self.signature_algorithm)
            .filter(|alg| alg.public_key_alg_id().as_ref() == issuer.public_key_algorithm)
            .any(|alg| {
                alg.verify_signature(issuer.public_key, self.signed, self.signature)
                    .is_ok()
            })
    }
}

/// The content of a whole element known to be well formed (it was read by [`Reader`]).
fn element_content(whole: &[u8]) -> &[u8] {
    let mut reader = Reader::new(whole);
    reader.element("").map_or(&[], |element| element.content)
}

/// The bytes of a BIT STRING with no unused bits (keys and signatures are whole bytes).
fn bit_string(content: &[u8]) -> Option<&[u8]> {
    match content.split_first() {
        Some((0, bits)) => Some(bits),
        _ => None,
    }
}

fn read_extensions(list: &[u8]) -> Result<Extensions<'_>, CertificateError> {
    let mut extensions = Extensions::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut reader = Reader::new(list);
    while !reader.is_empty() {
        let mut extension = Reader::new(reader.expect(tag::SEQUENCE, "extension")?);
        let id = extension.expect(tag::OID, "extension")?;
        if let Some(critical) = extension.optional(tag::BOOLEAN, "extension critical")? {
            read_boolean(critical, "extension critical")?;
        }
        let value = extension.expect(tag::OCTET_STRING, "extension value")?;
        extension.finish("extension")?;
        if seen.contains(&id) {
            return Err(malformed("extensions", "name one extension twice"));
        }
        seen.push(id);
        match id {
            oid::SUBJECT_ALT_NAME => extensions.uri_sans = read_uri_sans(value)?,
            oid::BASIC_CONSTRAINTS => extensions.is_ca = read_basic_constraints(value)?,
            oid::KEY_USAGE => extensions.key_usage = Some(read_key_usage(value)?),
            _ => {}
        }
    }
    Ok(extensions)
}

fn read_uri_sans(value: &[u8]) -> Result<Vec<&str>, CertificateError> {
    const FIELD: &str = "subject alternative names";
    let mut outer = Reader::new(value);
    let mut names = Reader::new(outer.expect(tag::SEQUENCE, FIELD)?);
    outer.finish(FIELD)?;
    let mut uris = Vec::new();
    while !names.is_empty() {
        let name = names.element(FIELD)?;
        if name.tag == tag::URI_NAME {
            if !name.content.is_ascii() {
                return Err(malformed(FIELD, "hold a URI that is not IA5 (ASCII) text"));
            }
            let uri = std::str::from_utf8(name.content)
                .map_err(|_| malformed(FIELD, "hold a URI that is not text"))?;
            uris.push(uri);
        }
    }
    Ok(uris)
}

/// `BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }`.
fn read_basic_constraints(value: &[u8]) -> Result<bool, CertificateError> {
    const FIELD: &str = "basic constraints";
    let mut outer = Reader::new(value);
    let mut fields = Reader::new(outer.expect(tag::SEQUENCE, FIELD)?);
    outer.finish(FIELD)?;
    let is_ca = match fields.optional(tag::BOOLEAN, FIELD)? {
        Some(content) => read_boolean(content, FIELD)?,
        None => false,
    };
    fields.optional(tag::INTEGER, FIELD)?;
    fields.finish(FIELD)?;
    Ok(is_ca)
}

/// `KeyUsage ::= BIT STRING`; the first nine bits are the named usages.
fn read_key_usage(value: &[u8]) -> Result<KeyUsage, CertificateError> {
    const FIELD: &str = "key usage";
    let mut outer = Reader::new(value);
    let content = outer.expect(tag::BIT_STRING, FIELD)?;
    outer.finish(FIELD)?;
    let (&unused, bytes) = content
        .split_first()
        .ok_or_else(|| malformed(FIELD, "is empty"))?;
    if unused > 7 || (bytes.is_empty() && unused != 0) {
        return Err(malformed(FIELD, "has an impossible count of unused bits"));
    }
    let mut bits = 0u16;
    for (index, &byte) in bytes.iter().take(2).enumerate() {
        for offset in 0..8u16 {
            if byte & (0x80 >> offset) != 0 {
                bits |= 1 << (index as u16 * 8 + offset);
            }
        }
    }
    Ok(KeyUsage(bits))
}

fn read_boolean(content: &[u8], field: &'static str) -> Result<bool, CertificateError> {
    match content {
        [0x00] => Ok(false),
        [0xff] => Ok(true),
        _ => Err(malformed(field, "is not a DER BOOLEAN")),
    }
}

/// `Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }` in the forms RFC 5280
/// §4.1.2.5 requires (`YYMMDDHHMMSSZ`, `YYYYMMDDHHMMSSZ`), as Unix seconds.
fn read_time(reader: &mut Reader<'_>, field: &'static str) -> Result<i64, CertificateError> {
    let element = reader.element(field)?;
    let (year, rest) = match (element.tag, element.content.len()) {
        (tag::UTC_TIME, 13) => {
            let (yy, rest) = element.content.split_at(2);
            let yy = digits(yy).ok_or_else(|| malformed(field, "is not a UTCTime"))?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        (tag::GENERALIZED_TIME, 15) => {
            let (yyyy, rest) = element.content.split_at(4);
            let year = digits(yyyy).ok_or_else(|| malformed(field, "is not a GeneralizedTime"))?;
            (year, rest)
        }
        _ => {
            return Err(malformed(
                field,
                "is not a UTCTime or GeneralizedTime in Z form",
            ));
        }
    };
    let bad = || malformed(field, "is not a valid date and time");
    if rest.last() != Some(&b'Z') {
        return Err(bad());
    }
    let two = |at: usize| digits(rest.get(at..at + 2).unwrap_or_default()).ok_or_else(bad);
    let (month, day, hour, minute, second) = (two(0)?, two(2)?, two(4)?, two(6)?, two(8)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// The number ASCII digits spell, or `None` if any byte is not a digit (or there are none).
fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        text.iter()
            .fold(0i64, |value, &digit| value * 10 + i64::from(digit - b'0')),
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str, tag: u8) -> Result<i64, CertificateError> {
        let mut der = vec![tag, text.len() as u8];
        der.extend_from_slice(text.as_bytes());
        read_time(&mut Reader::new(&der), "t")
    }

    #[test]
    fn times_are_unix_seconds_in_both_forms() {
        assert_eq!(time("700101000000Z", tag::UTC_TIME), Ok(0));
        assert_eq!(time("491231235959Z", tag::UTC_TIME), Ok(2_524_607_999));
        assert_eq!(time("500101000000Z", tag::UTC_TIME), Ok(-631_152_000));
        assert_eq!(
            time("20240229120000Z", tag::GENERALIZED_TIME),
            Ok(1_709_208_000)
        );
        assert_eq!(
            time("99991231235959Z", tag::GENERALIZED_TIME),
            Ok(253_402_300_799)
        );
    }

    #[test]
    fn impossible_times_are_refused() {
        for text in [
            "20230229120000Z",
            "20241301000000Z",
            "20240100000000Z",
            "20240101240000Z",
            "20240101006000Z",
            "20240101000060Z",
            "2024010100000+Z",
            "20240101000000+",
        ] {
            assert!(time(text, tag::GENERALIZED_TIME).is_err(), "{text}");
        }
        assert!(time("2401010000Z", tag::UTC_TIME).is_err());
        assert!(time("240101000000", tag::UTC_TIME).is_err());
        assert!(time("20240101000000Z", tag::UTC_TIME).is_err());
    }

    #[test]
    fn lengths_must_be_definite_minimal_and_within_the_input() {
        let read = |bytes: &[u8]| Reader::new(bytes).element("x").map(|e| e.content.len());
        assert_eq!(read(&[0x04, 0x01, 0xaa]), Ok(1));
        assert_eq!(read(&[0x04, 0x81, 0x80]).ok(), None, "ends early");
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        assert_eq!(read(&long), Ok(0x80));
        assert!(
            read(&[0x04, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err(),
            "non-minimal"
        );
        assert!(read(&[0x04, 0x82, 0x00, 0x80]).is_err(), "leading zero");
        assert!(read(&[0x30, 0x80, 0x00, 0x00]).is_err(), "indefinite");
        assert!(
            read(&[0x04, 0x85, 1, 0, 0, 0, 0]).is_err(),
            "five length bytes"
        );
        assert!(read(&[0x1f, 0x01, 0x00]).is_err(), "multi-byte tag");
        assert!(read(&[0x04]).is_err());
        assert!(read(&[]).is_err());
    }

    #[test]
    fn key_usage_bits_are_read_from_the_first_bit() {
        let usage = |bytes: &[u8]| {
            let mut der = vec![tag::BIT_STRING, bytes.len() as u8];
            der.extend_from_slice(bytes);
            read_key_usage(&der)
        };
        let signing = usage(&[0x07, 0x80]).expect("digitalSignature");
        assert!(signing.digital_signature() && !signing.key_cert_sign() && !signing.crl_sign());
        let ca = usage(&[0x01, 0x06]).expect("keyCertSign, cRLSign");
        assert!(!ca.digital_signature() && ca.key_cert_sign() && ca.crl_sign());
        assert!(usage(&[]).is_err());
        assert!(usage(&[0x08, 0x80]).is_err());
        assert!(usage(&[0x01]).is_err());
    }

    #[test]
    fn an_extension_named_twice_is_refused() {
        let basic = [
            0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0xff,
        ];
        assert!(read_extensions(&basic).expect("once").is_ca);
        let twice = [basic, basic].concat();
        assert!(read_extensions(&twice).is_err());
    }

    /// Certificates as a real CA library writes them: a CA, an SVID leaf, and a leaf with
    /// several SANs and an explicit validity.
    fn samples() -> Vec<Vec<u8>> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let uri = |text: &str| SanType::URI(text.try_into().expect("uri"));
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "Loupe test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.subject_alt_names = vec![uri("spiffe://loupe.test")];
        let ca_key = KeyPair::generate().expect("key");
        let ca_der = ca.self_signed(&ca_key).expect("ca").der().to_vec();
        let issuer = Issuer::from_params(&ca, &ca_key);

        let mut leaf = CertificateParams::default();
        leaf.distinguished_name.push(DnType::CommonName, "checkout");
        leaf.subject_alt_names = vec![uri("spiffe://loupe.test/agent/checkout")];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_der = leaf
            .signed_by(&KeyPair::generate().expect("key"), &issuer)
            .expect("leaf")
            .der()
            .to_vec();

        let mut many = CertificateParams::default();
        many.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns")),
            uri("spiffe://loupe.test/user/carol"),
            SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            uri("https://example.invalid/x"),
        ];
        many.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t");
        many.not_after = time::OffsetDateTime::from_unix_timestamp(4_102_444_800).expect("t");
        let many_der = many
            .self_signed(&KeyPair::generate().expect("key"))
            .expect("many")
            .der()
            .to_vec();
        vec![ca_der, leaf_der, many_der]
    }

    #[test]
    fn reads_what_a_general_x509_parser_reads() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        for der in samples() {
            let ours = Certificate::from_der(&der).expect("ours");
            let (_, theirs) = X509Certificate::from_der(&der).expect("x509-parser");
            let uris: Vec<&str> = theirs
                .subject_alternative_name()
                .expect("san")
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|name| match name {
                            GeneralName::URI(uri) => Some(*uri),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(ours.extensions.uri_sans, uris);
            assert_eq!(ours.extensions.is_ca, theirs.is_ca());
            let usage = theirs.key_usage().expect("key usage").map(|ku| ku.value);
            assert_eq!(
                ours.extensions.key_usage.map(|ku| (
                    ku.digital_signature(),
                    ku.key_cert_sign(),
                    ku.crl_sign()
                )),
                usage.map(|ku| (ku.digital_signature(), ku.key_cert_sign(), ku.crl_sign()))
            );
            assert_eq!(ours.not_before, theirs.validity().not_before.timestamp());
            assert_eq!(ours.not_after, theirs.validity().not_after.timestamp());
            assert_eq!(ours.issuer, theirs.issuer().as_raw());
            assert_eq!(ours.subject, theirs.subject().as_raw());
            let cns: Vec<Option<&str>> = theirs
                .subject()
                .iter_common_name()
                .map(|cn| cn.as_str().ok())
                .collect();
            assert_eq!(ours.subject_common_names().expect("cn"), cns);
        }
    }

    #[test]
    fn a_leaf_is_signed_by_its_ca_and_not_by_another() {
        let samples = samples();
        let algorithms = crate::tls::provider().signature_verification_algorithms.all;
        let ca = Certificate::from_der(&samples[0]).expect("ca");
        let leaf = Certificate::from_der(&samples[1]).expect("leaf");
        let other = Certificate::from_der(&samples[2]).expect("other");
        assert!(leaf.is_signed_by(&ca, algorithms));
        assert!(!leaf.is_signed_by(&other, algorithms));
        assert!(!other.is_signed_by(&ca, algorithms));
        assert!(!leaf.is_signed_by(&ca, &[]), "no algorithm, no signature");
    }

    #[test]
    fn every_truncation_is_refused_and_no_corruption_panics() {
        for der in samples() {
            for end in 0..der.len() {
                assert!(Certificate::from_der(&der[..end]).is_err(), "cut at {end}");
            }
            let mut longer = der.clone();
            longer.push(0);
            assert!(Certificate::from_der(&longer).is_err(), "trailing byte");
            for at in 0..der.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut corrupt = der.clone();
                    corrupt[at] ^= flip;
                    if let Ok(cert) = Certificate::from_der(&corrupt) {
                        let _ = cert.subject_common_names();
                    }
                }
            }
        }
    }
}
