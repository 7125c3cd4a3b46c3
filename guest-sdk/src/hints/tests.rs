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
    // Read-only with destructive unannotated: a read-only tool is non-destructive.
    assert!(hints_pass(
        filter,
        &annotations(Some(true), None, None, None)
    ));
    // An explicit annotation is kept as written, even on a read-only tool.
    assert!(!hints_pass(
        filter,
        &annotations(Some(true), Some(true), None, None)
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

#[test]
fn a_read_only_tool_is_non_destructive_and_idempotent_unless_annotated_otherwise() {
    let read_only = annotations(Some(true), None, None, None);
    assert!(effective_read_only(&read_only));
    assert!(!effective_destructive(&read_only));
    assert!(effective_idempotent(&read_only));
    assert!(
        effective_open_world(&read_only),
        "openWorld keeps its MCP default"
    );
    let explicit = annotations(Some(true), Some(true), Some(false), None);
    assert!(effective_destructive(&explicit) && !effective_idempotent(&explicit));
    // Not read-only (annotated false or not at all): the plain MCP defaults.
    for a in [annotations(Some(false), None, None, None), unannotated()] {
        assert!(effective_destructive(&a) && !effective_idempotent(&a));
    }
    // The seed's "Read-only Slack monitor" declaration admits a tool annotated only
    // readOnlyHint: true.
    let monitor = HintFilter {
        read_only: Some(true),
        destructive: Some(false),
        idempotent: Some(true),
        open_world: None,
    };
    assert!(hints_pass(monitor, &read_only));
    let m = hint_mismatch(monitor, &unannotated()).unwrap();
    assert_eq!(m.hint, Hint::ReadOnly);
}
