//! NATS subjects as the schema and the planners accept them: dot-separated tokens,
//! none empty, no whitespace; `*` stands for one whole token and `>` for the rest,
//! as the last token only. The CRD patterns and [`is_subject`] say the same, which a
//! test checks over every short string of the characters that matter.

/// A subject, wildcards allowed.
pub const SUBJECT: &str = r"^(([^.*>\s]+|\*)\.)*([^.*>\s]+|\*|>)$";
/// A subject without wildcards: a deliver or dead-letter subject.
pub const LITERAL_SUBJECT: &str = r"^[^.*>\s]+(\.[^.*>\s]+)*$";
/// A stream or consumer name: one token, which JetStream's API subjects embed.
pub const NAME: &str = r"^[^.*>\s]+$";

/// Whether `text` is a subject; with `wildcards` false, a literal one.
pub fn is_subject(text: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = text.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, token)| match *token {
        "*" => wildcards,
        ">" => wildcards && i == last,
        _ => !token.is_empty() && !token.contains(|c: char| c == '*' || c == '>' || c.is_whitespace()),
    })
}

/// Whether some subject matches both `a` and `b` (each may have wildcards).
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_overlap_where_one_subject_could_match_both() {
        for (a, b) in [("a.b", "a.b"), ("a.*", "a.b"), ("a.>", "a.b.c"), ("*.b", "a.*"), (">", "x")] {
            assert!(overlap(a, b) && overlap(b, a), "{a} {b}");
        }
        for (a, b) in [("a.b", "a.c"), ("a.*", "a.b.c"), ("a.>", "a"), ("b.>", "a.b")] {
            assert!(!overlap(a, b) && !overlap(b, a), "{a} {b}");
        }
    }

    #[test]
    fn subjects_are_tokens_with_whole_token_wildcards() {
        for ok in ["orders", "orders.*", "orders.>", "*.x.>", "a-b.c_d", "$JS.API.>"] {
            assert!(is_subject(ok, true), "{ok}");
        }
        for bad in ["", "shop..x", "shop.>.x", ".a", "a.", "a b", "a.b*", ">x", "\t"] {
            assert!(!is_subject(bad, true), "{bad:?}");
        }
        assert!(!is_subject("orders.*", false) && is_subject("orders.new", false));
    }

    #[test]
    fn the_patterns_accept_exactly_what_the_planners_accept() {
        let (subject, literal) = (regex::Regex::new(SUBJECT).unwrap(), regex::Regex::new(LITERAL_SUBJECT).unwrap());
        // Every string of up to five of the characters that decide.
        let alphabet = ['a', '.', '*', '>', ' ', 'b'];
        let mut texts = vec![String::new()];
        let mut longest = vec![String::new()];
        for _ in 0..5 {
            longest = longest.iter().flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}"))).collect();
            texts.extend(longest.iter().cloned());
        }
        for text in &texts {
            assert_eq!(subject.is_match(text), is_subject(text, true), "{text:?}");
            assert_eq!(literal.is_match(text), is_subject(text, false), "{text:?}");
        }
    }
}
