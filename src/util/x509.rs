//! The few facts rkubelet reads from X.509 certificates, walked from DER by hand: the subject
//! (CN and O: the user and groups of a client certificate, as Kubernetes maps them), the
//! validity window (when a client or serving certificate must be renewed) and the DNS and IP
//! subject alternative names (whether a serving certificate still names the node). A certificate this
//! walker cannot read gives `None`, never a panic; callers treat that as unusable.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The subject of a certificate: its common name and organizations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// CN.
    pub common_name: String,
    /// O values, in order.
    pub organizations: Vec<String>,
}

/// When a certificate is valid: `notBefore` to `notAfter`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl Validity {
    /// Whether `now` lies in the window.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The window's length (zero if it is inverted).
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// The TBSCertificate's fields from `validity` on: validity, subject, ...
fn after_issuer(cert: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    // version [0] (optional), serial, signature, issuer
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        let (_, _, after) = der(rest)?;
        rest = after;
    }
    Some(rest)
}

/// Reads the subject of a DER certificate.
pub fn subject(cert: &[u8]) -> Option<Subject> {
    let (_, _, rest) = der(after_issuer(cert)?)?;
    let (tag, name, _) = der(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut out = Subject::default();
    let mut rdns = name;
    while !rdns.is_empty() {
        let (_, set, after) = der(rdns)?;
        rdns = after;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, after) = der(atvs)?;
            atvs = after;
            let (tag, oid, value) = der(atv)?;
            if tag != 0x06 {
                return None;
            }
            let (_, text, _) = der(value)?;
            let text = String::from_utf8_lossy(text).into_owned();
            match oid {
                [0x55, 0x04, 0x03] => out.common_name = text,
                [0x55, 0x04, 0x0a] => out.organizations.push(text),
                _ => {}
            }
        }
    }
    Some(out)
}

/// Reads the validity window of a DER certificate.
pub fn validity(cert: &[u8]) -> Option<Validity> {
    let (tag, window, _) = der(after_issuer(cert)?)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, not_before, rest) = der(window)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = der(rest)?;
    let not_after = time(tag, not_after)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// The DER SubjectPublicKeyInfo of a DER certificate, whole (tag and length included), to
/// compare with the key a certificate was asked for.
pub fn public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let (_, _, rest) = der(after_issuer(cert)?)?; // validity
    let (_, _, rest) = der(rest)?; // subject
    let (tag, _, after) = der(rest)?;
    (tag == 0x30).then(|| &rest[..rest.len() - after.len()])
}

/// The subject alternative names of a certificate that rkubelet asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AltNames {
    /// `dNSName` entries, in order.
    pub dns_names: Vec<String>,
    /// `iPAddress` entries, in order.
    pub ips: Vec<IpAddr>,
}

