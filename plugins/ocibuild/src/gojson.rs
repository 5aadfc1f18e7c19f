//! JSON written the way Go's `encoding/json` Encoder writes it (compact, `<` `>` `&` and
//! U+2028/U+2029 escaped as `\uXXXX`, trailing newline), which is what umoci, skopeo and
//! containers/image produce. Same input, same bytes, same digest.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc: Option<&[u8]> = match ch {
                '<' => Some(b"\\u003c"),
                '>' => Some(b"\\u003e"),
                '&' => Some(b"\\u0026"),
                '\u{2028}' => Some(b"\\u2028"),
                '\u{2029}' => Some(b"\\u2029"),
                _ => None,
            };
            if let Some(esc) = esc {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                writer.write_all(esc)?;
                start = i + ch.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialises `value` as Go would, with the trailing newline of `json.Encoder`.
pub fn to_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let v = serde_json::json!({"b": "x<y>&z\u{2028}", "a": [1, "\n"]});
        let out = to_vec(&v).expect("json");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"a\":[1,\"\\n\"],\"b\":\"x\\u003cy\\u003e\\u0026z\\u2028\"}\n"
        );
    }
}
