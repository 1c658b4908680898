//! Zeek TSV logs: a header (`#separator \x09`, `#set_separator`, `#empty_field`,
//! `#unset_field`, `#path`, `#fields`, `#types`) then one record per line.
//!
//! - `#separator` is followed by a space and the separator, hex-escaped (`\x09`); the other
//!   directives are split on the current separator (`#fields<TAB>ts<TAB>uid...`). `#open`,
//!   `#close` and unknown `#` lines are comments. An empty line is ignored like a comment.
//! - A record is split on the separator and must have exactly as many values as `#fields`.
//!   The unset value (`-`) leaves the field out, the empty value (`(empty)`) gives `""`, and
//!   `\xHH` escapes in values are decoded (bytes that do not form UTF-8 are replaced). Set and
//!   vector values are returned as written, joined by the set separator (`a,b`).
//! - Errors (`zeek`): a record before `#fields`, a record with the wrong number of values, a
//!   bad `#separator`, more than [`MAX_FIELDS`] fields.
//!
//! Zeek JSON logs (`LogAscii::use_json=T`) are one JSON object per line: read them with
//! [`super::json::flatten`] (`id.orig_h` comes out as the same dotted key).

use super::{FormatError, Pairs};

/// Most fields in a `#fields` line.
pub const MAX_FIELDS: usize = 1024;

/// The header state of one Zeek log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZeekHeader {
    /// The log's `#path` (`conn`, `dns`, `http`, `ssh`, `notice`, ...).
    pub path: String,
    /// Field names from `#fields`.
    pub fields: Vec<String>,
    /// Field types from `#types`.
    pub types: Vec<String>,
    /// The separator (tab by default).
    pub separator: char,
    /// The text for an unset field (`-`).
    pub unset: String,
    /// The text for an empty field (`(empty)`).
    pub empty: String,
}

impl Default for ZeekHeader {
    /// Zeek's defaults: tab separator, `-` unset, `(empty)` empty, no fields yet.
    fn default() -> Self {
        ZeekHeader {
            path: String::new(),
            fields: Vec::new(),
            types: Vec::new(),
            separator: '\t',
            unset: "-".to_string(),
            empty: "(empty)".to_string(),
        }
    }
}

/// Reads a Zeek TSV stream line by line.
#[derive(Debug, Clone)]
pub struct ZeekReader {
    header: ZeekHeader,
    set_separator: String,
}

impl Default for ZeekReader {
    fn default() -> Self {
        ZeekReader {
            header: ZeekHeader::default(),
            set_separator: ",".to_string(),
        }
    }
}

/// What one line of a Zeek stream was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZeekLine {
    /// A header or comment line (the reader's state was updated).
    Header,
    /// A record: its fields by name; unset fields are left out, empty ones are `""`.
    Record(Pairs),
}

impl ZeekReader {
    /// A reader with Zeek's default header (tab separator, `-` unset, `(empty)` empty).
    pub fn new() -> Self {
        ZeekReader::default()
    }

    /// The current header.
    pub fn header(&self) -> &ZeekHeader {
        &self.header
    }

    /// The `#set_separator` (`,` by default).
    pub fn set_separator(&self) -> &str {
        &self.set_separator
    }

