//! Just enough DER to read back a CA certificate and wrap a private key.
//!
//! rcgen reads certificates only with its `x509-parser` feature, which pilotfish does not build
//! with; loading a persisted root needs four things of it (subject, public key, expiry, CA
//! flag), so they are read here instead. Keys written by istiod come as PKCS#1 (`RSA PRIVATE
//! KEY`) or SEC1 (`EC PRIVATE KEY`), which rcgen on ring does not take: they are wrapped into
//! PKCS#8, a fixed envelope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What could not be read, in words that name the part of the certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DerError(pub String);

fn err(what: impl Into<String>) -> DerError {
    DerError(what.into())
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_3: u8 = 0xa3;

/// One tag-length-value, with the bytes it spans.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    /// Tag, length and content: what a caller compares byte for byte.
    pub raw: &'a [u8],
}

/// Reads the next TLV off `input`.
pub fn next<'a>(input: &mut &'a [u8], what: &str) -> Result<Tlv<'a>, DerError> {
    let all = *input;
    let [tag, first, rest @ ..] = all else {
        return Err(err(format!("{what}: truncated")));
    };
    if tag & 0x1f == 0x1f {
        return Err(err(format!("{what}: multi-byte tags are not DER certificate syntax")));
    }
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(*first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(err(format!("{what}: bad length")));
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len).filter(|end| *end <= all.len()).ok_or_else(|| err(format!("{what}: truncated")))?;
    *input = &all[end..];
    Ok(Tlv { tag: *tag, content: &all[header..end], raw: &all[..end] })
}

/// Reads the next TLV and checks its tag.
fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, DerError> {
    let tlv = next(input, what)?;
    if tlv.tag != tag {
        return Err(err(format!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", tlv.tag)));
    }
    Ok(tlv)
}

/// One attribute of a distinguished name, as written: its OID arcs, string tag and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAttribute {
    pub oid: Vec<u64>,
    pub tag: u8,
    pub value: Vec<u8>,
}

/// The parts of a CA certificate the authority needs.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The subject Name, tag and length included.
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub subject: Vec<NameAttribute>,
    /// The subjectPublicKey bits (for RSA the PKCS#1 key, for EC the point).
    pub public_key: Vec<u8>,
    pub not_after: SystemTime,
    /// basicConstraints cA.
    pub is_ca: bool,
}

/// Reads `der` as an X.509 certificate.
pub fn certificate(der: &[u8]) -> Result<CertInfo, DerError> {
    let mut input = der;
    let cert = expect(&mut input, SEQUENCE, "certificate")?;
    let mut cert_body = cert.content;
    let tbs = expect(&mut cert_body, SEQUENCE, "tbsCertificate")?;
    let mut tbs = tbs.content;
    let mut field = next(&mut tbs, "version or serialNumber")?;
    if field.tag == CONTEXT_0 {
        field = next(&mut tbs, "serialNumber")?;
    }
    if field.tag != INTEGER {
        return Err(err("serialNumber: not an INTEGER"));
    }
    expect(&mut tbs, SEQUENCE, "signature algorithm")?;
    let issuer = expect(&mut tbs, SEQUENCE, "issuer")?;
    let validity = expect(&mut tbs, SEQUENCE, "validity")?;
    let mut validity = validity.content;
    next(&mut validity, "notBefore")?;
    let not_after = time(next(&mut validity, "notAfter")?)?;
    let subject = expect(&mut tbs, SEQUENCE, "subject")?;
    let spki = expect(&mut tbs, SEQUENCE, "subjectPublicKeyInfo")?;
    let mut spki = spki.content;
    expect(&mut spki, SEQUENCE, "subjectPublicKeyInfo algorithm")?;
    let bits = expect(&mut spki, BIT_STRING, "subjectPublicKey")?;
    let public_key = bits.content.get(1..).ok_or_else(|| err("subjectPublicKey: empty"))?.to_vec();
    let mut is_ca = false;
    while !tbs.is_empty() {
        let field = next(&mut tbs, "extensions")?;
        if field.tag == CONTEXT_3 {
            is_ca = basic_constraints_ca(field.content)?;
        }
    }
    Ok(CertInfo {
        subject_raw: subject.raw.to_vec(),
        issuer_raw: issuer.raw.to_vec(),
        subject: name(subject.content)?,
        public_key,
        not_after,
        is_ca,
    })
}

/// The issuer Name of a certificate, tag and length included.
pub fn issuer_raw(der: &[u8]) -> Result<Vec<u8>, DerError> {
    certificate(der).map(|c| c.issuer_raw)
}

/// 2.5.29.19
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

fn basic_constraints_ca(extensions: &[u8]) -> Result<bool, DerError> {
    let mut input = extensions;
    let list = expect(&mut input, SEQUENCE, "extensions")?;
    let mut list = list.content;
    while !list.is_empty() {
        let ext = expect(&mut list, SEQUENCE, "extension")?;
        let mut ext = ext.content;
        let oid = expect(&mut ext, OID, "extension id")?;
        if oid.content != BASIC_CONSTRAINTS {
            continue;
        }
        let mut value = next(&mut ext, "basicConstraints")?;
        if value.tag == BOOLEAN {
            value = next(&mut ext, "basicConstraints")?;
        }
        let mut octets = value.content;
        let constraints = expect(&mut octets, SEQUENCE, "basicConstraints")?;
        let mut constraints = constraints.content;
        if constraints.is_empty() {
            return Ok(false);
        }
        let ca = next(&mut constraints, "basicConstraints cA")?;
        return Ok(ca.tag == BOOLEAN && ca.content.first().is_some_and(|b| *b != 0));
    }
    Ok(false)
}

