//! What the broker reads from a certificate: the serial number (logged when
//! a certificate is loaded) and the subject's common name (the MQTT user name
//! under `mqtt.use_identity_as_username`). A minimal DER walk over the
//! fields before the subject, instead of a full X.509 parser in the binary;
//! anything it does not understand is `None`, never a panic.

/// One DER element: its tag, its contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    if tag & 0x1F == 0x1F {
        return None; // multi-byte tags do not occur in the fields read here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n @ 0..=0x7F => (usize::from(n), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7F);
            if rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        }
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The fields of tbsCertificate up to the subject: (serial, subject).
fn serial_and_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (SEQUENCE, cert, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let (mut tag, mut value, mut rest) = element(tbs)?;
    if tag == VERSION {
        (tag, value, rest) = element(rest)?;
    }
    if tag != INTEGER {
        return None;
    }
    let serial = value;
    let (_signature, _, rest) = element(rest)?;
    let (_issuer, _, rest) = element(rest)?;
    let (_validity, _, rest) = element(rest)?;
    let (SEQUENCE, subject, _) = element(rest)? else {
        return None;
    };
    Some((serial, subject))
}

/// The certificate's serial number as hex (`0a1b…`), as `openssl x509 -serial` prints it.
pub fn serial_hex(cert: &[u8]) -> Option<String> {
    let (serial, _) = serial_and_subject(cert)?;
    let serial = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    Some(serial.iter().map(|b| format!("{b:02X}")).collect())
}

/// The subject's common name (the first one, if there are several), when
/// it is a UTF8String, PrintableString or IA5String.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, mut rdns) = serial_and_subject(cert)?;
    while !rdns.is_empty() {
        let (SET, mut attributes, rest) = element(rdns)? else {
            return None;
        };
        rdns = rest;
        while !attributes.is_empty() {
            let (SEQUENCE, attribute, rest) = element(attributes)? else {
                return None;
            };
            attributes = rest;
            let (0x06, oid, value) = element(attribute)? else {
                return None;
            };
            if oid != COMMON_NAME_OID {
                continue;
            }
            let (tag, text, _) = element(value)?;
            return match tag {
                0x0C | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SerialNumber};

    fn cert(cn: Option<&str>, serial: &[u8]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Broker tests");
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        dn.push(DnType::CountryName, "DE");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_common_name_and_serial() {
        let der = cert(Some("sensor-17"), &[0x01, 0x2C]);
        assert_eq!(common_name(&der).as_deref(), Some("sensor-17"));
        assert_eq!(serial_hex(&der).as_deref(), Some("012C"));
        let der = cert(Some("ünïcode"), &[0x80, 0x01]);
        assert_eq!(common_name(&der).as_deref(), Some("ünïcode"));
    }

    #[test]
    fn no_common_name_is_none() {
        let der = cert(None, &[7]);
        assert_eq!(common_name(&der), None);
        assert_eq!(serial_hex(&der).as_deref(), Some("07"));
    }

    #[test]
    fn malformed_input_is_none_not_a_panic() {
        let der = cert(Some("sensor-17"), &[1]);
        for cut in 0..der.len() {
            // A cut certificate either still holds the subject or says None.
            let cn = common_name(&der[..cut]);
            assert!(cn.is_none() || cn.as_deref() == Some("sensor-17"));
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(serial_hex(b"-----BEGIN CERTIFICATE-----"), None);
    }
}
