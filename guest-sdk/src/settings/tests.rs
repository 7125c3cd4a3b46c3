//! Settings parsing: empty settings, strict keys, type errors naming the key.

use super::*;

#[test]
fn empty_text_and_null_are_an_empty_object() {
    for s in ["", "  \n", "null", "{}", " { } "] {
        assert_eq!(expect_empty_settings(s), Ok(()), "{s:?}");
    }
}

#[test]
fn any_key_refused_by_expect_empty() {
    let err = expect_empty_settings(r#"{"mode": "strict"}"#).unwrap_err();
    assert_eq!(err, "unknown settings key `mode`");
    let err = expect_empty_settings(r#"{"a": 1, "b": 2}"#).unwrap_err();
    assert_eq!(err, "unknown settings keys `a`, `b`");
}

#[test]
fn non_object_and_bad_json_refused() {
    assert!(
        expect_empty_settings("[]")
            .unwrap_err()
            .contains("JSON object")
    );
    assert!(
        expect_empty_settings("true")
            .unwrap_err()
            .contains("JSON object")
    );
    assert!(
        expect_empty_settings("{")
            .unwrap_err()
            .contains("not valid JSON")
    );
}

#[test]
fn getters_take_keys_and_name_wrong_types() {
    let mut o = SettingsObject::parse(r#"{"b": true, "s": "x", "l": ["p", "q"]}"#).unwrap();
    assert_eq!(o.bool("b"), Ok(Some(true)));
    assert_eq!(o.bool("missing"), Ok(None));
    assert_eq!(o.string("s"), Ok(Some("x".to_string())));
    assert_eq!(o.string_list("l"), Ok(Some(vec!["p".into(), "q".into()])));
    assert_eq!(o.finish(), Ok(()));

    let mut o = SettingsObject::parse(r#"{"b": "yes"}"#).unwrap();
    assert_eq!(
        o.bool("b").unwrap_err(),
        "settings key `b` must be a boolean, got a string"
    );
    let mut o = SettingsObject::parse(r#"{"l": "p"}"#).unwrap();
    assert_eq!(
        o.string_list("l").unwrap_err(),
        "settings key `l` must be an array of strings, got a string"
    );
    let mut o = SettingsObject::parse(r#"{"l": ["p", 3]}"#).unwrap();
    assert_eq!(
        o.string_list("l").unwrap_err(),
        "settings key `l[1]` must be a string, got a number"
    );
    let mut o = SettingsObject::parse(r#"{"b": null}"#).unwrap();
    assert!(o.bool("b").unwrap_err().contains("got null"));
}

#[test]
fn serde_parsing() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(default)]
        limit: u32,
    }
    assert_eq!(parse_settings::<S>(""), Ok(S { limit: 0 }));
    assert_eq!(parse_settings::<S>(r#"{"limit": 3}"#), Ok(S { limit: 3 }));
    assert!(
        parse_settings::<S>(r#"{"other": 3}"#)
            .unwrap_err()
            .contains("other")
    );
}
