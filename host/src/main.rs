//! The `portcullis` binary: everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    portcullis::cli::run()
}
