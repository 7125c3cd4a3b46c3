//! Test fixture: a component of world `test:other/other` (see `wit/other.wit`),
//! not of `portcullis:policy/policy`; the gateway must refuse to load it.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "other",
    });

    struct Other;

    impl Guest for Other {
        fn hello() -> String {
            "hello from the wrong world".to_string()
        }
    }

    export!(Other);
}