/// Reads the DNS and IP subject alternative names of a DER certificate (none when it has no
/// `subjectAltName` extension); other kinds of names are skipped.
pub fn alt_names(cert: &[u8]) -> Option<AltNames> {
    let (_, _, rest) = der(after_issuer(cert)?)?; // validity
    let (_, _, rest) = der(rest)?; // subject
    let (_, _, mut rest) = der(rest)?; // subjectPublicKeyInfo
    let mut out = AltNames::default();
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3]
    while !rest.is_empty() {
        let (tag, body, after) = der(rest)?;
        rest = after;
        if tag != 0xa3 {
            continue;
        }
        let (_, mut extensions, _) = der(body)?;
        while !extensions.is_empty() {
            let (_, extension, after) = der(extensions)?;
            extensions = after;
            let (tag, oid, mut fields) = der(extension)?;
            if tag != 0x06 || oid != [0x55, 0x1d, 0x11] {
                continue;
            }
            let (tag, _, after) = der(fields)?;
            if tag == 0x01 {
                fields = after; // critical
            }
            let (_, value, _) = der(fields)?;
            let (_, mut names, _) = der(value)?;
            while !names.is_empty() {
                let (tag, name, after) = der(names)?;
                names = after;
                match (tag, name.len()) {
                    (0x82, _) => out
                        .dns_names
                        .push(String::from_utf8_lossy(name).into_owned()),
                    (0x87, 4) => {
                        let octets: [u8; 4] = name.try_into().ok()?;
                        out.ips.push(IpAddr::from(octets));
                    }
                    (0x87, 16) => {
                        let octets: [u8; 16] = name.try_into().ok()?;
                        out.ips.push(IpAddr::from(octets));
                    }
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

/// An X.509 time: UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049 as RFC 5280 says) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`). Other forms are not allowed in certificates.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let digits = match (tag, text.split_last()) {
        (0x17 | 0x18, Some((b'Z', digits))) => digits,
        _ => return None,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(digits.get(range)?).ok()?;
        s.parse().ok()
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (0x18, 14) => (num(0..4)?, 4),
        _ => return None,
    };
    let month = num(rest..rest + 2)?;
    let day = num(rest + 2..rest + 4)?;
    let hour = num(rest + 4..rest + 6)?;
    let minute = num(rest + 6..rest + 8)?;
    let second = num(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let days = crate::clock::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
    }
}

/// One DER element: tag, contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(not_before: SystemTime, not_after: SystemTime) -> rcgen::Certificate {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.self_signed(&KeyPair::generate().unwrap()).unwrap()
    }

    #[test]
    fn client_subjects_give_user_and_groups() {
        let now = SystemTime::now();
        let c = cert(now, now + Duration::from_secs(60));
        let s = subject(c.der()).unwrap();
        assert_eq!(s.common_name, "kube-apiserver-kubelet-client");
        assert_eq!(s.organizations, vec!["system:masters"]);
        assert_eq!(subject(b"\x30\x82\xff"), None);
        assert_eq!(subject(&[]), None);
    }

    #[test]
    fn validity_is_read_to_the_second_in_both_time_forms() {
        let start = UNIX_EPOCH + Duration::from_secs(1_764_806_400); // 2025-12-04T00:00:00Z
                                                                     // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on.
        let end = UNIX_EPOCH + Duration::from_secs(2_556_143_999); // 2050-12-31T23:59:59Z
        let v = validity(cert(start, end).der()).unwrap();
        assert_eq!(v.not_before, start);
        assert_eq!(v.not_after, end);
        assert!(v.contains(start + Duration::from_secs(1)));
        assert!(!v.contains(end + Duration::from_secs(1)));
        assert_eq!(v.lifetime(), end.duration_since(start).unwrap());
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }

    #[test]
    fn the_public_key_is_the_one_signed() {
        use rcgen::PublicKeyData;
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let c = params.self_signed(&key).unwrap();
        assert_eq!(
            public_key_info(c.der()),
            Some(key.subject_public_key_info().as_slice())
        );
        assert_eq!(public_key_info(&c.der()[..40]), None);
    }

    #[test]
    fn dns_and_ip_alternative_names_are_read() {
        let mut params = CertificateParams::new(vec!["node-a".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.7".parse().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("fd00::7".parse().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://x/y".try_into().unwrap()));
        let c = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let names = alt_names(c.der()).unwrap();
        assert_eq!(names.dns_names, ["node-a"]);
        let want: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        assert_eq!(names.ips, want);
        // No extension at all: no names.
        let now = SystemTime::now();
        let plain = cert(now, now + Duration::from_secs(60));
        assert_eq!(alt_names(plain.der()), Some(AltNames::default()));
        assert_eq!(alt_names(&c.der()[..60]), None);
    }

    #[test]
    fn times_outside_the_allowed_forms_are_refused() {
        assert_eq!(
            time(0x17, b"491231235959Z"),
            Some(UNIX_EPOCH + Duration::from_secs(2_524_607_999))
        );
        assert_eq!(
            time(0x17, b"500101000000Z"),
            UNIX_EPOCH.checked_sub(Duration::from_secs(631_152_000))
        );
        assert_eq!(time(0x17, b"4912312359Z"), None, "no seconds");
        assert_eq!(time(0x17, b"491231235959+0100"), None, "offsets");
        assert_eq!(time(0x18, b"20251304000000Z"), None, "month 13");
        assert_eq!(time(0x04, b"20251204000000Z"), None, "not a time");
        assert_eq!(time(0x18, b"2025120400000-Z"), None);
    }
}
