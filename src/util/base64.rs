//! Base64 (RFC 4648) as Kubernetes writes it: the standard alphabet with padding in
//! kubeconfigs and API objects, the URL-safe alphabet without padding in names derived from
//! digests.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard alphabet, padded (Go's `StdEncoding`).
pub fn encode(data: &[u8]) -> String {
    encode_with(data, STANDARD, true)
}

/// URL-safe alphabet, unpadded (Go's `RawURLEncoding`).
pub fn encode_url(data: &[u8]) -> String {
    encode_with(data, URL_SAFE, false)
}

fn encode_with(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard-alphabet base64 (RFC 4648 §4). Padding is optional; ASCII whitespace
/// (line breaks in YAML block scalars) is skipped. Anything else, or a `=` before the end, is
/// an error naming the offending byte's position.
pub fn decode(input: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0usize;
    let mut symbols = 0usize;
    for (pos, byte) in input.bytes().enumerate() {
        if byte.is_ascii_whitespace() {
            continue;
        }
        if byte == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(format!("data after padding at byte {pos}"));
        }
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "illegal character {:?} at byte {pos}",
                    char::from(byte)
                ))
            }
        };
        symbols += 1;
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    let tail = symbols % 4;
    if tail == 1 {
        return Err("truncated input: a lone final symbol".into());
    }
    if padding > 0 && (tail == 0 || tail + padding != 4) {
        return Err(format!(
            "wrong padding: {padding} '=' after {symbols} symbols"
        ));
    }
    // Leftover bits of the last symbol are ignored, as Go's `StdEncoding` does.
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_with_and_without_padding() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(encode_url(plain.as_bytes()), enc.trim_end_matches('='));
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYg", "foob"),
            ("Zm9v\nYmFy\n", "foobar"),
        ];
        for (enc, dec) in cases {
            assert_eq!(decode(enc).as_deref(), Ok(dec.as_bytes()), "{enc:?}");
        }
        assert_eq!(decode("+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn base64_rejects_bad_input() {
        for bad in [
            "Zm9v!",
            "Z",
            "Zm9vY",
            "Zg=a",
            "Zg=",
            "Zm9v=",
            "Zm9vYmFy====",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should fail");
        }
    }
}
