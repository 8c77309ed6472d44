//! Just enough DER to read back a CA certificate given to us as a file.
//!
//! rcgen can only re-read a certificate with its `x509-parser` feature, which
//! would pull a whole parser stack in for the five fields the node CA needs:
//! subject (leaves name it as their issuer, byte for byte), public key (does
//! the key file belong to it?), validity, subject key identifier (leaves'
//! authority key identifier must match it, or OpenSSL clients reject the
//! chain) and basicConstraints (is it a CA at all?).
//!
//! Every function takes untrusted bytes and returns an error, never panics.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{DistinguishedName, DnType, DnValue};

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;

/// id-ce-subjectKeyIdentifier (2.5.29.14), encoded.
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
/// id-ce-basicConstraints (2.5.29.19), encoded.
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// The fields of a CA certificate the node CA needs.
#[derive(Debug)]
pub(super) struct CaCertFields<'a> {
    /// Contents of the subject `Name` SEQUENCE.
    pub subject: &'a [u8],
    /// The subjectPublicKey BIT STRING without its unused-bits octet.
    pub public_key: &'a [u8],
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub subject_key_id: Option<&'a [u8]>,
    /// basicConstraints present with cA TRUE.
    pub is_ca: bool,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// One TLV of any tag: (tag, contents).
    fn read_any(&mut self, what: &str) -> Result<(u8, &'a [u8]), String> {
        let truncated = || format!("{what}: truncated DER");
        let (&tag, rest) = self.0.split_first().ok_or_else(truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(format!("{what}: multi-byte DER tags are not supported"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(format!("{what}: invalid DER length"));
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(truncated());
        }
        let (value, after) = rest.split_at(len);
        self.0 = after;
        Ok((tag, value))
    }

    /// One TLV that must carry `tag`: its contents.
    fn read(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.read_any(what)? {
            (t, value) if t == tag => Ok(value),
            (t, _) => Err(format!(
                "{what}: expected DER tag {tag:#04x}, found {t:#04x}"
            )),
        }
    }
}

/// Reads the fields the node CA needs from a certificate's DER.
pub(super) fn parse_ca_cert(der: &[u8]) -> Result<CaCertFields<'_>, String> {
    let mut outer = Reader(der);
    let mut cert = Reader(outer.read(SEQUENCE, "certificate")?);
    let mut tbs = Reader(cert.read(SEQUENCE, "tbsCertificate")?);
    if tbs.peek_tag() == Some(VERSION) {
        tbs.read_any("version")?;
    }
    tbs.read(INTEGER, "serialNumber")?;
    tbs.read(SEQUENCE, "signature algorithm")?;
    tbs.read(SEQUENCE, "issuer")?;
    let mut validity = Reader(tbs.read(SEQUENCE, "validity")?);
    let not_before = read_time(&mut validity, "notBefore")?;
    let not_after = read_time(&mut validity, "notAfter")?;
    let subject = tbs.read(SEQUENCE, "subject")?;
    let mut spki = Reader(tbs.read(SEQUENCE, "subjectPublicKeyInfo")?);
    spki.read(SEQUENCE, "public key algorithm")?;
    let public_key = match spki.read(BIT_STRING, "subjectPublicKey")? {
        [0, key @ ..] => key,
        _ => return Err("subjectPublicKey: not a whole number of octets".to_string()),
    };

    let mut subject_key_id = None;
    let mut is_ca = false;
    while !tbs.is_empty() {
        let (tag, value) = tbs.read_any("tbsCertificate field")?;
        if tag != EXTENSIONS {
            continue;
        }
        let mut extensions = Reader(Reader(value).read(SEQUENCE, "extensions")?);
        while !extensions.is_empty() {
            let mut ext = Reader(extensions.read(SEQUENCE, "extension")?);
            let oid = ext.read(OID, "extension id")?;
            if ext.peek_tag() == Some(BOOLEAN) {
                ext.read(BOOLEAN, "extension criticality")?;
            }
            let value = ext.read(OCTET_STRING, "extension value")?;
            if oid == OID_SUBJECT_KEY_ID {
                subject_key_id = Some(Reader(value).read(OCTET_STRING, "subjectKeyIdentifier")?);
            } else if oid == OID_BASIC_CONSTRAINTS {
                let mut bc = Reader(Reader(value).read(SEQUENCE, "basicConstraints")?);
                if bc.peek_tag() == Some(BOOLEAN) {
                    is_ca = bc.read(BOOLEAN, "basicConstraints cA")? != [0];
                }
            }
        }
    }

    Ok(CaCertFields {
        subject,
        public_key,
        not_before,
        not_after,
        subject_key_id,
        is_ca,
    })
}

