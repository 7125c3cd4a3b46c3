//! The seed document's hint table and the MCP defaults, against [`super::hints_pass`].

use super::*;
use crate::testing::{HINT_TABLE, ToolHint, annotations, unannotated};

#[test]
fn mcp_defaults_for_unannotated_tools() {
    let a = unannotated();
    assert!(!effective_read_only(&a));
    assert!(effective_destructive(&a));
    assert!(!effective_idempotent(&a));
    assert!(effective_open_world(&a));
}

#[test]
fn annotations_override_defaults() {
    let a = annotations(Some(true), Some(false), Some(true), Some(false));
    assert!(effective_read_only(&a));
    assert!(!effective_destructive(&a));
    assert!(effective_idempotent(&a));
    assert!(!effective_open_world(&a));
}

#[test]
fn hint_table_has_every_combination_once() {
    for hint in Hint::ALL {
        for required in [None, Some(true), Some(false)] {
            for tool in [
                ToolHint::AnnotatedTrue,
                ToolHint::AnnotatedFalse,
                ToolHint::Unannotated,
            ] {
                let n = HINT_TABLE
                    .iter()
                    .filter(|c| c.hint == hint && c.required == required && c.tool == tool)
                    .count();
                assert_eq!(n, 1, "{hint:?} {required:?} {tool:?}");
            }
        }
    }
}

#[test]
fn hint_table() {
    for case in HINT_TABLE {
        assert_eq!(
            hints_pass(case.filter(), &case.annotations()),
            case.passes,
            "{case:?}"
        );
        assert_eq!(
            hint_mismatch(case.filter(), &case.annotations()).is_none(),
            case.passes
        );
    }
}

#[test]
fn every_set_hint_must_pass() {
    let filter = HintFilter {
        read_only: Some(true),
        destructive: Some(false),
        ..HintFilter::default()
    };
    assert!(hints_pass(
        filter,
        &annotations(Some(true), Some(false), None, None)
    ));
    // read-only but unannotated destructive (default true) fails.
    assert!(!hints_pass(
        filter,
        &annotations(Some(true), None, None, None)
    ));
    assert!(!hints_pass(
        filter,
        &annotations(None, Some(false), None, None)
    ));
}

#[test]
fn unrestricted_filter_passes_everything() {
    assert!(HintFilter::default().is_unrestricted());
    assert!(hints_pass(HintFilter::default(), &unannotated()));
    assert!(hints_pass(
        HintFilter::default(),
        &annotations(Some(true), Some(true), Some(true), Some(true))
    ));
}

#[test]
fn mismatch_names_the_first_failing_hint() {
    let filter = HintFilter {
        read_only: Some(true),
        open_world: Some(false),
        ..HintFilter::default()
    };
    let m = hint_mismatch(filter, &unannotated()).unwrap();
    assert_eq!(m.hint, Hint::ReadOnly);
    assert!(m.required && !m.effective && !m.annotated);
    assert_eq!(
        m.to_string(),
        "readOnly is false (not annotated, MCP default) but true is required"
    );
    let m = hint_mismatch(filter, &annotations(Some(true), None, None, Some(true))).unwrap();
    assert_eq!(m.hint, Hint::OpenWorld);
    assert_eq!(
        m.to_string(),
        "openWorld is true (annotated) but false is required"
    );
}

#[test]
fn tool_constraints_convert() {
    let c = crate::ToolConstraints {
        required: None,
        read_only: Some(true),
        destructive: None,
        idempotent: Some(false),
        open_world: None,
    };
    let f = HintFilter::from(&c);
    assert_eq!(f.read_only, Some(true));
    assert_eq!(f.idempotent, Some(false));
    assert!(hints_pass(
        &c,
        &annotations(Some(true), None, Some(false), None)
    ));
    assert!(!hints_pass(
        &c,
        &annotations(Some(true), None, Some(true), None)
    ));
}
