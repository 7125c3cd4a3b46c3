//! Bindings generated from `wit/policy.wit` (package `portcullis:policy@0.2.0`,
//! world `policy`).
//!
//! Policy authors rarely need this module directly: the crate root re-exports the
//! WIT types, [`crate::log`] wraps the host import and [`crate::export_policy!`]
//! wraps the generated export macro. It is public because the export macro
//! expands in the policy's crate and must name the generated `Guest` trait.
//!
//! Every generated type derives `PartialEq` (handy in tests) but not `Eq`:
//! `resource-annotations.priority` is an `option<f64>`.

wit_bindgen::generate!({
    path: "../wit",
    world: "policy",
    pub_export_macro: true,
    default_bindings_module: "portcullis_policy_sdk::bindings",
    additional_derives: [PartialEq],
});
