//! One delimited line split into columns (Palo Alto, many exports).
//!
//! RFC 4180 quoting on one line: a field that starts with `"` is quoted, `""` inside it is a
//! quote and the delimiter is literal. Text after a closing quote up to the next delimiter is
//! appended as written (`"ab"c` gives `abc`); a quote inside an unquoted field is literal. A
//! trailing `\r\n` or `\n` is removed. An empty line is one empty column. At most
//! [`MAX_COLUMNS`] columns: more is an error, so a runaway line cannot allocate without bound.

use super::FormatError;

/// Most columns in one line.
pub const MAX_COLUMNS: usize = 1024;

/// Splits one line on `delimiter`; a field may be double-quoted (`""` inside is a quote, the
/// delimiter inside is literal). An unterminated quote is an error.
///
/// Errors (`csv`): an unterminated quote, more than [`MAX_COLUMNS`] columns.
pub fn split(line: &str, delimiter: char) -> Result<Vec<String>, FormatError> {
    let line = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(line);
    let mut columns = Vec::new();
    let mut rest = line;
    loop {
        if columns.len() >= MAX_COLUMNS {
            return Err(FormatError::new(
                "csv",
                format!("more than {MAX_COLUMNS} columns"),
            ));
        }
        let (field, next) = if delimiter != '"' && rest.starts_with('"') {
            quoted(&rest[1..], delimiter)?
        } else {
            match rest.find(delimiter) {
                Some(i) => (
                    rest[..i].to_string(),
                    Some(&rest[i + delimiter.len_utf8()..]),
                ),
                None => (rest.to_string(), None),
            }
        };
        columns.push(field);
        match next {
            Some(n) => rest = n,
            None => return Ok(columns),
        }
    }
}

/// Reads a quoted field (after its opening quote): the field and the text after the
/// delimiter that ends it (`None` at the end of the line).
fn quoted(text: &str, delimiter: char) -> Result<(String, Option<&str>), FormatError> {
    let mut field = String::new();
    let mut rest = text;
    loop {
        let Some(q) = rest.find('"') else {
            return Err(FormatError::new("csv", "unterminated quote"));
        };
        field.push_str(&rest[..q]);
        rest = &rest[q + 1..];
        if let Some(after) = rest.strip_prefix('"') {
            field.push('"');
            rest = after;
            continue;
        }
        // Closed: anything up to the delimiter is kept as written.
        return Ok(match rest.find(delimiter) {
            Some(i) => {
                field.push_str(&rest[..i]);
                (field, Some(&rest[i + delimiter.len_utf8()..]))
            }
            None => {
                field.push_str(rest);
                (field, None)
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cols(line: &str) -> Vec<String> {
        split(line, ',').unwrap()
    }

    #[test]
    fn plain_quoted_and_escaped_fields() {
        assert_eq!(
            cols(r#"a,"b,c","say ""hi""",,2001:db8::1,"",日本,x"y"#),
            [
                "a",
                "b,c",
                r#"say "hi""#,
                "",
                "2001:db8::1",
                "",
                "日本",
                r#"x"y"#
            ]
        );
        assert_eq!(cols(""), [""]);
        assert_eq!(cols("a,\r\n"), ["a", ""]);
        assert_eq!(cols(r#""ab"c,d"#), ["abc", "d"]);
        assert_eq!(split("a\tb\t\"c\td\"", '\t').unwrap(), ["a", "b", "c\td"]);
        assert_eq!(split("a|b", '|').unwrap(), ["a", "b"]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        for line in [r#""abc"#, r#"a,"b"""#, "\"", "a,\"x,y"] {
            assert_eq!(split(line, ',').unwrap_err().kind, "csv", "{line}");
        }
    }

    #[test]
    fn column_limit() {
        assert_eq!(
            split(&",".repeat(MAX_COLUMNS - 1), ',').unwrap().len(),
            MAX_COLUMNS
        );
        assert_eq!(
            split(&",".repeat(MAX_COLUMNS), ',').unwrap_err().kind,
            "csv"
        );
        let long = "x".repeat(1_000_000);
        assert_eq!(split(&long, ',').unwrap(), [long]);
    }
}