/// Rebuilds a `Name` (the contents of its SEQUENCE) as an rcgen
/// `DistinguishedName` that rcgen encodes back to the same bytes: same
/// attribute order, same string types. Names rcgen cannot reproduce
/// (multi-valued RDNs, a repeated attribute type, exotic string types) are
/// refused here rather than producing leaves whose issuer does not match.
pub(super) fn distinguished_name(subject: &[u8]) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    let mut rdns = Reader(subject);
    while !rdns.is_empty() {
        let mut rdn = Reader(rdns.read(SET, "subject RDN")?);
        let mut attr = Reader(rdn.read(SEQUENCE, "subject attribute")?);
        if !rdn.is_empty() {
            return Err("subject has a multi-valued RDN, which cannot be reproduced".to_string());
        }
        let ty = DnType::from_oid(&decode_oid(attr.read(OID, "attribute type")?)?);
        let (tag, raw) = attr.read_any("attribute value")?;
        let value = dn_value(tag, raw)?;
        if dn.get(&ty).is_some() {
            return Err(format!(
                "subject repeats attribute {ty:?}, which cannot be reproduced"
            ));
        }
        dn.push(ty, value);
    }
    Ok(dn)
}

fn dn_value(tag: u8, raw: &[u8]) -> Result<DnValue, String> {
    let text = || std::str::from_utf8(raw).map_err(|_| "subject attribute is not valid text");
    let bad = |e: rcgen::Error| format!("subject attribute: {e}");
    Ok(match tag {
        UTF8_STRING => DnValue::Utf8String(text()?.to_string()),
        PRINTABLE_STRING => {
            DnValue::PrintableString(PrintableString::try_from(text()?).map_err(bad)?)
        }
        TELETEX_STRING => DnValue::TeletexString(TeletexString::try_from(text()?).map_err(bad)?),
        IA5_STRING => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(bad)?),
        BMP_STRING => DnValue::BmpString(BmpString::from_utf16be(raw.to_vec()).map_err(bad)?),
        UNIVERSAL_STRING => {
            DnValue::UniversalString(UniversalString::from_utf32be(raw.to_vec()).map_err(bad)?)
        }
        other => {
            return Err(format!(
                "subject attribute has unsupported string type {other:#04x}"
            ))
        }
    })
}

/// OID contents → arcs.
fn decode_oid(bytes: &[u8]) -> Result<Vec<u64>, String> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in bytes {
        digits += 1;
        if digits > 9 {
            return Err("object identifier arc too large".to_string());
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
            digits = 0;
        }
    }
    if digits != 0 || arcs.is_empty() {
        return Err("truncated object identifier".to_string());
    }
    Ok(arcs)
}

fn read_time(reader: &mut Reader<'_>, what: &str) -> Result<SystemTime, String> {
    let (tag, raw) = reader.read_any(what)?;
    let invalid = || format!("{what}: invalid time {:?}", String::from_utf8_lossy(raw));
    let (year, rest) = match (tag, raw) {
        (UTC_TIME, [y @ .., b'Z']) if y.len() == 12 => {
            let yy = digits(&y[..2]).ok_or_else(invalid)?;
            // RFC 5280 4.1.2.5.1: YY < 50 is 20YY.
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &y[2..])
        }
        (GENERALIZED_TIME, [y @ .., b'Z']) if y.len() == 14 => {
            (digits(&y[..4]).ok_or_else(invalid)?, &y[4..])
        }
        _ => return Err(invalid()),
    };
    let field = |i: usize| digits(&rest[i..i + 2]).ok_or_else(invalid);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(invalid());
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    // Times before 1970 only occur as notBefore of old CAs: "long ago" is
    // all that matters, so clamp instead of failing.
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn times() {
        let t = |tag: u8, s: &str| {
            let mut der = vec![tag, s.len() as u8];
            der.extend_from_slice(s.as_bytes());
            read_time(&mut Reader(&der), "t")
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(t(UTC_TIME, "700101000001Z").unwrap()), 1);
        assert_eq!(
            secs(t(UTC_TIME, "240229120000Z").unwrap()),
            19_782 * 86_400 + 43_200
        );
        assert_eq!(
            secs(t(GENERALIZED_TIME, "20240229120000Z").unwrap()),
            19_782 * 86_400 + 43_200
        );
        assert_eq!(
            secs(t(UTC_TIME, "500101000000Z").unwrap()),
            0,
            "1950 clamps to the epoch"
        );
        assert!(t(UTC_TIME, "241301000000Z").is_err());
        assert!(t(UTC_TIME, "2402291200Z").is_err());
        assert!(t(UTC_TIME, "24022912000xZ").is_err());
        assert!(t(OCTET_STRING, "240229120000Z").is_err());
    }

    #[test]
    fn oids() {
        assert_eq!(decode_oid(&[0x55, 0x04, 0x03]).unwrap(), vec![2, 5, 4, 3]);
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]).unwrap(),
            vec![1, 2, 840, 113_549, 1, 1, 11]
        );
        assert!(decode_oid(&[0x55, 0x86]).is_err());
        assert!(decode_oid(&[]).is_err());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for der in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x01],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
        ] {
            assert!(parse_ca_cert(der).is_err(), "{der:?}");
        }
        assert!(distinguished_name(&[0x31, 0x03, 0x30, 0x01]).is_err());
    }

    #[test]
    fn long_form_lengths() {
        let mut der = vec![0x04, 0x81, 200];
        der.extend(std::iter::repeat_n(7u8, 200));
        let mut r = Reader(&der);
        assert_eq!(r.read(OCTET_STRING, "x").unwrap().len(), 200);
        assert!(r.is_empty());
    }
}
