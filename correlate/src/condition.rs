//! Sigma detection conditions: `and`, `or`, `not`, parentheses, `1 of sel*`, `all of them`
//! (and `N of`), compiled to a tree over selection indices.

/// A compiled condition. Leaves are selection indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Sel(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// At least `n` of the children (`N of ...`).
    AtLeast(usize, Vec<Expr>),
}

impl Expr {
    /// Evaluates with `sel(i)` giving selection `i`'s result (short-circuiting).
    pub(crate) fn eval(&self, sel: &mut impl FnMut(usize) -> bool) -> bool {
        match self {
            Expr::Sel(i) => sel(*i),
            Expr::Not(e) => !e.eval(sel),
            Expr::And(es) => es.iter().all(|e| e.eval(sel)),
            Expr::Or(es) => es.iter().any(|e| e.eval(sel)),
            Expr::AtLeast(n, es) => {
                let mut hits = 0;
                for e in es {
                    if e.eval(sel) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Word(String),
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut out);
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    names: &'a [String],
    depth: usize,
}

fn is_kw(w: &str, kw: &str) -> bool {
    w.eq_ignore_ascii_case(kw)
}

fn name_matches(pattern: &str, name: &str) -> bool {
    // Only `*` is a wildcard in selection-name patterns.
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if is_kw(w, kw))
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("condition is nested too deeply".into());
        }
        let mut parts = vec![self.and()?];
        while self.peek_word("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.not()?];
        while self.peek_word("and") {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err("condition is nested too deeply".into());
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned();
        self.pos += 1;
        match tok {
            None => Err("condition ends where a selection was expected".into()),
            Some(Token::Close) => Err("unexpected `)` in condition".into()),
            Some(Token::Open) => {
                let e = self.or()?;
                match self.peek() {
                    Some(Token::Close) => {
                        self.pos += 1;
                        Ok(e)
                    }
                    _ => Err("missing `)` in condition".into()),
                }
            }
            Some(Token::Word(w)) => {
                if w == "|" || w.starts_with('|') {
                    return Err("aggregation expressions (`| count() ...`) are not supported; use a correlation rule".into());
                }
                if self.peek_word("of") {
                    self.pos += 1;
                    let quant = if is_kw(&w, "all") {
                        None
                    } else if is_kw(&w, "any") {
                        Some(1)
                    } else {
                        match w.parse::<usize>() {
                            Ok(n) if n >= 1 => Some(n),
                            _ => {
                                return Err(format!(
                                    "`{w} of` needs `1`, `all` or a positive count"
                                ))
                            }
                        }
                    };
                    let target = match self.peek() {
                        Some(Token::Word(t)) => t.clone(),
                        _ => return Err(format!("`{w} of` needs a selection pattern or `them`")),
                    };
                    self.pos += 1;
                    let sels: Vec<Expr> = if is_kw(&target, "them") {
                        self.names
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| !n.starts_with('_'))
                            .map(|(i, _)| Expr::Sel(i))
                            .collect()
                    } else {
                        self.names
                            .iter()
                            .enumerate()
                            .filter(|(_, n)| name_matches(&target, n))
                            .map(|(i, _)| Expr::Sel(i))
                            .collect()
                    };
                    if sels.is_empty() {
                        return Err(format!("`{target}` matches no selection"));
                    }
                    return Ok(match quant {
                        None => Expr::And(sels),
                        Some(1) => Expr::Or(sels),
                        Some(n) => Expr::AtLeast(n, sels),
                    });
                }
                for kw in ["and", "or", "not", "of", "them"] {
                    if is_kw(&w, kw) {
                        return Err(format!("unexpected `{w}` in condition"));
                    }
                }
                match self.names.iter().position(|n| *n == w) {
                    Some(i) => Ok(Expr::Sel(i)),
                    None if w.contains('*') => {
                        Err(format!("selection pattern `{w}` needs `1 of` or `all of`"))
                    }
                    None => Err(format!("condition names unknown selection `{w}`")),
                }
            }
        }
    }
}

/// Parses a condition over the selections `names` (in their index order).
pub(crate) fn parse_condition(text: &str, names: &[String]) -> Result<Expr, String> {
    let toks = tokenize(text);
    if toks.is_empty() {
        return Err("condition is empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        names,
        depth: 0,
    };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(Token::Close) => Err("unexpected `)` in condition".into()),
        Some(Token::Open) => Err("unexpected `(` in condition".into()),
        Some(Token::Word(w)) if w.starts_with('|') => Err(
            "aggregation expressions (`| count() ...`) are not supported; use a correlation rule"
                .into(),
        ),
        Some(Token::Word(w)) => Err(format!("unexpected `{w}` in condition")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["sel_a", "sel_b", "filter", "_hidden"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn eval(cond: &str, truth: [bool; 4]) -> bool {
        let e = parse_condition(cond, &names());
        assert!(e.is_ok(), "{cond}: {e:?}");
        e.map(|e| e.eval(&mut |i| truth[i])).unwrap_or(false)
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        assert!(eval(
            "sel_a or sel_b and filter",
            [true, false, false, false]
        ));
        assert!(!eval(
            "(sel_a or sel_b) and filter",
            [true, false, false, false]
        ));
        assert!(eval("not filter and sel_a", [true, false, false, false]));
        assert!(!eval("not (filter or sel_a)", [true, false, false, false]));
        assert!(eval("sel_a AND NOT filter", [true, false, false, false]));
        assert!(eval("((sel_a))", [true, false, false, false]));
    }

    #[test]
    fn quantifiers_cover_patterns_and_them() {
        assert!(eval("1 of sel_*", [false, true, false, false]));
        assert!(!eval("all of sel_*", [false, true, false, false]));
        assert!(eval(
            "all of sel_* and not filter",
            [true, true, false, false]
        ));
        assert!(eval("all of them", [true, true, true, false]));
        assert!(eval("1 of them", [false, false, true, false]));
        assert!(!eval("1 of them", [false, false, false, true]));
        assert!(eval("2 of them", [true, false, true, false]));
        assert!(eval("1 of *", [false, false, false, true]));
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for bad in [
            "",
            "sel_a and",
            "(sel_a",
            "sel_a)",
            "missing",
            "sel_*",
            "1 of nomatch*",
            "sel_a | count() > 5",
            "0 of them",
            "sel_a sel_b",
            "not",
        ] {
            assert!(
                parse_condition(bad, &names()).is_err(),
                "{bad:?} was accepted"
            );
        }
        let deep = format!("{}sel_a{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_condition(&deep, &names()).is_err());
        let nots = format!("{}sel_a", "not ".repeat(500));
        assert!(parse_condition(&nots, &names()).is_err());
    }
}
