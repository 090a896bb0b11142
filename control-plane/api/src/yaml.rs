//! YAML parse errors that always say where: the YAML library's message for a
//! duplicate key at the top level of a document names no line (its location is the
//! document's start), so the line is found here.

/// `e` as text, with the line of a top-level duplicate key added when the message
/// has none.
pub fn describe(text: &str, e: &yaml_serde::Error) -> String {
    let message = e.to_string();
    if message.contains(" at line ") {
        return message;
    }
    let Some(key) = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
    else {
        return message;
    };
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .nth(1);
    match second {
        Some((i, _)) => format!("{message} at line {} column 1", i + 1),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: Option<u32>,
        b: Option<u32>,
    }

    fn error(text: &str) -> String {
        match yaml_serde::from_str::<Doc>(text) {
            Ok(doc) => panic!("{text:?} parsed: {doc:?}"),
            Err(e) => describe(text, &e),
        }
    }

    #[test]
    fn a_top_level_duplicate_key_names_its_line() {
        assert_eq!(
            error("a: 1\nb: 2\na: 3\n"),
            "duplicate field `a` at line 3 column 1"
        );
    }

    #[test]
    fn errors_with_a_location_are_left_alone() {
        let e = error("a: x\n");
        assert!(e.contains("line 1"), "{e}");
    }
}