fn name(content: &[u8]) -> Result<Vec<NameAttribute>, DerError> {
    let mut rdns = content;
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let rdn = expect(&mut rdns, SET, "subject RDN")?;
        let mut attributes = rdn.content;
        let attribute = expect(&mut attributes, SEQUENCE, "subject attribute")?;
        if !attributes.is_empty() {
            return Err(err("subject: multi-valued RDNs are not supported"));
        }
        let mut attribute = attribute.content;
        let oid = expect(&mut attribute, OID, "subject attribute type")?;
        let value = next(&mut attribute, "subject attribute value")?;
        out.push(NameAttribute { oid: oid_arcs(oid.content)?, tag: value.tag, value: value.content.to_vec() });
    }
    Ok(out)
}

fn oid_arcs(bytes: &[u8]) -> Result<Vec<u64>, DerError> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        value = value.checked_mul(128).ok_or_else(|| err("OID arc too large"))? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == bytes.len() {
            return Err(err("OID truncated"));
        }
    }
    Ok(arcs)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as certificates write them.
fn time(tlv: Tlv<'_>) -> Result<SystemTime, DerError> {
    let text = std::str::from_utf8(tlv.content).map_err(|_| err("notAfter: not ASCII"))?;
    let digits = text.strip_suffix('Z').ok_or_else(|| err(format!("notAfter {text:?}: not UTC")))?;
    let (year, rest) = match (tlv.tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = number(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (number(&digits[..4])?, &digits[4..]),
        _ => return Err(err(format!("notAfter {text:?}: not a certificate time"))),
    };
    let part = |i: usize| number::<i64>(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (part(0)?, part(2)?, part(4)?, part(6)?, part(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(err(format!("notAfter {text:?}: out of range")));
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).map_err(|_| err(format!("notAfter {text:?}: before 1970")))?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, DerError> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("{s:?} is not a number")));
    }
    s.parse().map_err(|_| err(format!("{s:?} is not a number")))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` as `2035-01-01T00:00:00Z`, for messages.
pub fn format_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Encodes one TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

fn pkcs8(algorithm: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let body = [tlv(INTEGER, &[0]), tlv(SEQUENCE, &algorithm), tlv(OCTET_STRING, key)].concat();
    tlv(SEQUENCE, &body)
}

/// A PKCS#1 RSAPrivateKey wrapped as PKCS#8.
pub fn pkcs8_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    pkcs8([tlv(OID, RSA_ENCRYPTION), tlv(NULL, &[])].concat(), pkcs1)
}

/// A SEC1 ECPrivateKey wrapped as PKCS#8; the curve is read from the key's parameters.
pub fn pkcs8_from_sec1(sec1: &[u8]) -> Result<Vec<u8>, DerError> {
    let mut input = sec1;
    let key = expect(&mut input, SEQUENCE, "EC private key")?;
    let mut fields = key.content;
    expect(&mut fields, INTEGER, "EC private key version")?;
    expect(&mut fields, OCTET_STRING, "EC private key")?;
    let params = expect(&mut fields, CONTEXT_0, "EC private key parameters (the curve)")?;
    let mut params = params.content;
    let curve = expect(&mut params, OID, "EC private key curve")?;
    Ok(pkcs8([tlv(OID, EC_PUBLIC_KEY), curve.raw.to_vec()].concat(), sec1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn times_of_both_encodings() {
        let utc = tlv(UTC_TIME, b"380119031408Z");
        let t = time(next(&mut utc.as_slice(), "t").unwrap()).unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 2_147_483_648);
        let generalized = tlv(GENERALIZED_TIME, b"20380119031408Z");
        assert_eq!(time(next(&mut generalized.as_slice(), "t").unwrap()).unwrap(), t);
        assert_eq!(format_time(t), "2038-01-19T03:14:08Z");
        assert_eq!(format_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        let bad = tlv(UTC_TIME, b"381319031408Z");
        assert!(time(next(&mut bad.as_slice(), "t").unwrap()).unwrap_err().0.contains("out of range"));
    }

    #[test]
    fn oids_and_lengths() {
        assert_eq!(oid_arcs(RSA_ENCRYPTION).unwrap(), vec![1, 2, 840, 113_549, 1, 1, 1]);
        let long = tlv(OCTET_STRING, &[7; 300]);
        assert_eq!(&long[..4], &[OCTET_STRING, 0x82, 0x01, 0x2c]);
        let read = next(&mut long.as_slice(), "x").unwrap();
        assert_eq!(read.content.len(), 300);
        assert!(next(&mut &long[..100], "x").unwrap_err().0.contains("truncated"));
    }
}