    /// Reads one line.
    pub fn line(&mut self, line: &str) -> Result<ZeekLine, FormatError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(ZeekLine::Header);
        }
        if let Some(directive) = line.strip_prefix('#') {
            self.directive(directive)?;
            return Ok(ZeekLine::Header);
        }
        let fields = &self.header.fields;
        if fields.is_empty() {
            return Err(FormatError::new("zeek", "record before #fields"));
        }
        let sep = self.header.separator;
        let count = line.split(sep).count();
        if count != fields.len() {
            return Err(FormatError::new(
                "zeek",
                format!("record has {count} values, #fields has {}", fields.len()),
            ));
        }
        let mut pairs = Vec::with_capacity(fields.len());
        for (name, value) in fields.iter().zip(line.split(sep)) {
            if value == self.header.unset {
                continue;
            }
            let value = if value == self.header.empty {
                String::new()
            } else {
                unescape(value)
            };
            pairs.push((name.clone(), value));
        }
        Ok(ZeekLine::Record(pairs))
    }

    /// Applies one header line (without its `#`).
    fn directive(&mut self, text: &str) -> Result<(), FormatError> {
        if let Some(value) = text.strip_prefix("separator") {
            let value = unescape(value.trim_start_matches([' ', '\t']));
            let mut chars = value.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    self.header.separator = c;
                    Ok(())
                }
                _ => Err(FormatError::new("zeek", "#separator is not one character")),
            };
        }
        let sep = self.header.separator;
        let (name, rest) = match text.split_once(sep) {
            Some(split) => split,
            None => text.split_once(' ').unwrap_or((text, "")),
        };
        let values = || rest.split(sep).map(unescape);
        match name {
            "set_separator" => self.set_separator = unescape(rest),
            "empty_field" => self.header.empty = unescape(rest),
            "unset_field" => self.header.unset = unescape(rest),
            "path" => self.header.path = unescape(rest),
            "fields" => {
                if rest.split(sep).count() > MAX_FIELDS {
                    return Err(FormatError::new(
                        "zeek",
                        format!("more than {MAX_FIELDS} fields"),
                    ));
                }
                self.header.fields = values().collect();
                self.header.types.clear();
            }
            "types" => self.header.types = values().take(MAX_FIELDS).collect(),
            _ => {}
        }
        Ok(())
    }
}

/// Decodes `\xHH` escapes.
fn unescape(value: &str) -> String {
    if !value.contains("\\x") {
        return value.to_string();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(i + 2), hex(i + 3)) {
                out.push((h * 16 + l) as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEADER: &[&str] = &[
        r"#separator \x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        "#unset_field\t-",
        "#path\tconn",
        "#open\t2024-03-10-08-15-30",
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tservice\ttunnel_parents\tnote",
        "#types\ttime\tstring\taddr\tport\taddr\tstring\tset[string]\tstring",
    ];

    fn reader() -> ZeekReader {
        let mut r = ZeekReader::new();
        for line in HEADER {
            assert_eq!(r.line(line).unwrap(), ZeekLine::Header);
        }
        r
    }

    #[test]
    fn header_is_read() {
        let r = reader();
        let h = r.header();
        assert_eq!(h.path, "conn");
        assert_eq!(h.separator, '\t');
        assert_eq!(h.fields.len(), 8);
        assert_eq!(h.fields[2], "id.orig_h");
        assert_eq!(h.types[6], "set[string]");
        assert_eq!(r.set_separator(), ",");
    }

    #[test]
    fn records_drop_unset_and_decode_escapes() {
        let mut r = reader();
        let line = "1710058530.123\tCx1\tfe80::1\t5353\t10.0.0.1\t-\t(empty)\ta\\x09b\\x5cc \\xe6\\x97\\xa5";
        let ZeekLine::Record(pairs) = r.line(line).unwrap() else {
            panic!("not a record");
        };
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ts", "1710058530.123"),
                ("uid", "Cx1"),
                ("id.orig_h", "fe80::1"),
                ("id.orig_p", "5353"),
                ("id.resp_h", "10.0.0.1"),
                ("tunnel_parents", ""),
                ("note", "a\tb\\c 日"),
            ]
        );
        assert_eq!(
            r.line("#close\t2024-03-10-09-00-00").unwrap(),
            ZeekLine::Header
        );
    }

    #[test]
    fn errors() {
        let mut fresh = ZeekReader::new();
        assert_eq!(fresh.line("1\t2").unwrap_err().kind, "zeek");
        let mut r = reader();
        assert_eq!(r.line("1\t2\t3").unwrap_err().kind, "zeek");
        assert_eq!(r.line("#separator ab").unwrap_err().kind, "zeek");
        assert_eq!(r.line("").unwrap(), ZeekLine::Header);
    }

    #[test]
    fn custom_separator_and_markers() {
        let mut r = ZeekReader::new();
        for line in [
            "#separator ,",
            "#unset_field,NA",
            "#empty_field,EMPTY",
            "#fields,a,b,c",
        ] {
            r.line(line).unwrap();
        }
        assert_eq!(
            r.line("1,NA,EMPTY\r\n").unwrap(),
            ZeekLine::Record(vec![("a".into(), "1".into()), ("c".into(), String::new())])
        );
    }

    #[test]
    fn too_many_fields() {
        let mut r = ZeekReader::new();
        let line = format!("#fields{}", "\tf".repeat(MAX_FIELDS + 1));
        assert_eq!(r.line(&line).unwrap_err().kind, "zeek");
    }
}
