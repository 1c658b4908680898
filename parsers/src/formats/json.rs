//! JSON objects flattened to dotted paths.
//!
//! The object is read in one streaming pass (serde_json with a visitor, no intermediate
//! `Value` tree), so pairs come in document order, duplicate keys included. Keys are joined
//! with `.` as written (a key that itself holds a dot is not escaped). Integers are written as
//! in the input; other numbers as serde_json prints the `f64` (`1.50` gives `1.5`). Empty
//! objects and arrays yield nothing. serde_json's own nesting limit (128) applies on top of
//! `max_depth`, so deeply nested input is an error, never a stack overflow.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{FormatError, Pairs};

/// Flattens a JSON object: nested objects become dotted paths (`request.method`), arrays
/// `path.0`, `path.1`; strings as they are, numbers and booleans as JSON text, `null` skipped.
/// Bounded: at most `max_pairs` pairs and `max_depth` levels (deeper values are skipped and
/// reported by the error only when the top level is not an object).
///
/// A member of the top-level object is at depth 1 (`a`), its children at depth 2 (`a.b`), and
/// so on: values deeper than `max_depth` are skipped. After `max_pairs` pairs the rest of the
/// document is still checked to be valid JSON but yields nothing.
pub fn flatten(text: &str, max_pairs: usize, max_depth: usize) -> Result<Pairs, FormatError> {
    let mut ctx = Ctx {
        out: Vec::new(),
        path: String::new(),
        max_pairs,
        max_depth,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(Top(&mut ctx))
        .and_then(|()| de.end())
        .map_err(|e| FormatError::new("json", e.to_string()))?;
    Ok(ctx.out)
}

/// Flattening state: the output, the current path, the limits.
struct Ctx {
    out: Pairs,
    path: String,
    max_pairs: usize,
    max_depth: usize,
}

impl Ctx {
    fn push(&mut self, value: String) {
        if self.out.len() < self.max_pairs {
            self.out.push((self.path.clone(), value));
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max_pairs
    }
}

/// The top level: only an object is accepted.
struct Top<'a>(&'a mut Ctx);

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        visit_members(self.0, map, 1)
    }
}

/// A value at `depth` (1 = member of the top object).
struct Node<'a> {
    ctx: &'a mut Ctx,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > self.ctx.max_depth || self.ctx.full() {
            d.deserialize_ignored_any(IgnoredAny).map(|_| ())
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.ctx.push(if v { "true" } else { "false" }.to_string());
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.ctx.push(v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.ctx.push(v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        let text = serde_json::Number::from_f64(v)
            .map(|n| n.to_string())
            .unwrap_or_else(|| v.to_string());
        self.ctx.push(text);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.ctx.push(v.to_string());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.ctx.push(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        visit_members(self.ctx, map, self.depth + 1)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let depth = self.depth + 1;
        let base = ctx.path.len();
        let mut index = 0usize;
        loop {
            push_segment(&mut ctx.path, base, &index.to_string());
            let more = seq.next_element_seed(Node {
                ctx: &mut *ctx,
                depth,
            })?;
            ctx.path.truncate(base);
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// Reads an object's members, each at `depth`.
fn visit_members<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx,
    mut map: A,
    depth: usize,
) -> Result<(), A::Error> {
    let base = ctx.path.len();
    while map
        .next_key_seed(Key {
            path: &mut ctx.path,
            base,
        })?
        .is_some()
    {
        map.next_value_seed(Node {
            ctx: &mut *ctx,
            depth,
        })?;
        ctx.path.truncate(base);
    }
    Ok(())
}

/// Appends `.segment` (or `segment` at the root) to the path cut back to `base`.
fn push_segment(path: &mut String, base: usize, segment: &str) {
    path.truncate(base);
    if base > 0 {
        path.push('.');
    }
    path.push_str(segment);
}

/// A member name, appended to the path directly.
struct Key<'a> {
    path: &'a mut String,
    base: usize,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        push_segment(self.path, self.base, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::formats::test_pairs as pairs;

    #[test]
    fn nested_objects_arrays_and_scalars_in_order() {
        let text = r#"{"z":1,"request":{"method":"GET","headers":{"ua":"curl/8"}},"tags":["a","b"],
            "ok":true,"ratio":1.5,"none":null,"big":18446744073709551615,"neg":-3,"e":{},"l":[],
            "ip":"2001:db8::1","u":"日本\n","eq":"a=b"}"#;
        assert_eq!(
            flatten(text, 100, 10).unwrap(),
            pairs(&[
                ("z", "1"),
                ("request.method", "GET"),
                ("request.headers.ua", "curl/8"),
                ("tags.0", "a"),
                ("tags.1", "b"),
                ("ok", "true"),
                ("ratio", "1.5"),
                ("big", "18446744073709551615"),
                ("neg", "-3"),
                ("ip", "2001:db8::1"),
                ("u", "日本\n"),
                ("eq", "a=b"),
            ])
        );
    }

    #[test]
    fn duplicate_keys_and_arrays_of_objects() {
        assert_eq!(
            flatten(r#"{"a":1,"a":2,"r":[{"x":1},[true,null,3]]}"#, 100, 10).unwrap(),
            pairs(&[
                ("a", "1"),
                ("a", "2"),
                ("r.0.x", "1"),
                ("r.1.0", "true"),
                ("r.1.2", "3")
            ])
        );
    }

    #[test]
    fn limits_on_pairs_and_depth() {
        let text = r#"{"a":{"b":{"c":1}},"d":2,"e":3,"f":4}"#;
        assert_eq!(
            flatten(text, 100, 2).unwrap(),
            pairs(&[("d", "2"), ("e", "3"), ("f", "4")])
        );
        assert_eq!(
            flatten(text, 2, 10).unwrap(),
            pairs(&[("a.b.c", "1"), ("d", "2")])
        );
        assert!(flatten(text, 0, 10).unwrap().is_empty());
        // Still validated after the limit.
        assert_eq!(flatten(r#"{"a":1,"b":}"#, 1, 10).unwrap_err().kind, "json");
    }

    #[test]
    fn non_objects_and_bad_json_are_errors() {
        for text in [
            "[1,2]",
            "1",
            "\"x\"",
            "null",
            "",
            "{",
            "{\"a\":1} x",
            "{'a':1}",
        ] {
            assert_eq!(flatten(text, 100, 10).unwrap_err().kind, "json", "{text}");
        }
        assert!(flatten(" {} ", 100, 10).unwrap().is_empty());
    }

    #[test]
    fn very_deep_input_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(flatten(&deep, 100, 10).unwrap_err().kind, "json");
    }
}
